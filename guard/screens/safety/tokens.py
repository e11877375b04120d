"""Token ids for the local backend in which special tokens come only from the prompt template.

The template is rendered once with a random placeholder in place of each turn's text. The special-token
strings of that rendering are the template's own; the text between them is tokenised with special-token
parsing off (``split_special_tokens=True``) after the placeholders are replaced by the turns' text. For an
ordinary conversation the ids are exactly those of tokenising the whole rendering (a fast tokenizer splits at
special tokens first, too); for text that spells ``<|eot_id|>`` they are the ids of the characters.

Checks that fail closed (:class:`~guard.screens.failmode.ScreenError`): the template must render every turn's
text; no id that comes from text may be a special token's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from guard.screens.failmode import ScreenError
from guard.screens.safety.llama_guard import Turn

Piece = str | int  # text to tokenise, or a special token id placed by the template


@dataclass(frozen=True)
class Specials:
    ids: dict[str, int]  # every special token's string -> its id
    split: re.Pattern[str]  # finds them in a rendering (longest first)

    @property
    def forbidden(self) -> frozenset[int]:
        return frozenset(self.ids.values())


def special_ids(tokenizer: Any) -> Specials:
    """Every special token of the tokenizer (added tokens marked special, and the named ones)."""
    out = {
        str(t.content): int(i)
        for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
        if getattr(t, "special", False)
    }
    for tok in getattr(tokenizer, "all_special_tokens", []) or []:
        i = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(i, int) and i >= 0:
            out.setdefault(str(tok), i)
    alts = "|".join(re.escape(s) for s in sorted(out, key=len, reverse=True) if s)
    return Specials(out, re.compile(alts or r"(?!)"))


def pieces(render: Callable[[Sequence[Turn]], str], turns: Sequence[Turn], specials: Specials) -> list[Piece]:
    """The rendered prompt as text pieces and the template's special token ids, in order."""
    tag = secrets.token_hex(8)
    marks = [f"\ue000{tag}.{i}\ue001" for i in range(len(turns))]
    frame = render([Turn(t.role, m) for t, m in zip(turns, marks, strict=False)])
    for m in marks:
        if m not in frame:
            raise ScreenError("the prompt template does not render every turn")
    texts = {m: t.content.strip() for m, t in zip(marks, turns, strict=False)}  # as the template would (trim / strip)
    fill = re.compile("|".join(re.escape(m) for m in marks)) if marks else None
    out: list[Piece] = []
    pos = 0
    for hit in specials.split.finditer(frame):
        out.append(frame[pos : hit.start()])
        out.append(specials.ids[hit.group(0)])
        pos = hit.end()
    out.append(frame[pos:])
    return [fill.sub(lambda m: texts[m.group(0)], p) if isinstance(p, str) and fill else p for p in out if p != ""]


def encode(tokenizer: Any, prompts: Sequence[Sequence[Piece]], specials: Specials) -> list[list[int] | ScreenError]:
    """Token ids of each prompt (one tokenizer call for every text piece, special-token parsing off), or a
    ScreenError for a prompt whose text came out as a special token id (a tokenizer that ignored the flag)."""
    texts = [p for ps in prompts for p in ps if isinstance(p, str)]
    ids = iter(tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else [])
    forbidden = specials.forbidden
    out: list[list[int] | ScreenError] = []
    for ps in prompts:
        seq: list[int] = []
        bad = False
        for p in ps:
            if isinstance(p, int):
                seq.append(p)
                continue
            chunk = list(next(ids))
            bad = bad or bool(forbidden.intersection(chunk))
            seq.extend(chunk)
        out.append(ScreenError("text tokenised to a special token id") if bad else seq)
    return out
