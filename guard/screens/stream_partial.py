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
from collections.abc import Iterable
from dataclasses import dataclass

import regex

TIMEOUT_S = 0.05  # per regex call; past it the text is held as if a match were open
BUDGET_S = 0.1  # per ``pending`` call, all patterns and starts together


@dataclass
class Pending:
    start: int  # earliest offset from which a match could still be completing (len(text): none)
    complete_before: bool  # a complete match starts before ``start`` (the screen must rewrite it)
    timed_out: bool = False


class PartialSet:
    """Patterns compiled for partial matching. ``after``: a complete match is treated as still open while
    fewer than ``after`` characters follow it (its score may depend on the word after it)."""

    def __init__(self, sources: Iterable[tuple[str, int]], after: int = 0) -> None:
        self.patterns = [regex.compile(src, flags) for src, flags in sources]
        self.after = after

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
