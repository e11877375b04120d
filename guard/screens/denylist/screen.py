"""Secrets and denylist screen: regexes and phrase lists, ``block`` or ``redact``, prompts and answers.

Cheap (regexes only), so it runs first. In streams only text that could still be the start of a secret
is held back (partial matching, guard/screens/stream_partial.py): ordinary prose goes out at once, a
started token (``sk-...``) waits until it either completes (and is redacted) or can no longer match. A
single-line secret still open after ``hold_chars`` characters is screened as it stands and the rest of
its run (up to white space) is dropped; a started multi-line block (a PEM private key) is held until it
ends, up to ``max_hold_chars``; past that the rest of the block is suppressed until its end marker.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard.screens import budget, linear_re
from guard.screens.base import Segment, StreamStep, Verdict
from guard.screens.denylist.settings import DenylistProfile, DenylistRule, DenylistSettings
from guard.screens.pii.source import Source
from guard.screens.stream_partial import Ahead, PartialSet, phrase_sources

# Large scans in a screening process: (settings file, direction, segments) -> per text (text, None when
# unchanged; hits by rule, blocking rule names, redacted), or None when no process is ready (a thread scans).
Offload = Callable[
    [Source, str, Sequence[Segment]], Awaitable[list[tuple[str | None, dict[str, int], list[str], bool]] | None]
]


@dataclass
class _Compiled:
    rule: DenylistRule
    rx: Any  # an RE2 pattern (guard.screens.linear_re)
    start: Any
    end: Any
    hints: tuple[str, ...] = ()

    def may_match(self, lowered: str) -> bool:
        return not self.hints or any(h in lowered for h in self.hints)

    @property
    def replacement(self) -> str:
        return self.rule.replacement if self.rule.replacement is not None else f"[REDACTED:{self.rule.name}]"


# Any white space Python's str.isspace() knows (RE2's \s is ASCII only): phrases match across all of it.
_WS = r"[\s\v\x{1c}-\x{1f}\x{85}\p{Z}]+"
_NEVER = r"[^\x00-\x{10FFFF}]"  # matches nothing (RE2 has no (?!))


def _phrase(p: str) -> str:
    """One phrase as RE2: its words with any white space between, a word boundary at word-character ends
    (the boundary is ASCII: next to a letter of another script it is looser, never stricter)."""
    words = p.split()
    src = _WS.join(re.escape(w) for w in words)
    left = r"\b" if re.match(r"\w", words[0], re.ASCII) else ""
    right = r"\b" if re.search(r"\w$", words[-1], re.ASCII) else ""
    return left + src + right


def _compile(rule: DenylistRule) -> _Compiled:
    icase = rule.ignore_case or rule.phrases is not None
    hints = [h.lower() for h in rule.hints or []]
    if rule.phrases is not None:
        alts = [_phrase(p) for p in rule.phrases if p.split()]
        src = "(?:" + "|".join(alts) + ")" if alts else _NEVER
        hints = hints or sorted({p.split()[0].lower() for p in rule.phrases if p.split()})
    else:
        src = rule.pattern or _NEVER
    start = linear_re.compile(rule.stream_start, icase) if rule.stream_start else None
    end = linear_re.compile(rule.stream_end, icase) if rule.stream_end else None
    return _Compiled(rule, linear_re.compile(src, icase), start, end, tuple(hints))


def _partial_source(rule: DenylistRule) -> tuple[str, int]:
    """The rule's pattern for partial matching (the ``regex`` package), with the rule's case flag."""
    import regex

    flags = regex.IGNORECASE if rule.ignore_case or rule.phrases is not None else 0
    return (phrase_sources(rule.phrases) if rule.phrases is not None else rule.pattern or r"(?!)"), flags


@dataclass
class _Scan:
    text: str
    hits: dict[str, int] = field(default_factory=dict)
    block: list[_Compiled] = field(default_factory=list)
    redacted: bool = False


class DenylistScreen:
    """PromptScreen and ResponseScreen for one denylist profile."""

    name = "denylist"

    def __init__(
        self, profile: DenylistProfile, source: Source | None = None, in_process: Offload | None = None
    ) -> None:
        self.profile = profile
        self.source = source  # the settings file, for the screening processes (large scans)
        self.in_process = in_process  # guard.screens.denylist.worker.in_process in a serving process
        self.rules = [_compile(r) for r in profile.rules]
        self.partials = PartialSet(_partial_source(c.rule) for c in self.active("response"))

    @classmethod
    def from_settings(
        cls,
        settings: DenylistSettings,
        profile: str | None = None,
        source: Source | None = None,
        in_process: Offload | None = None,
    ) -> DenylistScreen:
        return cls(settings.profile(profile), source, in_process)

    def active(self, direction: str) -> list[_Compiled]:
        return [c for c in self.rules if getattr(c.rule, direction) != "off"]

    def scan(self, text: str, direction: str, final: bool = True) -> _Scan:
        """Find every match; collect block rules, redact the rest. ``final``: an unclosed block (BEGIN
        without END) counts as a match to the end of the text."""
        return self.apply(text, self.matches(text, direction, final), direction)

    def matches(self, text: str, direction: str, final: bool = True) -> list[tuple[int, int, _Compiled]]:
        spans: list[tuple[int, int, _Compiled]] = []
        lowered = text.lower()
        for c in self.active(direction):
            budget.check()
            if not c.may_match(lowered):
                continue
            # Not final (a stream): a match touching the end may still grow, so it waits for more text.
            found = [(a, b) for a, b in linear_re.spans(c.rx, text) if b > a and (final or b < len(text))]
            if final and c.start is not None:
                # The first opening marker outside every complete block starts one that runs to the end.
                a = next((a for a, _ in linear_re.spans(c.start, text) if not _inside(found, a)), None)
                if a is not None:
                    found.append((a, len(text)))
            spans.extend((a, b, c) for a, b in found)
        return spans

    def apply(self, text: str, spans: list[tuple[int, int, _Compiled]], direction: str) -> _Scan:
        """Count ``spans`` and redact them (none when one of them is a block rule's)."""
        res = _Scan(text)
        for _, _, c in spans:
            res.hits[c.rule.name] = res.hits.get(c.rule.name, 0) + 1
            if getattr(c.rule, direction) == "block" and c not in res.block:
                res.block.append(c)
        if not res.block and spans:
            res.text, res.redacted = _redact(text, list(spans)), True
        return res

    def verdict(self, direction: str, scans: list[_Scan], t0: float) -> Verdict:
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
        return await self._offload(segments, "prompt")

    async def screen_response(self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]) -> Verdict:
        return await self._offload(segments, "response")

    async def _offload(self, segments: list[Segment], direction: str) -> Verdict:
        """Small texts inline (cheaper than a thread hop); large ones in a screening process
        (guard/screens/denylist/worker.py), else a worker thread: off the event loop either way."""
        if budget.inline(segments):
            return self._screen(segments, direction)
        t0 = time.perf_counter()
        done = None
        if self.source is not None and self.in_process is not None:
            done = await self.in_process(self.source, direction, segments)
        if done is not None:  # many small segments (a megabyte of messages): their results are read in a thread too
            return await asyncio.to_thread(self._from_worker, segments, direction, done, t0)
        return await asyncio.to_thread(self._screen, segments, direction)

    def _from_worker(self, segments: list[Segment], direction: str, done: list[Any], t0: float) -> Verdict:
        """The verdict from a screening process's results (text None: unchanged, not sent back)."""
        by_name = {c.rule.name: c for c in self.rules}
        scans = [
            _Scan(seg.text if t is None else t, hits, [by_name[n] for n in block], red)
            for seg, (t, hits, block, red) in zip(segments, done, strict=True)
        ]
        return self._finish(segments, direction, scans, t0)

    def _screen(self, segments: list[Segment], direction: str) -> Verdict:
        t0 = time.perf_counter()
        return self._finish(segments, direction, [self.scan(s.text, direction) for s in segments], t0)

    def _finish(self, segments: list[Segment], direction: str, scans: list[_Scan], t0: float) -> Verdict:
        v = self.verdict(direction, scans, t0)
        v.fields = sorted({seg.kind for seg, s in zip(segments, scans, strict=False) if s.hits})
        if not v.blocked:
            for seg, s in zip(segments, scans, strict=False):
                seg.text = s.text
        return v

    def open_stream(self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content") -> DenylistStream:
        return DenylistStream(self)


def _inside(found: list[tuple[int, int]], pos: int) -> bool:
    """Whether ``pos`` lies in one of ``found`` (non-overlapping matches in text order)."""
    i = bisect.bisect_right(found, (pos, 1 << 62)) - 1
    return i >= 0 and found[i][0] <= pos < found[i][1]


def _redact(text: str, spans: list[tuple[int, int, _Compiled]]) -> str:
    spans.sort(key=lambda s: (s[0], -s[1]))
    out, pos = [], 0
    for a, b, c in spans:
        if b <= pos:
            continue  # inside an earlier replacement
        out.append(text[pos : max(a, pos)])
        if a >= pos:
            out.append(c.replacement)
        pos = b
    out.append(text[pos:])
    return "".join(out)


class DenylistStream:
    """Redacts (or stops on) secrets in a streamed answer, holding back only what could still be one."""

    def __init__(self, screen: DenylistScreen) -> None:
        self.screen = screen
        self.buf = ""
        self.left = ""  # the last released characters: lookbehind context for partial matching
        self.scans: list[_Scan] = []
        self.suppress: _Compiled | None = None  # inside an over-long block: drop until its end marker
        self.drop_run = False  # after a capped single-line secret: drop until white space
        self.t0 = time.perf_counter()
        self.verdict = Verdict(screen=screen.name, direction="response")

    def pending(self) -> str:
        return "" if self.suppress or self.drop_run else self.buf

    def ahead(self) -> Ahead | None:
        """What this stream holds, for the screen after it in a chain to look ahead at (None: nothing, or
        text that will be dropped, so what comes next is unknown)."""
        if self.suppress or self.drop_run or not self.buf:
            return None
        return Ahead(self.buf, tuple(sorted({c.replacement for c in self.screen.active("response")})))

    async def feed(self, text: str) -> StreamStep:
        self.buf += text
        if self.drop_run and not self._leave_run():
            return StreamStep()
        if self.suppress and not self._leave_block():
            return StreamStep()
        return self._step(final=False)

    async def finish(self) -> StreamStep:
        if self.drop_run and not self._leave_run():
            self.buf = ""
        if self.suppress and not self._leave_block():
            self.buf = ""
        step = self._step(final=True)
        self.verdict = self.screen.verdict("response", self.scans, self.t0)
        return step

    def _leave_run(self) -> bool:
        m = _SPACE.search(self.buf)
        if not m:
            self.buf = ""
            return False
        self.buf, self.drop_run = self.buf[m.start() :], False
        return True

    def _leave_block(self) -> bool:
        assert self.suppress is not None and self.suppress.end is not None
        end = next(linear_re.spans(self.suppress.end, self.buf), None)
        if end is None:
            self.buf = self.buf[-_END_MARKER_KEEP:]
            return False
        self.buf, self.suppress = self.buf[end[1] :], None
        return True

    def _step(self, final: bool) -> StreamStep:
        p = self.screen.profile
        if final:
            return self._apply(self.screen.scan(self.buf, "response", final=True), len(self.buf))
        cut = len(self.buf)
        lowered = self.buf.lower()
        for c in self.screen.active("response"):
            if c.start is not None and c.may_match(lowered):
                for a, _ in linear_re.spans(c.start, self.buf):
                    if len(self.buf) - a > p.max_hold_chars:
                        return self._overlong(c, a, min(cut, a))
                    cut = min(cut, a)
        block_open = cut < len(self.buf)
        ctx = self.left
        pend = self.screen.partials.pending(ctx + self.buf, len(ctx), len(ctx) + cut)
        cut = min(cut, pend.start - len(ctx))
        if not block_open and not pend.complete_before and len(self.buf) - cut <= p.hold_chars:
            return self._apply(_Scan(self.buf[:cut]), cut)  # no match starts before the cut: nothing to redact
        spans = self.screen.matches(self.buf, "response", final=False)
        moved = True
        while moved:  # never cut through a complete match (an overlapping rule may take its place)
            moved = False
            for a, b, _ in spans:
                if a < cut < b:
                    cut, moved = a, True
        if not block_open and len(self.buf) - cut > p.hold_chars:
            return self._capped(cut)
        return self._apply(self.screen.apply(self.buf[:cut], [s for s in spans if s[1] <= cut], "response"), cut)

    def _apply(self, scan: _Scan, cut: int) -> StreamStep:
        """Release ``scan`` (the rewrite of ``buf[:cut]``) unless it holds a block rule's match."""
        if scan.hits:
            self.scans.append(scan)
        if scan.block:
            self.verdict = self.screen.verdict("response", self.scans, self.t0)
            self.buf = ""
            return StreamStep(stop=self.verdict)
        self.buf = self.buf[cut:]
        if scan.text:
            self.left = (self.left + scan.text)[-_LEFT:]
        return StreamStep(release=scan.text)

    def _capped(self, cut: int) -> StreamStep:
        """A single-line match still open after hold_chars: screen it as it stands, drop the rest of its run."""
        step = self._apply(self.screen.scan(self.buf, "response", final=True), len(self.buf))
        self.drop_run = step.stop is None
        return step

    def _overlong(self, c: _Compiled, start: int, cut: int) -> StreamStep:
        """A block that never ends within max_hold_chars: redact it (or stop) and drop the rest of it."""
        self.scans.append(_Scan("", {c.rule.name: 1}, [c] if c.rule.response == "block" else [], True))
        if c.rule.response == "block":
            self.verdict = self.screen.verdict("response", self.scans, self.t0)
            return StreamStep(stop=self.verdict)
        rest = self.buf[start:]
        self.buf = self.buf[:start]
        before = self._apply(self.screen.scan(self.buf, "response", final=True), start)
        if before.stop is not None:
            return before
        out = before.release + c.replacement
        self.buf, self.suppress, self.left = rest, c, ""
        if not self._leave_block():
            return StreamStep(release=out)
        more = self._step(final=False)
        return StreamStep(release=out + more.release, stop=more.stop)


_LEFT = 64  # released characters kept as lookbehind context
_END_MARKER_KEEP = 128  # while suppressing a block, enough of its tail to find an end marker split in two
_SPACE = re.compile(r"\s")
