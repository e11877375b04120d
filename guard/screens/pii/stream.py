"""Screening a streamed answer, holding back only what could still become a finding.

Every feed asks each recognizer's patterns (and the placeholder pattern, for pseudonyms being restored)
"from which offset could a match still be completing?" (guard/screens/stream_partial.py) and decides
everything before the earliest such offset at once. Prose with no digits, ``@`` or value-like runs
is decided with at most its last, unfinished word held (the email pattern could still take an ``@``).
Decided text is rewritten with the findings of a scan over the held text together with up to ``_LEFT``
characters already decided, so context words before a value count as in the whole answer; a complete
match is still held while fewer than ``_AFTER`` characters follow it, because a label right after a
number (``555 0100 office``) raises its score. Presidio runs only when a complete match lies in the text
decided; a placeholder split across chunks is restored whole, never shown half-restored.

The screen reads the text as the model wrote it. In a channel's group of rewriting screens
(guard.screens.edits.StreamGroup) it reports what it decided as edits (``judge``); on its own it releases
the rewritten text (``feed``). Either way the result equals the
whole-answer rewrite as long as no single value is longer than ``stream_holdback_chars`` (the cap: a run
still open past it is screened as it stands and decided) and no context word sits farther back than
``_LEFT`` characters. Entity types whose answer action is ``allow`` are not held (they are never
rewritten). A profile with a NER model (which has no patterns to match partially) holds a fixed
``_NER_HOLD`` characters instead.

Tool-call arguments are JSON text: guard/screens/pii/json_stream.py reads their strings decoded and
screens each with a PIIStream of its own (the same partial-match hold-back), its edits mapped back to
the text as written.
"""

from __future__ import annotations

import time
from typing import Any

from presidio_analyzer import PatternRecognizer

from guard.screens.base import StreamStep, Verdict
from guard.screens.edits import Edit, Judged
from guard.screens.edits import apply as apply_edits
from guard.screens.pii.engine import Finding
from guard.screens.pii.profile import PIIProfile
from guard.screens.pii.scan import ScanPass, error_verdict
from guard.screens.pii.transform import PLACEHOLDER, Pseudonyms
from guard.screens.stream_partial import PartialSet

_LEFT = 256  # released characters kept as left context for the next scan
_AFTER = 24  # a complete match is held while fewer characters follow it (a label after it may raise its score)
_NER_HOLD = 64  # fixed hold-back for profiles with a NER model


def stream_partials(profile: PIIProfile, direction: str) -> PartialSet | None:
    """The patterns whose open matches a stream of ``profile`` holds back; None when a recognizer that
    may rewrite text has no patterns (a NER model). Cached on the profile."""
    key = f"_stream_partials_{direction}"
    if key in profile.__dict__:
        return profile.__dict__[key]
    rewritten = {e for e in profile.entities if profile.action(e, direction) != "allow"}
    sources: list[tuple[str, int]] = [(PLACEHOLDER.pattern, 0)] if direction == "response" else []
    result: PartialSet | None = None
    for rec in profile.analyzer.engine.registry.recognizers:
        if not rewritten.intersection(rec.supported_entities):
            continue
        own: tuple[str, int] | None = getattr(rec, "stream_source", None)  # Guard's recognizers
        if own is not None:
            sources.append(own)
        elif isinstance(rec, PatternRecognizer) and getattr(rec, "patterns", None):
            pats: list[Any] = getattr(rec, "patterns")  # noqa: B009 - Presidio leaves it untyped
            flags = int(getattr(rec, "global_regex_flags", 0) or 0)
            sources += [(p.regex, flags) for p in pats]
        else:
            break
    else:
        result = PartialSet(sources, after=_AFTER)
    profile.__dict__[key] = result
    return result


