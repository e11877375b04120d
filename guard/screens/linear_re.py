"""The one regular-expression engine for configured patterns: RE2 (google-re2), linear in the text's length.

Python's ``re`` and ``regex`` backtrack: a pattern such as ``BEGIN (x )*KEY[\\s\\S]*?END`` costs quadratic (or
worse) time on hostile text, and a running match cannot be interrupted. RE2 guarantees time linear in the
text for every pattern it accepts, and releases the GIL while it matches. What it does not accept (lookahead,
lookbehind, backreferences, atomic groups, possessive quantifiers) is refused when the configuration loads,
with the reason: :func:`why_refused` says which construct.

A pattern may put the part to report (and redact) in a group named ``hit``: the text around it is then
required but left alone, which is how a lookaround is written for RE2 (``\\bKEY(?P<hit>[0-9a-f]{40})(?:\\W|$)``).

Differences from Python's ``re`` that matter when writing patterns: ``\\w``, ``\\d``, ``\\s`` and ``\\b`` are
ASCII (use ``\\pL``, ``\\pN``, ``\\p{Z}`` for other scripts); ``\\Z`` is spelled ``\\z``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import re2


class Regexp(Protocol):
    """What Guard uses of a compiled RE2 pattern (google-re2 does not export its pattern class)."""

    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def search(self, text: str, pos: int = ..., endpos: int = ...) -> Any: ...

    def fullmatch(self, text: str, pos: int = ..., endpos: int = ...) -> Any: ...

    def finditer(self, text: str, pos: int = ..., endpos: int = ...) -> Iterator[Any]: ...


HIT = "hit"  # the group whose span is the finding, when a pattern defines it

# (construct as written, why RE2 refuses it): checked in order, the first found is named in the error.
_UNSUPPORTED: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"\(\?<?[=!]"),
        (
            "lookaround ((?=, (?!, (?<=, (?<!) is not supported: put the part to report "
            "in a group named 'hit' and match the context around it"
        ),
    ),
    (re.compile(r"\\[1-9]|\(\?P=\w+\)|\\g<"), "backreferences (\\1, (?P=name)) are not supported"),
    (re.compile(r"\(\?>"), "atomic groups ((?>...)) are not supported"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers (*+, ++, ?+) are not supported"),
    (re.compile(r"\\Z"), "\\Z is not supported: use \\z (end of text)"),
    (re.compile(r"\(\?\(|\(\?R|\(\?\d"), "conditionals and recursion are not supported"),
]


class UnsupportedPattern(ValueError):
    """A pattern RE2 cannot run; the message says which construct and why."""


def _options(ignore_case: bool) -> re2.Options:
    o = re2.Options()
    o.log_errors = False  # the error goes into the ConfigError, not to stderr
    o.case_sensitive = not ignore_case
    o.max_mem = 64 << 20  # DFA cache: large alternations stay on the fast path
    return o


def why_refused(pattern: str) -> str | None:
    """None when RE2 runs ``pattern``; otherwise why not, in words a person can act on."""
    try:
        re2.compile(pattern, _options(False))
        return None
    except re2.error as e:
        detail = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
    for rx, reason in _UNSUPPORTED:
        if rx.search(pattern):
            return f"{reason} (the linear-time engine RE2 has no backtracking; see docs/regex.md)"
    return f"invalid regex: {detail} (RE2 syntax, see docs/regex.md)"


def compile(pattern: str, ignore_case: bool = False) -> Regexp:
    """Compile for RE2 or raise UnsupportedPattern with the reason."""
    reason = why_refused(pattern)
    if reason is not None:
        raise UnsupportedPattern(reason)
    compiled: Regexp = re2.compile(pattern, _options(ignore_case))
    return compiled


def check(pattern: str) -> str:
    """A pydantic validator body: the pattern, or ValueError naming what RE2 does not support."""
    reason = why_refused(pattern)
    if reason is not None:
        raise ValueError(reason)
    return pattern


def spans(rx: Regexp, text: str) -> Iterator[tuple[int, int]]:
    """The (start, end) of each match, or of its ``hit`` group where the pattern has one."""
    g = rx.groupindex.get(HIT, 0)
    for m in rx.finditer(text):
        a, b = m.span(g)
        if a >= 0:
            yield a, b
