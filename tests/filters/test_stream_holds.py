"""Holds overlap rather than add up: the relay runs a channel's rewriting screens as one group
(guard.relay._Chain, guard.screens.edits.StreamGroup), each reading the text as the model wrote it and
holding back only from where a match could still be starting; the group releases what every screen has
decided, with their edits merged. For the shipped screens on the same text, the chain holds what the
screen holding most holds alone (the maximum over the screens), never the sum of what each holds: where
both hold the same candidate, where they hold neighbouring ones (a digit group right before a token's
start), and where a value is written right against a key's start."""

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
from guard.screens.edits import screen_answer
from guard.screens.pii.profile import load_pii_profiles
from guard.screens.pii.screen import PIIScreen
from guard.screens.pii.transform import CTX_KEY, Pseudonyms
from tests.filters.test_stream_no_leak import ENTITIES, SECRETS, WORDS, json_string

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
    """Characters received and not yet released after the last chunk (counted in the text as written: a
    redaction's length is not the secret's)."""
    return _through(screens, chunks)[0][-1]


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
    """The denylist holds ``ghp_ab`` (it may become a GitHub token). PII reads the same text as written:
    ``DE89 ghp_ab`` can no longer become an IBAN, so it holds only ``ghp_ab`` (an unfinished word). The
    chain holds what the denylist alone holds, for every chunking, and the rest goes out once the
    denylist lets go."""
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


def test_the_group_never_releases_what_one_screen_still_holds(shipped: tuple) -> None:
    """PII has decided ``ghp_`` long before the denylist has: a real token after the IBAN start is still
    held and redacted whole, and the IBAN start right before it goes out as it is."""
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
    """The answer screened whole, as Guard screens a non-streamed answer (guard.screens.edits.screen_answer)."""
    segs = [Segment(text, "assistant", "content", ())]
    verdicts = asyncio.run(screen_answer(list(pair), segs, [], {CTX_KEY: Pseudonyms()}))
    assert not any(v.blocked for v in verdicts)
    return segs[0].text


def _through(screens: list[StreamScreen], chunks: list[str]) -> tuple[list[int], str]:
    """What the chain holds after each chunk (characters of the text as written that it has not released),
    and all it lets out once the stream ends."""
    chain = _Chain(screens)
    assert chain.group is not None and not chain.rest  # every screen here rewrites: one group

    async def go() -> tuple[list[int], str]:
        out, holds, seen = "", [], 0
        for c in chunks:
            got, stop = await chain.feed(c)
            assert stop is None
            out, seen = out + got, seen + len(c)
            holds.append(seen - chain.group.base)
        got, stop = await chain.finish()
        assert stop is None
        return holds, out + got

    return asyncio.run(go())


# A complete value with fewer than 24 characters after it, then a key's start the denylist holds.
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
    """PII waits for 24 characters after a complete value (a label word there may raise its score), and the
    denylist holds a key's start among them. Each reads the text as written, so neither waits for the
    other: after every chunk the chain holds at most what the screen holding most holds alone. What the
    client gets in the end is the answer screened whole."""
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


def test_a_rule_whose_match_starts_with_a_label_word_changes_nothing_for_pii(shipped: tuple) -> None:
    """A denylist rule whose match starts with a label word (``office-key-...``) right after a phone number:
    PII reads the text as written, where ``office`` follows the number, whether or not the key completes;
    the denylist redacts the key. Neither screen waits for the other, and the client gets the answer
    screened whole."""
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
    assert _whole((deny, pii), "Try 555 0100 office-key-12345678 now") == "Try <PHONE_NUMBER> [REDACTED:office_key] now"
    assert "555 0100" not in _whole((deny, pii), "Try 555 0100 office-key-1 is gone")


