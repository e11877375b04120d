"""The merge rule of the rewriting response screens' edits (guard/screens/edits.py), and the stream group
that releases what every screen has decided (with real screens in test_stream_holds.py and
test_stream_no_leak.py; here with stand-in screens where a failure must be forced)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.relay import _Chain
from guard.screens.base import Verdict
from guard.screens.edits import Edit, Judged, StreamGroup, apply, merge
from guard.screens.failmode import FailSettings, GuardedScreen


def test_overlapping_edits_replace_their_whole_union() -> None:
    text = "0123456789abcdef"
    deny = [(4, 10, "[D]")]
    pii = [(2, 6, "<P>"), (12, 14, "<Q>")]
    assert merge([deny, pii]) == [(2, 10, "<P>"), (12, 14, "<Q>")]  # the one starting first gives its text
    assert apply(text, merge([deny, pii])) == "01<P>ab<Q>ef"
    # a tie: the longer edit, then the screen configured first
    assert merge([[(2, 5, "A")], [(2, 8, "B")]]) == [(2, 8, "B")]
    assert merge([[(2, 8, "A")], [(2, 8, "B")]]) == [(2, 8, "A")]
    # edits that only touch are both made; a chain of overlaps becomes one
    assert merge([[(0, 2, "A"), (2, 4, "B")]]) == [(0, 2, "A"), (2, 4, "B")]
    assert merge([[(0, 3, "A"), (5, 9, "C")], [(2, 6, "B")]]) == [(0, 9, "A")]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 40), st.integers(1, 12)).map(lambda t: (t[0], t[0] + t[1])), max_size=5),
        min_size=1,
        max_size=3,
    )
)
def test_no_character_an_edit_covers_survives_the_merge(spans: list[list[tuple[int, int]]]) -> None:
    """Whatever the edits of several screens, every character one of them covers is replaced, and every
    other character stays, in order."""
    text = "".join(chr(0x4E00 + i) for i in range(60))  # distinct characters, none in a replacement
    edits: list[list[Edit]] = [[(a, b, f"[{i}]") for a, b in s] for i, s in enumerate(spans)]
    out = apply(text, merge(edits))
    covered = {p for s in spans for a, b in s for p in range(a, b)}
    assert [c for c in out if "\u4e00" <= c <= "\u9fff"] == [text[p] for p in range(60) if p not in covered]
    merged = merge(edits)
    assert all(b1 <= a2 for (_, b1, _), (a2, _, _) in itertools.pairwise(merged))


class _Fake:
    """A stand-in rewriting stream screen: replaces ``word`` with ``#``, holding back a started one and its
    last ``hold`` characters; fails once it has seen ``fail_on``."""

    def __init__(self, word: str, hold: int, fail_on: str | None = None) -> None:
        self.word, self.hold, self.fail_on, self.text, self.decided = word, hold, fail_on, "", 0

    async def judge(self, text: str) -> Judged:
        self.text += text
        if self.fail_on and self.fail_on in self.text:
            raise RuntimeError("backend down")
        return self._upto(max(self.decided, len(self.text) - self.hold))

    async def judge_end(self) -> Judged:
        return self._upto(len(self.text))

    def _upto(self, n: int) -> Judged:
        t, w = self.text, self.word
        for k in range(1, len(w)):  # a word that may still be completing
            if n < len(t) or not t.endswith(w[:k]):
                continue
            n = min(n, len(t) - k)
        found = []
        start = t.find(w)
        while start >= 0:
            if start < n < start + len(w):
                n = start
            found.append((start, start + len(w), "#"))
            start = t.find(w, start + 1)
        edits = [e for e in found if e[0] >= self.decided and e[1] <= n]
        self.decided = max(self.decided, n)
        return Judged(self.decided, edits)


def _run(screens: list[Any], chunks: list[str]) -> tuple[list[str], Verdict | None]:
    chain = _Chain(screens)
    assert isinstance(chain.group, StreamGroup)

    async def go() -> tuple[list[str], Verdict | None]:
        out = []
        for c in chunks:
            got, stop = await chain.feed(c)
            out.append(got)
            if stop is not None:
                return out, stop
        got, stop = await chain.finish()
        return [*out, got], stop

    return asyncio.run(go())


def test_the_group_releases_what_every_screen_decided() -> None:
    out, stop = _run([_Fake("abc", 2), _Fake("xyz", 5)], ["12abc", "34xyz", "56"])
    assert stop is None and "".join(out) == "12#34#56"
    assert out[0] == ""  # the second screen still holds its last five characters


def _guarded(inner: Any, on_error: str) -> Any:
    class _Screen:
        name = "fake"

        def open_stream(self, prompt: Any, ctx: Any, kind: str = "content") -> Any:
            return inner

    return GuardedScreen(_Screen(), FailSettings(on_error=on_error), metrics=False).open_stream([], {})  # type: ignore[arg-type]


def test_a_failing_screen_in_the_group_stops_the_stream_or_passes_as_configured() -> None:
    """``on_error: block``: the stream stops and nothing more goes out, even text another screen decided;
    ``allow``: the failed screen counts everything as decided, the others still hold and rewrite."""
    chunks = ["12abc ", "then boom ", "later abc"]
    out, stop = _run([_Fake("abc", 0), _guarded(_Fake("q", 0, "boom"), "block")], chunks)
    assert stop is not None and stop.blocked and "".join(out) == "12# "
    out, stop = _run([_Fake("abc", 0), _guarded(_Fake("q", 0, "boom"), "allow")], chunks)
    assert stop is None and "".join(out) == "12# then boom later #"
