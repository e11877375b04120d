"""Secrets and denylist screen: regexes and phrase lists, ``block`` or ``redact``, prompts and answers.

Cheap (regexes only), so it runs first. In streams only text that could still be the start of a secret
is held back (partial matching, guard/screens/stream_partial.py): ordinary prose goes out at once, a
started token (``sk-...``) waits until it either completes (and is redacted) or can no longer match. A
single-line secret still open after ``hold_chars`` characters is screened as it stands and the rest of
its run (up to white space) is dropped; a started multi-line block (a PEM private key) is held until it
ends, up to ``max_hold_chars``; past that the rest of the block is suppressed until its end marker.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from guard import heavy
from guard.screens import budget, edits, json_text, linear_re
from guard.screens.base import Segment, Verdict
from guard.screens.denylist.compiled import Compiled, Scan, compile_rule, edits_of, hit_opens, inside, partial_source
from guard.screens.denylist.json_stream import JsonTextDenylist, scan_json
from guard.screens.denylist.settings import DenylistProfile, DenylistSettings
from guard.screens.denylist.stream import DenylistStream
from guard.screens.edits import Edit
from guard.screens.pii.source import Source
from guard.screens.stream_partial import PartialSet

# Large scans in a screening process: (settings file, direction, segments) -> per text (text, None when
# unchanged; hits by rule, blocking rule names, redacted, redactions as edits), or None when no process is
# ready (a thread scans).
Offload = Callable[
    [Source, str, Sequence[Segment]],
    Awaitable[list[tuple[str | None, dict[str, int], list[str], bool, list[Edit]] | None] | None],
]


class DenylistScreen:
    """PromptScreen and ResponseScreen for one denylist profile."""

    name = "denylist"

    def __init__(
        self, profile: DenylistProfile, source: Source | None = None, in_process: Offload | None = None
    ) -> None:
        self.profile = profile
        self.source = source  # the settings file, for the screening processes (large scans)
        self.in_process = in_process  # guard.screens.denylist.worker.in_process in a serving process
        self.rules = [compile_rule(r) for r in profile.rules]
        self.partials = PartialSet(partial_source(c.rule) for c in self.active("response"))
        self.replacements = tuple(sorted({c.replacement for c in self.active("response")}))
        # every rule's reported part starts where its match starts (a replacement begins with the match)
        self.hits_open_matches = all(hit_opens(c.rule) for c in self.active("response"))

    @classmethod
    def from_settings(
        cls,
        settings: DenylistSettings,
        profile: str | None = None,
        source: Source | None = None,
        in_process: Offload | None = None,
    ) -> DenylistScreen:
        return cls(settings.profile(profile), source, in_process)

    def active(self, direction: str) -> list[Compiled]:
        return [c for c in self.rules if getattr(c.rule, direction) != "off"]

    def scan(self, text: str, direction: str, final: bool = True) -> Scan:
        """Find every match; collect block rules, redact the rest. ``final``: an unclosed block (BEGIN
        without END) counts as a match to the end of the text."""
        return self.apply(text, self.matches(text, direction, final), direction)

    def scan_segment(self, text: str, kind: str, direction: str) -> Scan:
        """``scan``; text of a JSON kind (tool-call arguments, tool results) is read as written and in its
        decoded view (guard.screens.denylist.json_stream.scan_json), so a secret spelt with escapes
        (``\\u0067hp_...``) is found too; its edits are in offsets of the text as written. A JSON schema's
        text with a redaction is redacted the same way, value by value, so it stays JSON."""
        if kind in json_text.JSON_KINDS:
            return scan_json(self, text, direction)
        found = self.scan(text, direction)
        if found.edits and not found.block and kind in json_text.SCHEMA_KINDS and text[:1] in "{[":
            return scan_json(self, text, direction, found)  # a schema's JSON text, redacted value by value
        return found

    def matches(self, text: str, direction: str, final: bool = True) -> list[tuple[int, int, Compiled]]:
        spans: list[tuple[int, int, Compiled]] = []
        lowered = text.lower()
        for c in self.active(direction):
            budget.check()
            if not c.may_match(lowered):
                continue
            # Not final (a stream): a match touching the end may still grow, so it waits for more text.
            found = [(a, b) for a, b in linear_re.spans(c.rx, text) if b > a and (final or b < len(text))]
            if final and c.start is not None:
                # The first opening marker outside every complete block starts one that runs to the end.
                a = next((a for a, _ in linear_re.spans(c.start, text) if not inside(found, a)), None)
                if a is not None:
                    found.append((a, len(text)))
            spans.extend((a, b, c) for a, b in found)
        return spans

    def apply(self, text: str, spans: list[tuple[int, int, Compiled]], direction: str) -> Scan:
        """Count ``spans`` and redact them (none when one of them is a block rule's)."""
        res = Scan(text)
        for _, _, c in spans:
            res.hits[c.rule.name] = res.hits.get(c.rule.name, 0) + 1
            if getattr(c.rule, direction) == "block" and c not in res.block:
                res.block.append(c)
        if not res.block and spans:
            res.edits = edits_of(spans)
            res.text, res.redacted = edits.apply(text, edits.merge([res.edits])), True
        return res

    def verdict(self, direction: str, scans: list[Scan], t0: float) -> Verdict:
        hits: dict[str, int] = {}
        for s in scans:
            for k, n in s.hits.items():
                hits[k] = hits.get(k, 0) + n
        v = Verdict(
            screen=self.name,
            direction=direction,
            entities=hits,
            categories=sorted(hits),
            latency_ms=(time.perf_counter() - t0) * 1000,
        )
        blockers = [c for s in scans for c in s.block]
        if blockers:
            secret = any(c.rule.kind == "secret" for c in blockers)
            names = ", ".join(sorted({c.rule.name for c in blockers}))
            what = "a credential" if secret else "denylisted content"
            where = "prompt" if direction == "prompt" else "answer"
            v.action, v.blocked = "block", True
            v.code = "secret_blocked" if secret else "denylisted"
            v.message = f"Blocked by the denylist screen: the {where} contains {what} ({names})."
        elif any(s.redacted for s in scans):
            v.action, v.modified = "redact", True
        return v

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        scans, t0 = await self._scans(segments, "prompt")
        if budget.inline(segments):
            return self._finish(segments, "prompt", scans, t0)
        return await heavy.run(self._finish, segments, "prompt", scans, t0)  # a loop turn per segment

    async def screen_response(self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]) -> Verdict:
        scans, t0 = await self._scans(segments, "response")
        if budget.inline(segments):
            return self._finish(segments, "response", scans, t0)
        return await heavy.run(self._finish, segments, "response", scans, t0)

    async def screen_edits(
        self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]
    ) -> tuple[Verdict, list[list[Edit]]]:
        """``screen_response`` as edits (guard.screens.edits): the redactions of each segment as written
        (JSON-text segments, read as written and decoded: their decoding too, ``scan_segment``)."""
        scans, t0 = await self._scans(segments, "response")
        v = self._finish(segments, "response", scans, t0, plain=False)
        return v, [s.edits for s in scans]

    async def _scans(self, segments: list[Segment], direction: str) -> tuple[list[Scan], float]:
        """Small texts inline (cheaper than a thread hop); large ones in a screening process
        (guard/screens/denylist/worker.py), else a worker thread: off the event loop either way."""
        t0 = time.perf_counter()
        if budget.inline(segments):
            return self._scan_all(segments, direction), t0
        done = None
        if self.source is not None and self.in_process is not None:
            done = await self.in_process(self.source, direction, segments)
        if done is not None:  # many small segments (a megabyte of messages): their results are read in a thread too
            return await heavy.run(self._from_worker, segments, done), t0
        return await heavy.run(self._scan_all, segments, direction), t0

    def _screen(self, segments: list[Segment], direction: str) -> Verdict:
        """The whole screen in this thread (what a large scan does when no screening process is ready)."""
        t0 = time.perf_counter()
        return self._finish(segments, direction, self._scan_all(segments, direction), t0)

    def _scan_all(self, segments: list[Segment], direction: str) -> list[Scan]:
        return [self.scan_segment(s.text, s.kind, direction) for s in segments]

    def _from_worker(self, segments: list[Segment], done: list[Any]) -> list[Scan]:
        """The scans from a screening process's results (None: nothing found; text None: unchanged, not sent
        back)."""
        by_name = {c.rule.name: c for c in self.rules}

        def scan(seg: Segment, r: Any) -> Scan:
            if r is None:  # nothing found in it
                return Scan(seg.text)
            t, hits, block, red, ed = r
            return Scan(seg.text if t is None else t, hits, [by_name[n] for n in block], red, [tuple(e) for e in ed])

        return [scan(seg, r) for seg, r in zip(segments, done, strict=True)]

    def _finish(
        self, segments: list[Segment], direction: str, scans: list[Scan], t0: float, plain: bool = True
    ) -> Verdict:
        """The verdict; unless it blocks, the rewritten texts written back (``plain``; else the redactions
        are edits, merged by the caller)."""
        v = self.verdict(direction, scans, t0)
        v.fields = sorted({seg.kind for seg, s in zip(segments, scans, strict=False) if s.hits})
        if not v.blocked:
            for seg, s in zip(segments, scans, strict=False):
                if plain:
                    seg.text = s.text
        return v

    def open_stream(self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content") -> Any:
        """``kind="tool_arguments"``: JSON text, screened as written and decoded
        (guard.screens.denylist.json_stream)."""
        if kind in json_text.JSON_KINDS:
            return JsonTextDenylist(self)
        return DenylistStream(self)