def test_a_value_right_before_an_open_key_block_is_read_as_written(shipped: tuple) -> None:
    """A number written right against a private key's BEGIN line: as written it is no SSN (``-`` follows
    the digits). PII reads it so and lets it go at once, and the chain holds only what the denylist holds
    (the open block, redacted whole in the end)."""
    deny, pii = shipped
    text, key = "My SSN 536-90-4399-----BEGIN RSA PRIVATE KEY-----\nMIIEow", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow"

    def open_(s: object) -> StreamScreen:
        return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

    whole = _whole((deny, pii), text)
    assert whole == "My SSN 536-90-4399[REDACTED:private_key_block]"
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


def _own_rule(pattern: str, replacement: str | None = None) -> DenylistScreen:
    """The shipped denylist with one rule of one's own added."""
    shipped = load_denylist(ROOT / "filters" / "denylist.yaml").profile(None)
    rule = DenylistRule(name="own", pattern=pattern, replacement=replacement)
    return DenylistScreen(DenylistProfile(**{**shipped.model_dump(), "rules": [*shipped.rules, rule]}))


# A value written right against something the denylist holds, whose reading as written differs from its
# reading once the denylist's replacement follows it: once the chain held the value plus the key.
AGAINST = [
    # (text, the denylist: None for the shipped one, or (pattern, replacement) of a rule of one's own)
    ("call (212) 555-7788https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX", None),
    ("call (212) 555-7788https://hooks.slack.com/services/T000/B00 is not a hook", None),
    ("host fe80::ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8 is up", None),
    ("host fe80::AKIAIOSFODNN7EXAMPLE is up", None),
    ("staff EMP-123406office-key-12345678 now", (r"office-key-[0-9]{8}", None)),
    ("id EMP-123406 badge-key-12345678 now", (r"badge-key-[0-9]{8}", None)),
    ("id EMP-123406badge-key-12345678 now", (r"badge-key-[0-9]{8}", "")),
    ("Try 555 0100 tok-12345678 office", (r"tok-[0-9]{8}", "#")),
    ("Try 555 0100tok-12345678 office", (r"tok-[0-9]{8}", "")),
]


@pytest.mark.parametrize(("text", "own"), AGAINST)
def test_a_value_against_a_key_start_is_released_at_once(
    shipped: tuple, text: str, own: tuple[str, str | None] | None
) -> None:
    """Each screen reads the text as the model wrote it, so PII decides a value written right against the
    start of a key (``(212) 555-7788https://hooks.slack.com/...``: as written, the letter after the digits
    makes them no phone number) without waiting for the denylist: after every chunk the chain holds at
    most what the screen holding most holds alone, and what the client gets is the answer screened whole
    (which keeps ``555-7788`` as written)."""
    pii = shipped[1]
    deny = shipped[0] if own is None else _own_rule(*own)

    def open_(s: object) -> StreamScreen:
        return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

    whole = _whole((deny, pii), text)
    for size in (1, 2, 4, len(text)):
        chunks = pieces(text, size)
        both, out = _through([open_(deny), open_(pii)], chunks)
        alone_a, _ = _through([open_(deny)], chunks)
        alone_b, _ = _through([open_(pii)], chunks)
        for k, (x, a, b) in enumerate(zip(both, alone_a, alone_b, strict=True)):
            assert x <= max(a, b), (text, size, chunks[: k + 1], a, b, x)
        assert out == whole, (text, size)
    if text.startswith("call"):
        assert "(212) 555-7788" in whole and "hooks.slack.com/services/T000/B000/X" not in whole


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
@_ex("strict", "eyJ\n401 SSN, key: card 40128888", "", "https:/", 4)
@_ex("strict", "call (212) 555-77", "", "https://hooks.slack.com/services/T000/B0", 3)
@_ex("strict", "call (212) 555-7788", "", "https://hooks.slack.com/services/T000/B0", 1)
@_ex("strict", "host fe80::", "", "ghp_a1B2c3D4", 2)
def test_the_chain_never_holds_more_than_the_screen_holding_most(
    profiles: dict, profile: str, parts: list[str], seps: list[str], tail: tuple[str, str, str], size: int
) -> None:
    """Prose, values and keys cut short, ending in two undecided candidates side by side (a value's start,
    then a key's start), in any chunking: what the chain holds is at most what the screen holding most
    holds alone, with no exception (a value written right against a key's start included). Texts that a
    screen rewrites are left out (the held count is a count of characters, and a rewrite changes it)."""
    deny, pii = profiles[profile]
    text = "".join(p + s for p, s in zip(parts, seps, strict=False)) + "".join(tail)
    assume(_unchanged(deny, text) and _unchanged(pii, text))
    chunks = pieces(text, size)

    def open_(s: object) -> StreamScreen:
        return s.open_stream([], {CTX_KEY: Pseudonyms()})  # type: ignore[attr-defined]

    a, b = held([open_(deny)], chunks), held([open_(pii)], chunks)
    both = held([open_(deny), open_(pii)], chunks)
    assert both <= max(a, b), (text, size, a, b, both)


