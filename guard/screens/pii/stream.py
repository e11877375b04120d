"""Screening a streamed answer, holding back only what could still become a finding.

Every feed asks each recognizer's patterns (and the placeholder pattern, for pseudonyms being restored)
"from which offset could a match still be completing?" (guard/screens/stream_partial.py) and releases
everything before the earliest such offset at once. Prose with no digits, ``@`` or value-like runs
goes out with at most its last, unfinished word held (the email pattern could still take an ``@``).
Released text is rewritten with the findings of a scan over the held text together with up to
``_LEFT`` characters already released, so context words before a value count as in the whole answer; a
complete match is still held while fewer than ``_AFTER`` characters follow it, because a label right
after a number (``555 0100 office``) raises its score. In a chain, that wait ends sooner when the screen
before this one holds the characters after the match: every way it may release them is scanned, and the
match goes out when they agree (``_scan_outcomes``; stream_partial.PartialSet.pending_ahead decides when
they bring enough). Presidio runs only when a complete match lies in the text to release; a placeholder
split across chunks is restored whole, never shown half-restored.

The streamed output equals the whole-answer rewrite as long as no single value is longer than
``stream_holdback_chars`` (the cap: a run still open past it is screened as it stands and released) and no
context word sits farther back than ``_LEFT`` characters. Entity types whose answer action is ``allow``
are not held (they are never rewritten). A profile with a NER model (which has no patterns to match
partially) holds a fixed ``_NER_HOLD`` characters instead.

Tool-call arguments are JSON text: guard/screens/pii/json_stream.py reads their strings decoded and
screens each with a PIIStream of its own (the same partial-match hold-back).
"""

from __future__ import annotations

import time
from typing import Any

from presidio_analyzer import PatternRecognizer

