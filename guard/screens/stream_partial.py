"""Partial matching for stream screens: from which offset of the buffered text could a match still be
completing?

A stream screen holds back only the text from the earliest such offset. ``PartialSet.pending`` answers
with the ``regex`` package's partial matching (is the rest of the text, from some start, the beginning of
a match?). A position where no match can start now never becomes one with more text, so what lies before
the offset can be released for good.

Full matching lives elsewhere (the screens' own scans; it may move to an engine without partial matching);
this module only answers "where could a match still be completing", on the held text only, with a timeout
per regex call and a time budget per answer: past either the answer is "from ``pos``" (hold everything;
the screen tries again with the next chunk, and its cap bounds how long).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import regex

WORD = -1  # a ``reach``: the finding reads on to the end of the word its match starts in, and 1 character past
AHEAD_MAX = 64  # longest held text of an earlier screen that a later one looks ahead at
TIMEOUT_S = 0.05  # per regex call; past it the text is held as if a match were open
BUDGET_S = 0.1  # per ``pending`` call, all patterns and starts together


@dataclass
class Pending:
    start: int  # earliest offset from which a match could still be completing (len(text): none)
    complete_before: bool  # a complete match starts before ``start`` (the screen must rewrite it)
    timed_out: bool = False
    # a complete match before ``start`` is released on the strength of the look-ahead (every way the
    # earlier screen may let its text go settles it): the screen scans it with each of those ways
    settled: bool = False


@dataclass(frozen=True)
class Ahead:
    """What an earlier screen of a chain holds and has not released: ``text`` (raw), and the strings it may
    put in place of any part of it (``replacements``). What reaches the next screen after the text it was
    given is ``text`` (then anything), or a prefix of ``text``, one of ``replacements``, then anything.
    ``starts`` (when given) says where in ``text`` a replacement may begin (where a match of the earlier
    screen could still start); without it, anywhere. ``certain`` (when given, it returns where): a replacement
    begins at that offset or before it whatever comes next (an open multi-line block such as a private key, redacted to
    its end marker, the cap or the answer's end): ``text`` past it never reaches the next screen as written."""

    text: str
    replacements: tuple[str, ...]
    starts: Callable[[], Sequence[int]] | None = None
    certain: Callable[[], int | None] | None = None

    @cached_property
    def _certain(self) -> int | None:
        return None if self.certain is None else self.certain()

    def continuations(self) -> list[str]:
        out = {self.text} if self._certain is None else set()
        for j in self._starts:
            out.update(self.text[:j] + r for r in self.replacements)
        return sorted(out)

    @cached_property
    def _starts(self) -> tuple[int, ...]:
        every = range(len(self.text) + 1)
        found = {j for j in (every if self.starts is None else self.starts()) if j <= len(self.text)}
        if self._certain is not None:
            found = {j for j in found if j <= self._certain} | {self._certain}
        return tuple(sorted(found))

    def outcomes(self, length: int) -> list[str]:
        """Every way ``text`` may reach the next screen, cut to its first ``length`` characters."""
        out = {self.text[:length]} if self._certain is None or length <= self._certain else set()
        for j in self._starts:
            if j < length:
                out.update((self.text[:j] + r)[:length] for r in self.replacements)
        return sorted(out)


class PartialSet:
    """Patterns compiled for partial matching. ``after``: a complete match is treated as still open while
    fewer than ``after`` characters follow it (its score may depend on the word after it). ``reach``: per
    pattern, how many characters after a complete match its finding may read (at most ``after``; by
    default ``after``), or ``WORD``; used only to settle a match from what an earlier screen may release
    (``pending_ahead``)."""

    def __init__(self, sources: Iterable[tuple[str, int]], after: int = 0, reach: Sequence[int] | None = None) -> None:
        self.patterns = [regex.compile(src, flags) for src, flags in sources]
        self.after = after
        self.reach = (
            [r if r == WORD else min(r, after) for r in reach] if reach is not None else [after] * len(self.patterns)
        )
        if len(self.reach) != len(self.patterns):
            raise ValueError("one reach per pattern")

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def pending(self, text: str, pos: int = 0, limit: int | None = None) -> Pending:
        """Earliest open start in ``text[pos:]`` (characters before ``pos`` are context for lookbehinds).
        Starts at or past ``limit`` are not looked for.

        One partial search per pattern settles the common cases: no match at all, or only a partial one
        (then it is the leftmost). A search reports a complete match further on before an earlier partial
        one, so when a pattern has a complete match each start is tested on its own (``fullmatch`` with
        ``partial=True``: is the rest of the text a prefix of some match?)."""
        n = len(text)
        best = n if limit is None else min(limit, n)
        first_complete = n
        deadline = time.monotonic() + BUDGET_S
        try:
            for rx in self.patterns:
                m = rx.search(text, pos, partial=True, timeout=_left(deadline))
                if m is None:
                    continue
                if m.partial:
                    if m.start() < n:
                        best = min(best, m.start())
                    continue
                first_complete = min(first_complete, m.start())
                best = self._first_open(rx, text, pos, best, deadline)
        except TimeoutError:
            return Pending(pos, True, True)
        return Pending(best, first_complete < best)

    def pending_ahead(self, text: str, pos: int, ahead: Ahead | None) -> Pending:
        """``pending`` for a screen after another in a chain, which holds ``ahead``: a start whose match
        could still be completing in ``text`` alone is closed when no continuation the earlier screen may
        release lets the match reach past ``text``. A complete match with fewer than ``after`` characters
        after it is settled when every way the earlier screen may let its text go brings at least the
        pattern's ``reach`` characters after it (``settled``: the screen then scans it with each of those
        ways, and holds it if they disagree). Only decides where to hold; nothing of ``ahead`` is released.
        So two screens holding neighbouring candidates hold what the larger hold alone holds."""
        base = self.pending(text, pos)
        n = len(text)
        if ahead is None or not ahead.text or len(ahead.text) > AHEAD_MAX or base.start >= n or base.timed_out:
            return base
        deadline = time.monotonic() + BUDGET_S
        tails = ahead.continuations()
        settled = False
        try:
            for p in range(base.start, n):
                is_open, by_ahead = self._open_before(text, p, tails, deadline)
                if is_open:
                    return Pending(p, True, settled=settled) if p > base.start else base
                settled = settled or by_ahead
        except TimeoutError:
            return base
        return Pending(n, True, settled=settled)

    def _open_before(self, text: str, p: int, tails: list[str], deadline: float) -> tuple[bool, bool]:
        """Whether a match from ``p`` could still be completing, given what may follow ``text``: one that
        any of ``tails`` (then anything) extends past ``text``, or a complete match near the end (``after``)
        that some tail leaves unsettled (fewer known characters after it than its finding reads); and
        whether a complete match from ``p`` was settled by the tails."""
        n = len(text)
        settled = False
        for i, rx in enumerate(self.patterns):
            m = rx.match(text, p, timeout=_left(deadline))
            near = m is not None and m.end() > p and m.end() >= n - self.after
            for t in tails:
                whole = text + t
                if rx.fullmatch(whole, p, partial=True, timeout=_left(deadline)) is not None:
                    return True, False
                m = rx.match(whole, p, timeout=_left(deadline))
                if m is not None and m.end() > n:
                    return True, False
                if near and m is not None and m.end() > p and not _settles(whole, m.start(), m.end(), self.reach[i]):
                    return True, False
            settled = settled or near
        return False, settled

    def starts(self, text: str, pos: int = 0) -> list[int]:
        """Offsets in ``text[pos:]`` (relative to ``pos``) from which a match could start: complete, or
        partial up to the end. Past the time budget: every offset."""
        deadline = time.monotonic() + BUDGET_S
        out = []
        try:
            for p in range(pos, len(text)):
                if any(rx.match(text, p, partial=True, timeout=_left(deadline)) is not None for rx in self.patterns):
                    out.append(p - pos)
        except TimeoutError:
            return list(range(len(text) - pos + 1))
        return out

    def _first_open(self, rx: regex.Pattern[str], text: str, pos: int, best: int, deadline: float) -> int:
        n = len(text)
        for p in range(pos, best):
            if rx.fullmatch(text, p, partial=True, timeout=_left(deadline)) is not None:
                return p
            if self.after:
                m = rx.match(text, p, timeout=_left(deadline))
                if m is not None and m.end() > p and m.end() >= n - self.after:
                    return p
        return best


def _settles(text: str, start: int, end: int, reach: int) -> bool:
    """Whether ``text``, whatever follows it, fixes what a finding at ``start:end`` reads after it:
    ``reach`` characters, or (``WORD``) the rest of its first word and one character."""
    if reach == WORD:
        return any(c.isspace() for c in text[start:]) and len(text) > end
    return end + reach <= len(text)


def _left(deadline: float) -> float:
    """One regex call's timeout: TIMEOUT_S, or less when the budget of the whole ``pending`` runs out."""
    left = min(TIMEOUT_S, deadline - time.monotonic())
    if left <= 0:
        raise TimeoutError("partial matching budget spent")
    return left


# What the denylist's RE2 phrases match (guard/screens/denylist/screen.py, _phrase): any white space
# Python's str.isspace() knows between words, and a word boundary that is ASCII (RE2's ``\b``).
_PHRASE_WS = r"[\s\x0b\x1c-\x1f\x85\p{Z}]+"
_ASCII_WORD = r"[0-9A-Za-z_]"


def phrase_sources(phrases: Iterable[str]) -> str:
    """One alternation for a phrase list (case-insensitive, any white space between words), matching
    where the denylist's RE2 phrases match: never stricter, or a phrase could go out unheld."""
    alts = []
    for p in phrases:
        words = p.split()
        if not words:
            continue
        left = f"(?<!{_ASCII_WORD})" if regex.match(r"\w", words[0], regex.ASCII) else ""
        right = f"(?!{_ASCII_WORD})" if regex.search(r"\w$", words[-1], regex.ASCII) else ""
        alts.append(left + _PHRASE_WS.join(regex.escape(w) for w in words) + right)
    return "(?:" + "|".join(alts) + ")" if alts else r"(?!)"
