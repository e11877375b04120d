"""Keeping judged text inert inside Llama Guard's prompt: it must not end the conversation early, forge a turn
or forge the verdict.

Two layers:

* :func:`neutralise_framing` (every backend, applied when the conversation is built): a line of judged text
  that looks like the template's own framing (a ``User:`` / ``Agent:`` turn label, the ``Task:`` line, a
  category line ``S1: ...``, "Provide your safety assessment ...", the verdict instructions) is quoted with
  ``"> "``, and the template's markers ``<BEGIN CONVERSATION>``, ``<END CONVERSATION>``,
  ``<BEGIN UNSAFE CONTENT CATEGORIES>``, ``<END UNSAFE CONTENT CATEGORIES>`` get ``‹ ›`` instead of ``< >``.
  Lines are matched after NFKC folding with format characters (zero-width and the like) removed, so full-width
  or zero-width-split spellings are caught too. The words stay: the classifier still judges all of them.
* :func:`escape_specials` (remote backends): a model server tokenises the prompt it renders with
  special-token parsing on, so ``<|eot_id|>`` typed by a user would become the real end-of-turn token. Every
  ``<|`` and ``|>`` in judged text becomes ``<∣`` / ``∣>`` (U+2223, which NFKC leaves alone), and ``<s>`` /
  ``</s>`` become ``‹s›`` / ``‹/s›``. Llama 3 and 4 special tokens all have the ``<|...|>`` form. The local
  backend keeps the text as it is and tokenises it with special-token parsing off instead
  (:mod:`guard.screens.safety.tokens`).
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata

QUOTE = "> "
BAR = "\u2223"  # DIVIDES: looks like "|", is not "|" after NFKC

_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_BREAK_CHARS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_H = r"[^\S\n]"  # horizontal white space
_MARKER = re.compile(
    rf"<({_H}*/?{_H}*(?:begin|end){_H}+(?:unsafe{_H}+content{_H}+categories|conversation){_H}*)>", re.I
)
_FRAMING_BODY = (
    rf"{_H}*+(?:[-*>•]{_H}*+)*+(?:(?:user|agent|assistant|system|human|task){_H}*:|s\d{{1,3}}{_H}*:"
    rf"|provide{_H}+your{_H}+safety{_H}+assessment|first{_H}+line{_H}+must{_H}+read"
    rf"|if{_H}+unsafe{_H}*,?{_H}*a{_H}+second{_H}+line|<{_H}*/?{_H}*(?:begin|end)\b|<\|)"
)
_FRAMING_NL = re.compile("\n" + _FRAMING_BODY, re.I)  # run over "\n" + text: the literal "\n" is found fast
_NL = re.compile("\n")
# Unicode's format characters (category Cf: zero-width, bidi controls, tags, ...), as of Unicode 15.
_CF = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_SPECIAL = re.compile(r"<\||\|>|<(/?)s>")


def _fold(text: str) -> str:
    """What text looks like to the patterns: NFKC, format characters (category Cf) removed. Neither step adds
    or removes a line break, so line numbers stay."""
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return _CF.sub("", text)


def neutralise_framing(text: str) -> str:
    """Quote lines that look like the prompt template's framing and defuse its markers (see module doc).

    Linear in the text (about 0.4 us a line): whole-text regex passes over its folded form, then only the hit
    lines are touched. Long texts are remembered (a streamed answer's windows are each judged with the same
    prompt)."""
    return _neutralise_long(text) if len(text) >= 4096 else _neutralise(text)


def _neutralise(text: str) -> str:
    ascii_ = text.isascii()
    if any(b in text for b in (_BREAK_CHARS[:6] if ascii_ else _BREAK_CHARS)):  # scans are faster than the sub
        text = _BREAKS.sub("\n", text)
    folded = text if ascii_ else _fold(text)
    starts = [m.start() for m in _FRAMING_NL.finditer("\n" + folded)]  # "\n" at k: line at folded[k:]
    marks = [m.start() for m in _MARKER.finditer(folded)] if "<" in folded else []
    if not starts and not marks:
        return text
    nl = [m.start() for m in _NL.finditer(folded)]
    hit = {bisect.bisect_left(nl, k) for k in starts} | {bisect.bisect_left(nl, p) for p in marks}
    lines = text.split("\n")
    for i in hit:
        lines[i] = QUOTE + _MARKER.sub(lambda m: f"\u2039{m.group(1)}\u203a", lines[i])
    return "\n".join(lines)


_neutralise_long = functools.lru_cache(maxsize=32)(_neutralise)


def escape_specials(text: str) -> str:
    """``<|eot_id|>`` -> ``<∣eot_id∣>``; ``<s>`` -> ``‹s›``: no special-token string survives for a server's
    tokenizer to parse."""

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "<|":
            return "<" + BAR
        if tok == "|>":
            return BAR + ">"
        return f"\u2039{m.group(1)}s\u203a"

    return _SPECIAL.sub(sub, text)