from guard.screens.base import StreamStep, Verdict
from guard.screens.pii.engine import Finding
from guard.screens.pii.profile import PIIProfile
from guard.screens.pii.recognizers import ConfiguredRecognizer
from guard.screens.pii.scan import ScanPass, error_verdict
from guard.screens.pii.transform import PLACEHOLDER, Pseudonyms
from guard.screens.stream_partial import WORD, Ahead, PartialSet

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
    reach: list[int] = [0] * len(sources)  # a placeholder is restored whatever follows it
    result: PartialSet | None = None
    for rec in profile.analyzer.engine.registry.recognizers:
        if not rewritten.intersection(rec.supported_entities):
            continue
        own: tuple[str, int] | None = getattr(rec, "stream_source", None)  # Guard's recognizers
        if own is not None:
            sources.append(own)
            reach.append(int(getattr(rec, "stream_after", _AFTER)))
        elif isinstance(rec, PatternRecognizer) and getattr(rec, "patterns", None):
            pats: list[Any] = getattr(rec, "patterns")  # noqa: B009 - Presidio leaves it untyped
            flags = int(getattr(rec, "global_regex_flags", 0) or 0)
            sources += [(p.regex, flags) for p in pats]
            # A pii.yaml recognizer (RE2: no look-around) reads 1 character past its match, and Presidio's
            # context pass the match's first word; another pattern recognizer's look-ahead is unknown.
            reach += [WORD if isinstance(rec, ConfiguredRecognizer) else _AFTER] * len(pats)
        else:
            break
    else:
        result = PartialSet(sources, after=_AFTER, reach=reach)
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
        self.ahead: Ahead | None = None  # what the screen before this one in the chain holds

    async def feed(self, text: str) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        self.held += text
        return self._release(final=False)

    async def feed_ahead(self, text: str, ahead: Ahead | None) -> StreamStep:
        """``feed``, knowing what the screen before this one holds (guard.relay._Chain): it only narrows
        what this screen holds (stream_partial.PartialSet.pending_ahead); ``text`` may be empty."""
        self.ahead = ahead
        try:
            return await self.feed(text)
        finally:
            self.ahead = None

    def holds(self) -> bool:
        return bool(self.held) and self.stopped is None

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

    def verdict(self) -> Verdict:
        """What this stream found so far (types and counts), for the audit record."""
        return self.stopped or self.scan.verdict(self.started)

    # --- internals ---------------------------------------------------------------------------------------

    def _open_from(self, window: str, off: int) -> tuple[int, bool, bool]:
        """Where held text starts (an open match), whether the text before it needs a scan, and whether
        that scan must read what the screen before this one may still release (``Pending.settled``)."""
        n = len(window)
        if self.partials is None:
            return n - _NER_HOLD, True, False
        pend = self.partials.pending_ahead(window, off, self.ahead)
        if n - pend.start > self.cap:  # open past the cap: what is older than the cap is screened as it
            # stands and released; a match opened within the last ``cap`` characters is still held
            late = self.partials.pending(window, max(off, n - self.cap))
            return max(late.start, pend.start + 1), True, False
        return pend.start, pend.complete_before or pend.timed_out, pend.settled

    def _release(self, final: bool) -> StreamStep:
        window, off = self.left + self.held, len(self.left)
        settled = False
        if final:  # all of it goes; scanned unless nothing in it is or could be a match
            cut, need = len(window), self._open_from(window, off)[:2] != (len(window), False)
        else:
            cut, need, settled = self._open_from(window, off)
        if cut <= off:
            return StreamStep()
        if not need:  # nothing there could be a finding or a placeholder: out as it is
            raw, self.held = window[off:cut], window[cut:]
            self.left = _trim_left(self.left + raw)
            return StreamStep(release=raw)
        try:
            if settled and self.ahead is not None:
                known, found, every, cut = self._scan_outcomes(window, cut, self.ahead)
            else:
                known, found = self._scan_one(window)
                every = found
        except Exception as e:
            return self._error(e, self.held)
        if not final:
            cut = _safe_cut(cut, window, every)
        if cut <= off:
            return StreamStep()
        mine = [_shift(f, off) for f in found if f.start >= off and f.end <= cut]
        restore = [(a - off, b - off) for a, b in known if a >= off and b <= cut]
        raw = window[off:cut]
        blocked = [f for f in mine if self.profile.action(f.entity_type, self.scan.direction) == "block"]
        if blocked:
            stop_at = blocked[0].start
            raw = raw[:stop_at]
            self.scan.counts[blocked[0].entity_type] += 1
            mine = [f for f in mine if f.end <= stop_at]
            restore = [(a, b) for a, b in restore if b <= stop_at]
        self.scan.counts.update(f.entity_type for f in mine)
        out = self.scan.rewriter.apply(raw, mine, restore, self.json_safe)
        self.left = _trim_left(self.left + window[off:cut])
        self.held = window[cut:]
        return self._stop_if_blocked(StreamStep(release=out))

    def _scan_one(self, text: str) -> tuple[list[tuple[int, int]], list[Finding]]:
        known = self.scan.pseudonyms.known_spans(text) if self.scan.direction == "response" else []
        return known, self.profile.findings(text, known)

    def _scan_outcomes(
        self, window: str, cut: int, ahead: Ahead
    ) -> tuple[list[tuple[int, int]], list[Finding], list[Finding], int]:
        """Scan ``window`` followed by each way the screen before this one may let its held text go
        (``Ahead.outcomes``, as far as a finding may read after its end). Findings before ``cut`` that
        differ between them move ``cut`` back to the first such: what is released was decided the same
        way whichever text comes. Returns the first scan's spans and findings, plus every other scan's
        findings (so that no cut falls inside any of them), and the cut."""
        assert self.partials is not None
        scans = [self._scan_one(window + tail) for tail in ahead.outcomes(self.partials.after)]
        known, found = scans[0]

        def before(k: list[tuple[int, int]], f: list[Finding]) -> set[tuple[str, int, int]]:
            return {(x.entity_type, x.start, x.end) for x in f if x.start < cut} | {("", a, b) for a, b in k if a < cut}

        first = before(known, found)
        moved = cut
        for k, f in scans[1:]:
            differ = first ^ before(k, f)
            if differ:
                moved = min(moved, *(a for _, a, _ in differ))
        return known, found, [x for _, f in scans for x in f], moved

    def _stop_if_blocked(self, step: StreamStep) -> StreamStep:
        v = self.scan.verdict(self.started)
        if v.blocked:
            self.stopped = step.stop = v
        return step

    def _error(self, exc: BaseException, held: str) -> StreamStep:
        v = error_verdict(self.profile, self.scan.direction, self.started, exc)
        if v.blocked:
            self.stopped = v
            return StreamStep(stop=v)
        self.held = ""
        return StreamStep(release=held)


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


def _shift(f: Finding, off: int) -> Finding:
    return Finding(f.entity_type, f.start - off, f.end - off, f.score)