class PIIStream:
    def __init__(
        self,
        profile: PIIProfile,
        pseudonyms: Pseudonyms,
        kind: str = "content",
        direction: str = "response",
        scan: ScanPass | None = None,
    ) -> None:
        """``kind``: ``tool_result`` / ``tool_arguments`` text is raw JSON (rewrites keep it valid).
        ``scan``: the pass whose counts this stream adds to (shared by the strings of one JSON text)."""
        self.profile = profile
        self.scan = scan or ScanPass(profile, direction, pseudonyms)
        self.cap = profile.settings.stream_holdback_chars
        self.partials = stream_partials(profile, direction)
        self.json_safe = kind in ("tool_arguments", "tool_result")
        self.left = ""  # released raw text, for context
        self.held = ""  # raw text not yet released
        self.started = time.perf_counter()
        self.stopped: Verdict | None = None
        self.base = 0  # offset of ``held`` in the text as written (the channel's, in a group)

    async def feed(self, text: str) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        self.held += text
        return self._release(final=False)

    async def finish(self) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        return self._release(final=True)

    def feed_now(self, text: str) -> StreamStep:
        """``feed`` without the coroutine (guard.screens.pii.json_stream feeds many pieces per chunk)."""
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        self.held += text
        return self._release(final=False)

    def finish_now(self) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        return self._release(final=True)

    async def judge(self, text: str) -> Judged:
        """``feed`` for a group of screens reading the same text (guard.screens.edits.StreamGroup): how far
        the text is decided, and the edits for it, in offsets of the text as written."""
        return self.judge_now(text)

    async def judge_end(self) -> Judged:
        return self.judge_end_now()

    def judge_now(self, text: str) -> Judged:
        """``judge`` without the coroutine (guard.screens.pii.json_stream judges many pieces per chunk)."""
        if self.stopped is not None:
            return Judged(self.base, stop=self.stopped)
        self.held += text
        return self._judge(final=False)

    def judge_end_now(self) -> Judged:
        if self.stopped is not None:
            return Judged(self.base, stop=self.stopped)
        return self._judge(final=True)

    def verdict(self) -> Verdict:
        """What this stream found so far (types and counts), for the audit record."""
        return self.stopped or self.scan.verdict(self.started)

    # --- internals ---------------------------------------------------------------------------------------

    def _open_from(self, window: str, off: int) -> tuple[int, bool]:
        """Where held text starts (an open match), and whether the text before it needs a scan."""
        n = len(window)
        if self.partials is None:
            return n - _NER_HOLD, True
        pend = self.partials.pending(window, off)
        if n - pend.start > self.cap:  # open past the cap: what is older than the cap is screened as it
            # stands and released; a match opened within the last ``cap`` characters is still held
            late = self.partials.pending(window, max(off, n - self.cap))
            return max(late.start, pend.start + 1), True
        return pend.start, pend.complete_before or pend.timed_out

    def _release(self, final: bool) -> StreamStep:
        """``_judge``, with the decided text rewritten and released."""
        start, held = self.base, self.held
        got = self._judge(final)
        upto = got.decided if got.stop is None else (start if got.stop_at is None else got.stop_at)
        edits = [e for e in got.edits if e[1] <= upto]
        return StreamStep(release=apply_edits(held[: upto - start], edits, start), stop=got.stop)

    def _judge(self, final: bool) -> Judged:
        window, off = self.left + self.held, len(self.left)
        if final:  # all of it goes; scanned unless nothing in it is or could be a match
            cut, need = len(window), self._open_from(window, off) != (len(window), False)
        else:
            cut, need = self._open_from(window, off)
        if cut <= off:
            return Judged(self.base)
        if not need:  # nothing there could be a finding or a placeholder: decided as it is
            self._advance(window, off, cut)
            return Judged(self.base)
        try:
            known, found = self._scan_one(window)
        except Exception as e:
            return self._error(e)
        if not final:
            cut = _safe_cut(cut, window, found)
        if cut <= off:
            return Judged(self.base)
        mine = [f for f in found if f.start >= off and f.end <= cut]
        restore = [(a, b) for a, b in known if a >= off and b <= cut]
        stop_at = cut
        blocked = [f for f in mine if self.profile.action(f.entity_type, self.scan.direction) == "block"]
        if blocked:
            stop_at = blocked[0].start
            self.scan.counts[blocked[0].entity_type] += 1
            mine = [f for f in mine if f.end <= stop_at]
            restore = [(a, b) for a, b in restore if b <= stop_at]
        self.scan.counts.update(f.entity_type for f in mine)
        shift = self.base - off
        edits: list[Edit] = [
            (a + shift, b + shift, r) for a, b, r in self.scan.rewriter.edits(window, mine, restore, self.json_safe)
        ]
        self._advance(window, off, cut)
        v = self.scan.verdict(self.started)
        if v.blocked:
            self.stopped = v
            return Judged(self.base, edits, stop=v, stop_at=stop_at + shift)
        return Judged(self.base, edits)

    def _advance(self, window: str, off: int, cut: int) -> None:
        self.left = _trim_left(self.left + window[off:cut])
        self.held = window[cut:]
        self.base += cut - off

    def _scan_one(self, text: str) -> tuple[list[tuple[int, int]], list[Finding]]:
        known = self.scan.pseudonyms.known_spans(text) if self.scan.direction == "response" else []
        return known, self.profile.findings(text, known)

    def _error(self, exc: BaseException) -> Judged:
        """A failed scan: the stream stops (``on_error: block``), or what is held counts as decided as it is."""
        v = error_verdict(self.profile, self.scan.direction, self.started, exc)
        if v.blocked:
            self.stopped = v
            return Judged(self.base, stop=v)
        self.base += len(self.held)
        self.held = ""
        return Judged(self.base)


def _safe_cut(cut: int, window: str, found: list[Finding]) -> int:
    """Move ``cut`` back until no finding or placeholder spans it."""
    spans = [(f.start, f.end) for f in found] + [m.span() for m in PLACEHOLDER.finditer(window)]
    moved = True
    while moved:
        moved = False
        for a, b in spans:
            if a < cut < b:
                cut, moved = a, True
    return max(cut, 0)


def _trim_left(released: str) -> str:
    """The last ``_LEFT`` characters or fewer, starting where spaCy would start a token."""
    start = len(released) - _LEFT
    if start <= 0:
        return released
    for p in range(start, len(released)):
        if released[p - 1] == " " and not released[p].isspace() and not released[p - 2].isspace():
            return released[p:]
    return ""