# --- tool-call arguments: JSON text, the same holds -------------------------------------------------------


def _args_through(pair: tuple[DenylistScreen, PIIScreen], which: str, chunks: list[str]) -> list[int]:
    """What a tool call's argument channel holds after each chunk (in the text as written), with both
    screens (``which`` = "both") or one of them alone."""
    chosen = {"both": pair, "deny": pair[:1], "pii": pair[1:]}[which]
    return _through([s.open_stream([], {CTX_KEY: Pseudonyms()}, kind="tool_arguments") for s in chosen], chunks)[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    profile=st.sampled_from(["default", "strict"]),
    parts=st.lists(st.one_of(st.sampled_from(WORDS), _cut_short(SECRETS + ENTITIES)), max_size=6),
    seps=st.lists(st.sampled_from([" ", "", "\n", ", "]), min_size=8, max_size=8),
    tail=st.tuples(_cut_short(ENTITIES + WORDS), st.sampled_from([" ", "", "\n"]), _cut_short(SECRETS + WORDS, 40)),
    escaped=st.sets(st.integers(min_value=0, max_value=120), max_size=8),
    size=st.integers(1, 9),
)
@example(
    profile="strict",
    parts=["Try", "555", "0100", "then", "use", "the", "key"],
    seps=[" "] * 8,
    tail=("", "", "ghp_a1B2"),
    escaped=set(),
    size=1,
)
@example(
    profile="strict",
    parts=["Try", "555", "0100", "then", "use", "the", "key"],
    seps=[" "] * 8,
    tail=("", "", "ghp_a1B2"),
    escaped={30, 31, 33},
    size=2,
)
@example(
    profile="strict",
    parts=["call", "(212)"],
    seps=[" "] * 8,
    tail=("555-7788", "", "https://hooks.slack.com/services/T000/B0"),
    escaped={9, 20},
    size=3,
)
@example(profile="strict", parts=["The", "IBAN"], seps=[" "] * 8, tail=("DE89", " ", "ghp_ab"), escaped={14}, size=3)
def test_tool_arguments_hold_no_more_than_the_screen_holding_most(
    profiles: dict,
    profile: str,
    parts: list[str],
    seps: list[str],
    tail: tuple[str, str, str],
    escaped: set[int],
    size: int,
) -> None:
    """The same generated texts as a string of tool-call arguments (JSON text, some characters spelt as
    ``\\u`` escapes), the stream cut before the string closes: both screens read the JSON text as written
    (PII each string decoded, the denylist as written and decoded) and report edits in its offsets, so the
    argument channel's group holds, after every chunk, at most what the screen holding most holds alone."""
    deny, pii = profiles[profile]
    text = "".join(p + s for p, s in zip(parts, seps, strict=False)) + "".join(tail)
    assume(text and _unchanged(deny, text) and _unchanged(pii, text))
    args = '{"n": 1, "note": ' + json_string(text, escaped)[:-1]  # the string still open at the end
    chunks = pieces(args, size)
    pair = (deny, pii)
    both, alone_a, alone_b = (_args_through(pair, w, chunks) for w in ("both", "deny", "pii"))
    for k, (x, a, b) in enumerate(zip(both, alone_a, alone_b, strict=True)):
        assert x <= max(a, b), (args, size, chunks[: k + 1], a, b, x)
