"""The denylist's rules compiled for RE2 (guard.screens.linear_re), what a scan found, and the redaction
of found spans: shared by the whole-text screen (screen.py) and its stream (stream.py)."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

import regex

from guard.screens import linear_re
from guard.screens.denylist.settings import DenylistRule
from guard.screens.edits import Edit
from guard.screens.stream_partial import phrase_sources


@dataclass
class Compiled:
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


def phrase(p: str) -> str:
    """One phrase as RE2: its words with any white space between, a word boundary at word-character ends
    (the boundary is ASCII: next to a letter of another script it is looser, never stricter)."""
    words = p.split()
    src = _WS.join(re.escape(w) for w in words)
    left = r"\b" if re.match(r"\w", words[0], re.ASCII) else ""
    right = r"\b" if re.search(r"\w$", words[-1], re.ASCII) else ""
    return left + src + right


def compile_rule(rule: DenylistRule) -> Compiled:
    icase = rule.ignore_case or rule.phrases is not None
    hints = [h.lower() for h in rule.hints or []]
    if rule.phrases is not None:
        alts = [phrase(p) for p in rule.phrases if p.split()]
        src = "(?:" + "|".join(alts) + ")" if alts else _NEVER
        hints = hints or sorted({p.split()[0].lower() for p in rule.phrases if p.split()})
    else:
        src = rule.pattern or _NEVER
    start = linear_re.compile(rule.stream_start, icase) if rule.stream_start else None
    end = linear_re.compile(rule.stream_end, icase) if rule.stream_end else None
    return Compiled(rule, linear_re.compile(src, icase), start, end, tuple(hints))


def partial_source(rule: DenylistRule) -> tuple[str, int]:
    r"""The rule's pattern for partial matching (the ``regex`` package), with the rule's case flag. ``\b``,
    ``\w``, ``\d`` and ``\s`` are ASCII there, as in RE2: with the ``regex`` package's Unicode meaning a
    key right after a letter such as ``é`` would not be held, and would stream out unredacted."""

    flags = regex.IGNORECASE if rule.ignore_case or rule.phrases is not None else 0
    if rule.phrases is not None:
        return phrase_sources(rule.phrases), flags
    return rule.pattern or r"(?!)", flags | regex.ASCII


def hit_opens(rule: DenylistRule) -> bool:
    """Whether the rule's match and its reported part (the ``hit`` group, if any) start together."""
    src = rule.pattern or ""
    return "<hit>" not in src or re.match(r"(?:\(\?[a-zA-Z]+\))?\(\?P?<hit>", src) is not None


@dataclass
class Scan:
    text: str
    hits: dict[str, int] = field(default_factory=dict)
    block: list[Compiled] = field(default_factory=list)
    redacted: bool = False
    edits: list[Edit] = field(default_factory=list)  # the redactions, in offsets of the text scanned


def inside(found: list[tuple[int, int]], pos: int) -> bool:
    """Whether ``pos`` lies in one of ``found`` (non-overlapping matches in text order)."""
    i = bisect.bisect_right(found, (pos, 1 << 62)) - 1
    return i >= 0 and found[i][0] <= pos < found[i][1]


def edits_of(spans: list[tuple[int, int, Compiled]]) -> list[Edit]:
    """The redactions of ``spans`` as edits (guard.screens.edits), in text order, longest first at one start:
    merged (``edits.merge``), a span inside or overlapping an earlier one joins its replacement."""
    return [(a, b, c.replacement) for a, b, c in sorted(spans, key=lambda s: (s[0], -s[1]))]
