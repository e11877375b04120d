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
  (:mod:`guard.filters.llama_guard_tokens`).
"""
from __future__ import annotations

import re
import unicodedata

QUOTE = "> "
BAR = "\u2223"  # DIVIDES: looks like "|", is not "|" after NFKC

_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_MARKER = re.compile(r"<(\s*/?\s*(?:begin|end)\s+(?:unsafe\s+content\s+categories|conversation)\s*)>", re.I)
_FRAMING = re.compile(
    r"\s*(?:[-*>•]\s*)*(?:(?:user|agent|assistant|system|human|task)\s*:|s\d{1,3}\s*:"
    r"|provide\s+your\s+safety\s+assessment|first\s+line\s+must\s+read|if\s+unsafe\s*,?\s*a\s+second\s+line"
    r"|<\s*/?\s*(?:begin|end)\b|<\|)", re.I)
_SPECIAL = re.compile(r"<\||\|>|<(/?)s>")


def _fold(line: str) -> str:
    """What a line looks like to a pattern: NFKC, format characters (category Cf) removed."""
    s = unicodedata.normalize("NFKC", line)
    return "".join(ch for ch in s if unicodedata.category(ch) != "Cf")


def neutralise_framing(text: str) -> str:
    """Quote lines that look like the prompt template's framing and defuse its markers (see module doc)."""
    text = _BREAKS.sub("\n", text)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        folded = _fold(line)
        hit = _FRAMING.match(folded) or _MARKER.search(folded)
        line = _MARKER.sub(lambda m: f"\u2039{m.group(1)}\u203a", line)
        lines[i] = QUOTE + line if hit else line
    return "\n".join(lines)


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
