"""Response screens that rewrite text (the denylist, PII) judge the answer as the model wrote it and report
edits: ``(start, end, replacement)`` in offsets of that text. One rule merges the edits of all of them, for
a whole answer (``screen_answer``) and a streamed one (``StreamGroup``) alike, so the two stay equal.

The merge rule: edits that overlap (one starts before another ends) are replaced by one edit covering
their union, whose replacement is that of the edit starting first (on a tie the longer one, then the one
of the screen configured first, then the one its screen reported first). Everything an edit covers is
replaced in every case, so a secret or value can never come through a merge: at worst it is replaced by
another screen's replacement. Edits that only touch (one ends where the next starts) are both applied.

No screen's reading depends on another's rewrite, so in a stream each screen decides on its own how far it
has judged the text (``decided``), and the group releases the text before the earliest of those points:
what the group holds back is what the screen holding most holds alone. Screens that do not rewrite (Llama
Guard) run after the group, on its merged output, so they never read what a rewriting screen removed.
JSON text (tool-call arguments, tool results) goes the same way: its screens read it as written (decoded
where they read strings) and report edits in offsets of the text as written (guard.screens.json_text_stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guard.screens.base import Segment, StreamStep, Verdict

Edit = tuple[int, int, str]  # start, end (offsets in the text as written), replacement


def merge(per_screen: Sequence[Sequence[Edit]]) -> list[Edit]:
    """The edits of several screens (in the configured order) as one list of disjoint edits, in text order:
    overlapping edits become one covering their union, with the replacement of the one starting first
    (then the longer, then the earlier screen, then the earlier reported)."""
    ranked = sorted(
        (a, -b, i, j, r) for i, edits in enumerate(per_screen) for j, (a, b, r) in enumerate(edits) if b > a
    )
    out: list[Edit] = []
    for a, neg_b, _, _, r in ranked:
        b = -neg_b
        if out and a < out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b, out[-1][2])
            continue
        out.append((a, b, r))
    return out


def apply(text: str, edits: Sequence[Edit], base: int = 0) -> str:
    """``text`` (which starts at offset ``base``) with disjoint, ordered ``edits`` made."""
    out, pos = [], 0
    for a, b, r in edits:
        out.append(text[pos : a - base])
        out.append(r)
        pos = b - base
    out.append(text[pos:])
    return "".join(out)


def release_upto(edits: list[list[Edit]], text: str, base: int, upto: int) -> tuple[str, list[list[Edit]], str, int]:
    """Held stream text (``text``, starting at offset ``base``) let go up to ``upto`` with the screens'
    ``edits`` (a list per screen) merged and made, never cut through a merged edit: (the text that may go,
    each screen's edits still pending, the text still held, its offset). Nothing goes ("") when ``upto``,
    moved back to the start of an edit crossing it, is not past ``base``."""
    merged = merge(edits)
    for a, b, _ in merged:
        if a < upto < b:
            upto = a  # never cut through a merged edit
            break
    if upto <= base:
        return "", edits, text, base
    out = apply(text[: upto - base], [e for e in merged if e[1] <= upto], base)
    return out, [[e for e in lst if e[0] >= upto] for lst in edits], text[upto - base :], upto


def rewrites(screen: Any) -> bool:
    """Whether a response screen (or its fail-mode wrapper) reports edits (``screen_edits``)."""
    fn = getattr(screen, "rewrites", None)
    return bool(fn()) if callable(fn) else hasattr(screen, "screen_edits")


async def screen_answer(
    screens: Sequence[Any], segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]
) -> list[Verdict]:
    """A whole answer through the response screens, as its stream goes through them (``StreamGroup``): the
    leading screens that report edits read every segment as written (``screen_edits``; JSON-text segments
    too), their edits are merged and made; the other screens then read the result in turn. Stops at the
    first blocking verdict (the segments are then left as they are). The verdicts, in order."""
    k = 0
    while k < len(screens) and rewrites(screens[k]):
        k += 1
    verdicts: list[Verdict] = []
    per_seg: list[list[list[Edit]]] = [[] for _ in segments]
    for s in screens[:k]:
        v, edits = await s.screen_edits(segments, prompt, ctx)
        verdicts.append(v)
        if v.blocked:
            return verdicts
        if edits is not None:
            for i, e in enumerate(edits):
                per_seg[i].append(e)
    for seg, lists in zip(segments, per_seg, strict=True):
        merged = merge(lists)
        if merged:
            seg.text = apply(seg.text, merged)
    for s in screens[k:]:
        v = await s.screen_response(segments, prompt, ctx)
        verdicts.append(v)
        if v.blocked:
            break
    return verdicts


@dataclass
class Judged:
    """What a rewriting stream screen has decided after a feed: the text before ``decided`` (an offset in
    the channel's text as written) is judged for good, ``edits`` are its new edits (all before
    ``decided``); ``stop``: the stream must end, and the text before ``stop_at`` (None: nothing more) may
    still go out."""

    decided: int
    edits: list[Edit] = field(default_factory=list)
    stop: Verdict | None = None
    stop_at: int | None = None


class StreamGroup:
    """The rewriting screens of one channel, each judging the text as written (``judge``/``judge_end``).
    Keeps the text not yet released and the edits reported for it; releases the text before the earliest
    point every screen has decided (moved back to the start of a merged edit that crosses it), with the
    merged edits made."""

    def __init__(self, screens: Sequence[Any]) -> None:
        self.screens = list(screens)
        self.text = ""  # the text as written from ``base`` on, not yet released
        self.base = 0
        self.decided = [0] * len(self.screens)
        self.edits: list[list[Edit]] = [[] for _ in self.screens]

    async def feed(self, text: str) -> StreamStep:
        if not text:
            return StreamStep()
        self.text += text
        for i, s in enumerate(self.screens):
            got = await s.judge(text)
            if self._note(i, got):
                return self._stop(i, got)
        return StreamStep(release=self._release(min(self.decided)))

    async def finish(self) -> StreamStep:
        for i, s in enumerate(self.screens):
            got = await s.judge_end()
            if self._note(i, got):
                return self._stop(i, got)
        return StreamStep(release=self._release(self.base + len(self.text)))

    def _note(self, i: int, got: Judged) -> bool:
        self.edits[i].extend(got.edits)
        self.decided[i] = max(self.decided[i], got.decided)
        return got.stop is not None

    def _stop(self, i: int, got: Judged) -> StreamStep:
        """A screen stops: what every screen has decided before its stop point goes out, merged."""
        at = self.base if got.stop_at is None else got.stop_at
        return StreamStep(release=self._release(min(at, *self.decided)), stop=got.stop)

    def _release(self, upto: int) -> str:
        out, self.edits, self.text, self.base = release_upto(self.edits, self.text, self.base, upto)
        return out
