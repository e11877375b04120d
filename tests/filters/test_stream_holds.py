"""Holds overlap rather than add up: the relay runs a channel's screens in turn (guard.relay._Chain), each
holding back only from where a match could still be starting in what it was given. For the shipped
screens on the same text, the chain holds what the screen holding most holds alone (the maximum over
the screens), not the sum of what each holds.

Where it is not the maximum: a later screen judges only what an earlier one let through, so when the
earlier one holds a candidate (``sk-...``) and the later one, on the text right before it, holds a
different candidate (a digit group that the candidate's first characters would have ruled out), the two
holds add up until the earlier screen decides; the last test pins that bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from guard.relay import _Chain
from guard.screens.base import StreamScreen
from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import load_denylist
from guard.screens.pii.profile import load_pii_profiles
from guard.screens.pii.screen import PIIScreen
from guard.screens.pii.transform import CTX_KEY, Pseudonyms

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped() -> tuple[DenylistScreen, PIIScreen]:
    deny = DenylistScreen.from_settings(load_denylist(ROOT / "filters" / "denylist.yaml"))
    return deny, PIIScreen(load_pii_profiles(ROOT / "filters" / "pii.yaml")["strict"])


def held(screens: list[StreamScreen], chunks: list[str]) -> int:
    """Characters received and not yet released after the last chunk."""
    chain = _Chain(screens)

    async def go() -> int:
        out = ""
        for c in chunks:
            released, stop = await chain.feed(c)
            assert stop is None
            out += released
        return sum(map(len, chunks)) - len(out)

    return asyncio.run(go())


def pieces(text: str, n: int = 3) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)]


# Each ends in something both shipped screens may have to hold (the last word, a value, a key's start).
ENDINGS = [
    "The report is ready and the numbers look fin",  # the unfinished word: both hold it
    "Please call me back at 555 01",  # a phone number being written
    "The card on file is 4111 1111 11",  # a card number being written
    "Write to ann.lee@mailb",  # an email address being written
    "Use the header Authorization: Bearer abcdefgh",  # a bearer token (denylist) that is also a word (PII)
    "The key is AKIAIOSFOD",  # an AWS key being written
    "Your IBAN DE89 3704 0044",  # an IBAN being written
    "Your address is <EMAIL_ADD",  # a placeholder being restored
]


@pytest.mark.parametrize("text", ENDINGS)
def test_two_screens_holding_the_same_text_hold_it_once(shipped: tuple, text: str) -> None:
    deny, pii = shipped
    for size in (1, 3, 7):

        def alone(s: object, size: int = size) -> int:
            return held([s.open_stream([], {CTX_KEY: Pseudonyms()})], pieces(text, size))  # type: ignore[attr-defined]

        a, b = alone(deny), alone(pii)
        both = held([s.open_stream([], {CTX_KEY: Pseudonyms()}) for s in (deny, pii)], pieces(text, size))
        print(f"{text[-24:]!r} in {size}-char chunks: denylist holds {a}, PII {b}, both in turn {both}")
        assert max(a, b) > 0
        assert both == max(a, b), (a, b, both)  # the maximum, not a + b


def test_where_holds_are_in_different_places_the_excess_is_bounded_and_clears(shipped: tuple) -> None:
    """The denylist holds ``ghp_ab`` (it may become a GitHub token). PII, on the whole text, holds the same
    (an unfinished word); but given only the text before it, PII holds ``DE89 `` too (it may become an
    IBAN; ``_`` rules that out, and PII has not seen it). Together they hold both, never more, until the
    denylist lets go: then PII sees the rest and lets go of the IBAN start at once."""
    deny, pii = shipped
    text = "The IBAN DE89 ghp_ab"
    a = held([deny.open_stream([], {})], pieces(text))
    b = held([pii.open_stream([], {CTX_KEY: Pseudonyms()})], pieces(text))
    chain = _Chain([s.open_stream([], {CTX_KEY: Pseudonyms()}) for s in (deny, pii)])

    async def go() -> tuple[int, str]:
        out = ""
        for c in pieces(text):
            out += (await chain.feed(c))[0]
        before = len(text) - len(out)
        out += (await chain.feed(" is not a token, fine."))[0]
        return before, out

    before, out = asyncio.run(go())
    print(f"alone: denylist {a}, PII {b}; in turn {before}")
    assert max(a, b) < before <= a + b
    assert out.startswith("The IBAN DE89 ghp_ab is not a token,")
