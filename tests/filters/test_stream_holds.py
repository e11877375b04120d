"""Holds overlap rather than add up: the relay runs a channel's screens in turn (guard.relay._Chain), each
holding back only from where a match could still be starting in what it was given, and a later screen
looks ahead at what an earlier one still holds to decide how much to hold. For the shipped screens on
the same text, the chain holds what the screen holding most holds alone (the maximum over the screens),
never the sum of what each holds: where both hold the same candidate, and where they hold neighbouring
ones (a digit group right before a token's start)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from guard.relay import _Chain
from guard.screens import stream_partial
from guard.screens.base import Segment, StreamScreen
from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import DenylistProfile, DenylistRule, load_denylist
from guard.screens.pii.profile import load_pii_profiles
from guard.screens.pii.screen import PIIScreen
from guard.screens.pii.transform import CTX_KEY, Pseudonyms
from tests.filters.test_stream_no_leak import ENTITIES, SECRETS, WORDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped() -> tuple[DenylistScreen, PIIScreen]:
    deny = DenylistScreen.from_settings(load_denylist(ROOT / "filters" / "denylist.yaml"))
    return deny, PIIScreen(load_pii_profiles(ROOT / "filters" / "pii.yaml")["strict"])


@pytest.fixture(scope="module")
def profiles(shipped: tuple) -> dict[str, tuple[DenylistScreen, PIIScreen]]:
    pii = load_pii_profiles(ROOT / "filters" / "pii.yaml")
    return {name: (shipped[0], PIIScreen(prof)) for name, prof in pii.items()}


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


def test_where_holds_are_in_different_places_the_chain_holds_the_larger_one(shipped: tuple) -> None:
    """The denylist holds ``ghp_ab`` (it may become a GitHub token). PII, given only the text before it,
    would hold ``DE89 `` too (it may become an IBAN); but PII looks ahead at what the denylist holds, and
    no way the denylist may let that text go (as it is, or with a replacement from any point) continues an
    IBAN. So PII releases ``DE89 `` while the denylist still holds its candidate: the chain holds what the
    denylist alone holds, for every chunking, and the rest goes out once the denylist lets go."""
    deny, pii = shipped
    text = "The IBAN DE89 ghp_ab"
    for size in (1, 2, 3, 5, len(text)):
        a = held([deny.open_stream([], {})], pieces(text, size))
        b = held([pii.open_stream([], {CTX_KEY: Pseudonyms()})], pieces(text, size))
        chain = _Chain([s.open_stream([], {CTX_KEY: Pseudonyms()}) for s in (deny, pii)])

        async def go(chain: _Chain = chain, size: int = size) -> tuple[int, str]:
            out = ""
            for c in pieces(text, size):
                out += (await chain.feed(c))[0]
            before = len(text) - len(out)
            out += (await chain.feed(" is not a token, fine."))[0]
            return before, out

        before, out = asyncio.run(go())
        print(f"{size}-char chunks: alone denylist {a}, PII {b}; in turn {before}")
        assert (a, b) == (6, 6)
        assert before == max(a, b)
        assert out.startswith("The IBAN DE89 ghp_ab is not a token,")


def test_the_look_ahead_never_releases_what_the_earlier_screen_still_holds(shipped: tuple) -> None:
    """PII looks at the denylist's held text only to decide how much to hold: a real token after the IBAN
    start is still redacted whole, and the IBAN start right before it goes out as it is."""
    deny, pii = shipped
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    text = f"The IBAN DE89 {token} is it."
    chain = _Chain([s.open_stream([], {CTX_KEY: Pseudonyms()}) for s in (deny, pii)])

    async def go() -> str:
        out = ""
        for c in pieces(text, 2):
            got, stop = await chain.feed(c)
            assert stop is None
            out += got
            assert "ghp_" not in out
        return out + (await chain.finish())[0]

    out = asyncio.run(go())
    assert token not in out and "ghp_a1" not in out
    assert out.startswith("The IBAN DE89 [REDACTED") and out.endswith(" is it.")


def _unchanged(screen: object, text: str) -> bool:
    segs = [Segment(text, "assistant", "content", ())]
    v = asyncio.run(screen.screen_response(segs, [], {CTX_KEY: Pseudonyms()}))  # type: ignore[attr-defined]
    return not v.blocked and segs[0].text == text


def _cut_short(values: list[str], longest: int = 12) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(values), st.integers(1, longest)).map(lambda v: v[0][: v[1]])


@pytest.fixture(scope="module", autouse=True)
def unhurried() -> Iterator[None]:
    """Partial matching that runs out of time holds everything (test_stream_no_leak.py checks that); these
    tests count what the logic holds, so a busy test machine must not turn that fallback on."""
    saved = stream_partial.TIMEOUT_S, stream_partial.BUDGET_S
    stream_partial.TIMEOUT_S, stream_partial.BUDGET_S = 5.0, 10.0
    yield
    stream_partial.TIMEOUT_S, stream_partial.BUDGET_S = saved


def _whole(pair: tuple[DenylistScreen, PIIScreen], text: str) -> str:
    segs = [Segment(text, "assistant", "content", ())]
    ctx = {CTX_KEY: Pseudonyms()}
    for s in pair:
        v = asyncio.run(s.screen_response(segs, [], ctx))
        assert not v.blocked
    return segs[0].text


def _through(screens: list[StreamScreen], chunks: list[str]) -> tuple[list[int], str]:
    """What the chain holds after each chunk, and all it lets out once the stream ends."""
    chain = _Chain(screens)

    async def go() -> tuple[list[int], str]:
        out, holds, seen = "", [], 0
        for c in chunks:
            got, stop = await chain.feed(c)
            assert stop is None
            out, seen = out + got, seen + len(c)
            holds.append(seen - len(out))
        got, stop = await chain.finish()
        assert stop is None
        return holds, out + got

    return asyncio.run(go())


# A complete value with fewer than 24 characters after it in what PII has been given, and more held by
# the denylist: PII settles it from every way the denylist may let its text go.
SETTLED = [
    ("Try 555 0100 then use the key ghp_a1B2c3D4e5F6", "a phone-shaped number below the threshold"),
    ("Try 555 0100 eyJhbGciOiJIUzI1NiJ9abcdef", "the same, right before a token with the shortest replacement"),
    ("Card 4111 1111 1111 1112 ok, then sk-proj-abcdefgh", "a card-shaped number failing Luhn"),
    ("IBAN DE89 3704 0044 0532 0130 01 and xoxb-123456789", "an IBAN-shaped code failing its check"),
    ("SSN 536-90-4399 is not it, xoxb-12345", "a number redacted later in the text"),
    ("staff EMP-123407 eyJhbGciOiJIUzI1NiJ9abcdefgh", "a pii.yaml recognizer's value failing its check"),
]


@pytest.mark.parametrize(("text", "what"), SETTLED)
def test_a_complete_value_is_settled_without_waiting_for_the_denylist(shipped: tuple, text: str, what: str) -> None:
    """The case where the holds used to add up: PII waits for 24 characters after a complete value (a label
    word there may raise its score), and the denylist holds some of them. Here PII scans the value with
    every way the denylist may let its held text go (as it is, or a redaction from where a secret could
    start), each bringing more than the characters the value's recognizers read after it, and releases
    it at once since they agree: after every chunk the chain holds at most what the screen holding most
    holds alone. What the client gets in the end is the answer screened whole."""
    deny, pii = shipped

    def open_(s: object) -> StreamScreen:
        return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

    for size in (1, 2, 3, 5, 8):
        chunks = pieces(text, size)
        both, out = _through([open_(deny), open_(pii)], chunks)
        alone_a, _ = _through([open_(deny)], chunks)
        alone_b, _ = _through([open_(pii)], chunks)
        for k, (x, a, b) in enumerate(zip(both, alone_a, alone_b, strict=True)):
            assert x <= max(a, b), (what, size, chunks[: k + 1], a, b, x)
        assert out == _whole((deny, pii), text), (what, size)


def test_when_the_outcomes_disagree_the_value_is_held_and_screened_whole(shipped: tuple) -> None:
    """A denylist rule whose match starts with a label word (``office-key-...``): left as it is, ``office``
    after the number makes it a phone number; redacted, it does not. PII cannot settle the number, so it
    holds it until the denylist decides, and the client gets the answer screened whole either way. PII
    alone holds it too (fewer than 24 characters follow it), so the chain still holds no more than it."""
    pii = shipped[1]
    rule = DenylistRule(name="office_key", pattern=r"office-key-[0-9]{8}", hints=["office-key-"])
    deny = DenylistScreen(DenylistProfile(rules=[rule]))
    assert _unchanged(pii, "Try 555 0100 now") and not _unchanged(pii, "Try 555 0100 office")
    for text in ("Try 555 0100 office-key-12345678 now", "Try 555 0100 office-key-1 is gone"):
        for size in (1, 3, 7):
            chunks = pieces(text, size)

            def open_(s: object) -> StreamScreen:
                return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

            both, out = _through([open_(deny), open_(pii)], chunks)
            alone_a, _ = _through([open_(deny)], chunks)
            alone_b, _ = _through([open_(pii)], chunks)
            assert all(x <= max(a, b) for x, a, b in zip(both, alone_a, alone_b, strict=True)), (text, size)
            assert out == _whole((deny, pii), text), (text, size)
    assert "555 0100" in _whole((deny, pii), "Try 555 0100 office-key-12345678 now")
    assert "555 0100" not in _whole((deny, pii), "Try 555 0100 office-key-1 is gone")


def test_a_value_right_before_an_open_key_block_is_settled_at_once(shipped: tuple) -> None:
    """A number written right against a private key's BEGIN line: as written it is no SSN (``-`` follows),
    after the key's redaction it is one (``[`` follows). An open block is redacted whatever comes next (its
    END line, the cap or the answer's end all close it), so the denylist tells PII the as-written way is
    gone: the number is redacted and released at once, and the chain holds only what the denylist holds."""
    deny, pii = shipped
    text, key = "My SSN 536-90-4399-----BEGIN RSA PRIVATE KEY-----\nMIIEow", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow"

    def open_(s: object) -> StreamScreen:
        return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

    whole = _whole((deny, pii), text)
    assert "536-90-4399" not in whole and whole.endswith("[REDACTED:private_key_block]")
    for size in (1, 4, len(text)):
        chunks = pieces(text, size)
        assert held([open_(deny)], chunks) == len(key)

        async def go(chain: _Chain, chunks: list[str]) -> str:
            out = ""
            for c in chunks:
                got, _ = await chain.feed(c)
                out += got
            return out

        released = asyncio.run(go(_Chain([open_(deny), open_(pii)]), chunks))
        assert released == whole[: -len("[REDACTED:private_key_block]")], (size, released)


RESIDUAL = [
    # (text, the value, what the denylist holds after it)
    (
        "call (212) 555-7788https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
        "(212) 555-7788",
        "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
    ),
]


@pytest.mark.parametrize(("text", "value", "key"), RESIDUAL)
def test_a_value_read_differently_before_and_after_a_redaction_waits(
    shipped: tuple, text: str, value: str, key: str
) -> None:
    """The one case where the chain holds more than either screen alone: a number written right against the
    start of a key that may or may not complete (``(212) 555-7788https://hooks.slack.com/...``). As written,
    the letter after it makes it no phone number, so PII alone lets it go; the denylist holds the key's
    start, and if the key completes and is redacted, the number is followed by ``[`` and is one, so the
    answer screened whole redacts it. Which of the two it is depends on text the model has not written yet:
    no screen can release the number before the denylist decides without the client seeing something other
    than the answer screened whole. The chain holds the value plus what the denylist holds, and what the
    client gets in the end is the answer screened whole."""
    deny, pii = shipped

    def open_(s: object) -> StreamScreen:
        return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

    assert _unchanged(pii, text)  # as written, PII finds nothing
    for size in (1, 4, len(text)):
        chunks = pieces(text, size)
        a, b = held([open_(deny)], chunks), held([open_(pii)], chunks)
        both, out = _through([open_(deny), open_(pii)], chunks)
        assert a == len(key) and b < len(key)
        assert both[-1] == len(value) + a
        assert out == _whole((deny, pii), text) and value not in out


def _ex(profile: str, before: str, sep: str, token: str, size: int) -> Callable[[Any], Any]:
    """An example of ``before`` (ending in a complete value or a value's start), ``sep``, a key's start."""
    return example(profile=profile, parts=[before], seps=[""] * 8, tail=("", sep, token), size=size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    profile=st.sampled_from(["default", "strict"]),
    parts=st.lists(st.one_of(st.sampled_from(WORDS), _cut_short(SECRETS + ENTITIES)), max_size=6),
    seps=st.lists(st.sampled_from([" ", "", "\n", ", "]), min_size=8, max_size=8),
    tail=st.tuples(_cut_short(ENTITIES + WORDS), st.sampled_from([" ", "", "\n"]), _cut_short(SECRETS + WORDS, 40)),
    size=st.integers(1, 9),
)
@example(profile="strict", parts=["The", "IBAN"], seps=[" "] * 8, tail=("DE89", " ", "ghp_ab"), size=3)
@example(profile="strict", parts=["b_o+x@", "<EMAIL_ADDRESS_1>"], seps=[" "] * 8, tail=("a", " ", "AKIA"), size=1)
# a complete value with fewer than 24 characters after it, some held by the denylist (the holds once added up)
@_ex("default", "536-90-4399IBAN\nsupport@e<EMAIL_AD", "\n", "xox", 5)
@_ex("strict", "(21, \n eyJb_o+x@subgh please, 2001:db8:", " ", "-----B", 5)
@_ex("strict", "jane., gl b_o+x@s\nnumberann. ok.\n<EMAIL_", " ", "ghp_a1B2", 6)
@_ex("strict", "-card is, 536 90sk_live_51the, 536 9", " ", "AIzaSy", 3)
@_ex("strict", "<PHONE_NUMBER_1>ok.EM(212) 555-7 gh\nsk", " ", "Bearer", 6)
@_ex("strict", "2001:, bearer<\n\n", " ", "eyJhbGciOiJI", 2)
@_ex("default", "reportok., (see\n<PHONE_NUMBER_1> token, sk\n2001:DB8::FF", "\n", "aws_s", 3)
@_ex("strict", "4012.8888+1 415-55\ngit(212)  the", " ", "536-eyJhbGciOiJ", 6)
@_ex("strict", "Try 555 0100 then use the key", " ", "ghp_a1B2c3D4", 4)
@_ex("strict", "Try 555 0100", " ", "eyJhbGciOiJIUzI1NiJ9abcdef", 1)
@_ex("strict", "Card 4111 1111 1111 1112 ok,", " ", "sk-proj-abcdefgh", 2)
@_ex("strict", "IBAN DE89 3704 0044 0532 0130 01 and", " ", "xoxb-1234", 3)
@_ex("strict", "(212) 555-7788 x", " ", "glpat-xY3k9Lm2", 5)
@_ex("strict", "staff EMP-123407", " ", "eyJhbGciOiJIUzI1NiJ9abcdefgh", 2)
@_ex("strict", "eyJ\n401 SSN, key: card 40128888", "", "https:/", 4)  # as written, no number; redacted, too few digits
# the one exception: a number right against a key's start reads differently as written and redacted
@_ex("strict", "call (212) 555-77", "", "https://hooks.slack.com/services/T000/B0", 3)
def test_the_chain_never_holds_more_than_the_screen_holding_most(
    profiles: dict, profile: str, parts: list[str], seps: list[str], tail: tuple[str, str, str], size: int
) -> None:
    """Prose, values and keys cut short, ending in two undecided candidates side by side (a value's start,
    then a key's start), in any chunking: what the chain holds is at most what the screen holding most
    holds alone. Texts that a screen rewrites are left out (the held count is a count of characters, and
    a rewrite changes it).

    One case is bounded by the value plus the denylist's hold instead, and only this one: PII holds a
    complete value whose reading depends on what the denylist does with the text right after it (as
    written, ``-`` or a letter there makes the number no value; replaced by ``[REDACTED:...]`` it is one).
    Until the denylist decides, neither releasing the value as it is nor redacted equals the answer
    screened whole; PII alone, which never sees a redaction, reads the value as written and lets it go.
    The check below is exact about it: the value PII holds from is read differently in the ways the
    denylist may let its text go (test_a_value_read_differently_before_and_after_a_redaction_waits)."""
    deny, pii = profiles[profile]
    text = "".join(p + s for p, s in zip(parts, seps, strict=False)) + "".join(tail)
    assume(_unchanged(deny, text) and _unchanged(pii, text))
    chunks = pieces(text, size)

    def open_(s: object) -> StreamScreen:
        return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

    alone = open_(deny)
    a, b = held([alone], chunks), held([open_(pii)], chunks)
    both = held([open_(deny), open_(pii)], chunks)
    if both <= max(a, b):
        return
    window, ahead = text[: len(text) - a], alone.ahead()
    assert ahead is not None and ahead.text == text[len(text) - a :]
    start = len(text) - both  # where PII's hold begins
    read = {
        frozenset((f.entity_type, f.end) for f in pii.profile.findings(window + way, []) if f.start == start)
        for way in ahead.outcomes(24)
    }
    assert len(read) > 1, (text, size, a, b, both)
