"""Screening a streamed answer with a bounded hold-back.

The last ``stream_holdback_chars`` characters (default 64) are held until they can no longer be part of
a match: every feed scans the held text together with up to ``_LEFT`` characters already released (so
context words before a value still count), releases what lies before the hold-back, and moves the cut
back to the start of any finding or placeholder that crosses it. A placeholder split across chunks is
therefore restored whole, and a value is released only once it has been rewritten.

The streamed output equals the whole-answer rewrite as long as no single value (or placeholder) is
longer than the hold-back and no context word sits farther back than ``_LEFT`` characters; larger
values are still rewritten, but the part released before they complete cannot be taken back.

Tool-call arguments (``kind="tool_arguments"``) are held whole up to ``max_scan_chars`` and rewritten as
JSON at the end, like a non-streamed answer; beyond that they fall back to the windowed path with
JSON-safe output.
"""
from __future__ import annotations

import time

from guard.filters.base import StreamStep, Verdict
from guard.filters.pii import ScanPass, error_verdict
from guard.filters.pii_engine import Finding
from guard.filters.pii_profile import PIIProfile
from guard.filters.pii_transform import PLACEHOLDER, Pseudonyms

_LEFT = 256  # released characters kept as left context for the next scan
_MIN_RELEASE = 16  # scan again only when at least this much could be released


class PIIStream:
    def __init__(self, profile: PIIProfile, pseudonyms: Pseudonyms, kind: str = "content",
                 direction: str = "response") -> None:
        self.profile = profile
        self.scan = ScanPass(profile, direction, pseudonyms)
        self.holdback = profile.settings.stream_holdback_chars
        self.whole_json = kind == "tool_arguments"
        self.json_safe = kind in ("tool_arguments", "tool_result")
        self.left = ""  # released raw text, for context
        self.held = ""  # raw text not yet released
        self.started = time.perf_counter()
        self.stopped: Verdict | None = None

    async def feed(self, text: str) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        self.held += text
        if self.whole_json:
            if len(self.held) <= self.profile.settings.max_scan_chars:
                return StreamStep()
            self.whole_json = False
        if len(self.held) < self.holdback + _MIN_RELEASE:
            return StreamStep()
        return self._release(final=False)

    async def finish(self) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        if self.whole_json:
            held, self.held = self.held, ""
            try:
                out = self.scan.json_text(held)
            except Exception as e:  # noqa: BLE001
                return self._error(e, held)
            return self._stop_if_blocked(StreamStep(release=out))
        return self._release(final=True)

    def verdict(self) -> Verdict:
        """What this stream found so far (types and counts), for the audit record."""
        return self.stopped or self.scan.verdict(self.started)

    # --- internals ---------------------------------------------------------------------------------------

    def _release(self, final: bool) -> StreamStep:
        window, off = self.left + self.held, len(self.left)
        restoring = self.scan.direction == "response"
        try:
            known = self.scan.pseudonyms.known_spans(window) if restoring else []
            found = self.profile.findings(window, known)
        except Exception as e:  # noqa: BLE001
            return self._error(e, self.held)
        cut = len(window) if final else _safe_cut(len(window) - self.holdback, window, found)
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
