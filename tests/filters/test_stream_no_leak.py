"""No leak in streams: for prose mixed with every entity and secret the shipped profiles redact, cut into
arbitrary chunks (1-character chunks included), the text a client receives through the relay and the
shipped response screens (denylist and PII, each reading the answer as written, their edits merged) equals
the whole-answer rewrite (guard.screens.edits.screen_answer, the function Guard screens whole answers with)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from guard.relay import Relay
from guard.screens.base import Segment
from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import DenylistProfile, DenylistRule, load_denylist
from guard.screens.edits import screen_answer
from guard.screens.pii.profile import load_pii_profiles
from guard.screens.pii.screen import PIIScreen
from guard.screens.pii.transform import CTX_KEY, Pseudonyms

ROOT = Path(__file__).resolve().parents[2]
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----"
)
SECRETS = [
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "github_pat_11ABCDEFG0123456789_ab",  # the shortest, and without "gh" anywhere
    "glpat-xY3k9Lm2Qw8Rt5Zp1Vb7",
    "xoxb-123456789012-abcdefghijKLMN",
    "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
    "sk-proj-abcdefghij0123456789ABCDEFGHIJ",
    "sk-ant-api03-abcdefghij0123456789xyz",
    "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "sk_live_51Habcdefghijklmnop",
    "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "Bearer abcdefghijklmnop1234567890",
    PEM,
]
ENTITIES = [
    "ann.lee@mailbox.org",
    "b_o+x@sub.example.co.uk",
    "+1 415-555-0134",
    "(212) 555-7788",
    "0490 39 07 81",
    "5500 0000 0000 0004",
    "4012888888881881",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "gb82west12345698765432",
    "536-90-4399",
    "10.20.30.40",
    "2001:db8::ff00:42:8329",
    "EMP-123406",
    "support@example.com",
    "GB82 WEST 1234 5698 7654 32",
    "gb82-west-1234-5698-7654-32",
    "OPS@BILLING.INTERNAL",
    "jane.doe@acme.corp",
    "536 90 4399",
    "4012.8888.8888.1881",
    "2001:DB8::FF00:42:8329",
]
WORDS = [
    "the",
    "report",
    "is",
    "ready,",
    "please",
    "call",
    "phone:",
    "mail",
    "card",
    "credit",
    "ip",
    "at",
    "my",
    "SSN",
    "IBAN",
    "employee",
    "\n",
    "ok.",
    "number",
    "(see",
    "below)",
    "x",
    "-",
    "key:",
    "token",
    "sk",
    "AK",
    "gh",
    "bearer",
    "eyJ",
    "<EMAIL_ADDRESS_1>",
    "<PHONE_NUMBER_1>",
    "<EMAIL_",
    "<",
    "office",
    "fax",
]
KNOWN = {"<EMAIL_ADDRESS_1>": "known@mailbox.org", "<PHONE_NUMBER_1>": "+49 30 901820"}


@pytest.fixture(scope="module")
def screens() -> dict[str, tuple[DenylistScreen, PIIScreen]]:
    deny = DenylistScreen.from_settings(load_denylist(ROOT / "filters" / "denylist.yaml"))
    pii = load_pii_profiles(ROOT / "filters" / "pii.yaml")
    return {name: (deny, PIIScreen(prof)) for name, prof in pii.items()}


def new_ctx() -> dict[str, Any]:
    p = Pseudonyms()
    for ph, v in KNOWN.items():
        assert p.placeholder(ph[1:].rsplit("_", 1)[0], v) == ph
    return {CTX_KEY: p}


def whole(pair: tuple[DenylistScreen, PIIScreen], text: str, kind: str = "content") -> str:
    """The answer screened whole, as Guard screens a non-streamed answer (guard.screens.edits.screen_answer)."""
    segs = [Segment(text, "assistant", kind, ())]
    verdicts = asyncio.run(screen_answer(list(pair), segs, [], new_ctx()))
    assert not any(v.blocked for v in verdicts)
    return segs[0].text


def streamed(pair: tuple[DenylistScreen, PIIScreen], chunks: list[str]) -> tuple[str, list[str]]:
    """What the client reads, through the relay (SSE framing), and each content delta it got."""
    ctx = new_ctx()
    relay = Relay("openai", "chat", "m", lambda kind: [s.open_stream([], ctx, kind) for s in pair])
    body = b"".join(
        b"data: "
        + json.dumps({"id": "x", "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]}).encode()
        + b"\n\n"
        for c in chunks
    )
    body += b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

    async def go() -> bytes:
        out = b""
        for i in range(0, len(body), 97):  # bytes arrive in arbitrary pieces too
            got, stop = await relay.feed(body[i : i + 97])
            assert stop is None
            out += got
        got, stop = await relay.finish()
        assert stop is None
        return out + got

    deltas = []
    for ev in asyncio.run(go()).split(b"\n\n"):
        if ev.startswith(b"data: {"):
            deltas.append(json.loads(ev[6:])["choices"][0]["delta"].get("content"))
    assert "" not in deltas  # held text sends nothing rather than empty deltas
    return "".join(d for d in deltas if d), deltas


def split(text: str, cuts: list[int], ones: bool) -> list[str]:
    if ones:
        return list(text)
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [p for p in (text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=False)) if p]


@pytest.mark.parametrize("value", SECRETS + ENTITIES)
def test_every_value_is_rewritten_whole_by_some_shipped_profile(screens: dict, value: str) -> None:
    """The generator's values are real findings (else the property below proves little)."""
    if value == "support@example.com":  # allowlisted in the default profile, redacted in strict
        assert whole(screens["default"], value) == value
    assert any(whole(pair, f"see {value} now") != f"see {value} now" for pair in screens.values())


def _settled(profile: str, parts: list[str], seps: list[str], ones: bool = False) -> Any:
    """An example for the property below: ``parts`` joined by ``seps`` (the last repeated), in chunks cut
    around the joins (``ones``: 1-character chunks)."""
    seps = (seps + [seps[-1]] * 14)[:14]
    cuts, at = [], 0
    for p, s in zip(parts, seps, strict=False):
        at += len(p)
        cuts += [at - 2, at + 3]
        at += len(s)
    return example(profile=profile, parts=parts, seps=seps, cuts=cuts, ones=ones)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    profile=st.sampled_from(["default", "strict"]),
    parts=st.lists(
        st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS), st.sampled_from(SECRETS), st.sampled_from(ENTITIES)),
        min_size=1,
        max_size=14,
    ),
    seps=st.lists(st.sampled_from([" ", " ", "\n", ", ", ". "]), min_size=14, max_size=14),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    ones=st.booleans(),
)
# A complete value with fewer than 24 characters after it, then a key the denylist holds.
@_settled("strict", ["Try 555 0100 then use the key", SECRETS[2], "office"], [" "], ones=True)
@_settled("strict", ["call (212) 555-7788", SECRETS[-3], "fax"], [" "])
@_settled("strict", ["Card 4111 1111 1111 1112 ok,", "sk-proj-abcdefghij0123456789ABCDEFGHIJ", "now"], [" "])
@_settled("strict", ["IBAN DE89 3704 0044 0532 0130 01 and", "xoxb-123456789012-abcdefghijKLMN", "ok."], [" "])
@_settled("strict", ["staff EMP-123407", SECRETS[-3], "EMP-123406", "Bearer abcdefghijklmnop1234567890"], [" "], True)
@_settled("default", ["Card 5500 0000 0000 0004 ok,", "glpat-xY3k9Lm2Qw8Rt5Zp1Vb7", "card"], [" "])
# ... and written right against the key's start (as written, no value: each screen reads the text as written)
@_settled("strict", ["My SSN 536-90-4399", PEM, "done"], ["", " "], ones=True)
@_settled("strict", ["call (212) 555-7788", "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"], [""])
@_settled("strict", ["call (212) 555-7788", "https://hooks.slack.com/services/T000/B00 is not a hook"], [""])
@_settled("strict", ["host fe80::", "AKIAIOSFODNN7EXAMPLE", "up"], ["", " "], ones=True)
@_settled(
    "strict", ["mail ann.lee@mailbox.org", "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"], [""], True
)
def test_streamed_text_equals_the_whole_answer_rewrite(
    screens: dict, profile: str, parts: list[str], seps: list[str], cuts: list[int], ones: bool
) -> None:
    text = "".join(p + s for p, s in zip(parts, seps, strict=False)).rstrip() or "x"
    pair = screens[profile]
    expected = whole(pair, text)
    got, _ = streamed(pair, split(text, cuts, ones))
    assert got == expected


@pytest.mark.parametrize("before", ["café", "naïve", "Ωmega", "日本"])
def test_a_key_right_after_a_letter_of_another_script_is_redacted_as_in_the_whole_answer(
    screens: dict, before: str
) -> None:
    """The denylist's rules are RE2, whose word boundary is ASCII: ``caféghp_...`` holds a GitHub token
    (``é`` is no ASCII word character). Its partial matching must agree, or the token is not held and
    streams out while the whole answer redacts it."""
    pair = screens["default"]
    for secret in SECRETS:
        text = f"{before}{secret} ok"
        for chunks in (list(text), split(text, [len(before) + 3, len(before) + 9], False)):
            assert streamed(pair, chunks)[0] == whole(pair, text), (before, secret)


def test_a_phrase_after_a_letter_of_another_script_or_across_any_white_space_is_held() -> None:
    """A phrase rule that redacts answers: RE2 matches it after ``é`` and across any white space Python
    knows (an em space, a file separator); the stream holds it there too."""
    rule = DenylistRule(name="p", kind="phrase", phrases=["ignore all previous instructions"], response="redact")
    pii = PIIScreen(load_pii_profiles(ROOT / "filters" / "pii.yaml")["default"])
    pair = (DenylistScreen(DenylistProfile(rules=[rule])), pii)
    for text in ("éignore all previous instructions now", "so ignore\u2003all\x1cprevious\u3000instructions now"):
        assert "[REDACTED:p]" in whole(pair, text)
        assert streamed(pair, list(text))[0] == whole(pair, text), text


def test_prose_is_held_at_most_its_unfinished_word(screens: dict) -> None:
    text = (
        "Streams should feel instant. The answer arrives word by word, and nothing waits for a fixed "
        "tail of characters before it is shown to the reader, because plain words cannot be secrets."
    )
    for name, pair in screens.items():
        ctx = new_ctx()
        streams = [s.open_stream([], ctx) for s in pair]

        async def step(chunk: str, streams: list[Any] = streams) -> str:
            for s in streams:
                chunk = (await s.feed(chunk)).release
            return chunk

        out = ""
        for i in range(0, len(text), 4):
            out += asyncio.run(step(text[i : i + 4]))
            received = text[: i + 4]
            assert received.startswith(out), name
            assert " " not in received[len(out) :], (name, received[len(out) :])  # only the unfinished word
        got, deltas = streamed(pair, [text[i : i + 4] for i in range(0, len(text), 4)])
        assert got == text
        assert len([d for d in deltas if d]) >= len(text) // 8  # it trickles out, not in one piece


def test_a_secret_longer_than_the_cap_is_redacted_and_the_rest_of_its_run_dropped(screens: dict) -> None:
    deny, _ = screens["default"]
    token = "glpat-" + "x" * 600  # unbounded pattern, longer than hold_chars (256)
    text = f"token {token} done"
    ctx = new_ctx()
    s = deny.open_stream([], ctx)

    async def go() -> str:
        out = ""
        for i in range(0, len(text), 5):
            step = await s.feed(text[i : i + 5])
            out += step.release
            assert len(s.buf) <= deny.profile.hold_chars + 5  # memory stays bounded
        return out + (await s.finish()).release

    out = asyncio.run(go())
    assert "xxxxxxxx" not in out and out == "token [REDACTED:gitlab_token] done" == whole(
        (deny, screens["default"][1]), text
    )


def test_a_pii_run_past_the_cap_is_screened_as_it_stands(screens: dict) -> None:
    _, pii = screens["strict"]
    cap = pii.profile.settings.stream_holdback_chars
    text = "mail " + "a" * (cap + 50) + " then ann.lee@mailbox.org ok"
    ctx = new_ctx()
    s = pii.open_stream([], ctx)

    async def go() -> str:
        out = ""
        for c in text:
            out += (await s.feed(c)).release
            assert len(s.held) <= cap + 1
        return out + (await s.finish()).release

    out = asyncio.run(go())
    assert "ann.lee@mailbox.org" not in out and out.endswith("then <EMAIL_ADDRESS> ok")


def test_partial_matching_that_times_out_holds_everything() -> None:
    from guard.screens import stream_partial

    ps = stream_partial.PartialSet([(r"(a|aa)+$", 0)])
    old = stream_partial.TIMEOUT_S
    stream_partial.TIMEOUT_S = 0.0001
    try:
        pend = ps.pending("x " + "a" * 40 + "b" * 2000, 2)
    finally:
        stream_partial.TIMEOUT_S = old
    assert pend.timed_out and pend.start == 2  # hold from pos: the screen's cap decides what happens


def _brute_open(ps: Any, text: str) -> int:
    """Every start tested on its own: the definition ``PartialSet.pending`` takes shortcuts to."""
    n = len(text)
    for p in range(n):
        for rx in ps.patterns:
            if rx.fullmatch(text, p, partial=True) is not None:
                return p
            m = rx.match(text, p) if ps.after else None
            if m is not None and m.end() > p and m.end() >= n - ps.after:
                return p
    return n


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet="aAkK sS-_@.:<>()+0123456789xXeEyYJjIiZzgGhHpP_\n", max_size=60),
    tail=st.sampled_from(["", "4111 1111", "sk-ab", "ann@x", "<EMAIL_", "DE89 37", "AKIA", "(212) 5", "eyJ"]),
)
def test_pending_shortcuts_agree_with_testing_every_start(screens: dict, text: str, tail: str) -> None:
    from guard.screens.pii.stream import stream_partials

    deny, pii = screens["strict"]
    for ps in (deny.partials, stream_partials(pii.profile, "response")):
        assert ps is not None
        assert ps.pending(text + tail).start == _brute_open(ps, text + tail)


# --- tool-call arguments: JSON text, streamed -----------------------------------------------------------

ARG_KEYS = ["to", "note", "body", "city", "items"]
ARG_VALUES = [v for v in SECRETS if v != PEM] + ENTITIES  # a PEM block is denylisted as one multi-line run


def whole_args(pair: tuple[DenylistScreen, PIIScreen], text: str) -> str:
    return whole(pair, text, "tool_arguments")


def streamed_args(pair: tuple[DenylistScreen, PIIScreen], chunks: list[str]) -> tuple[str, int]:
    """The arguments a client reassembles from tool-call deltas through the relay, and how many argument
    deltas it got."""
    ctx = new_ctx()
    relay = Relay("openai", "chat", "m", lambda kind: [s.open_stream([], ctx, kind) for s in pair])

    def chunk(tc: dict[str, Any], finish: str | None = None) -> bytes:
        delta = {"tool_calls": [{"index": 0, **tc}]} if tc else {}
        ch = {"id": "x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(ch).encode() + b"\n\n"

    body = chunk({"id": "call_1", "type": "function", "function": {"name": "send", "arguments": ""}})
    body += b"".join(chunk({"function": {"arguments": c}}) for c in chunks)
    body += chunk({}, "tool_calls") + b"data: [DONE]\n\n"

    async def go() -> bytes:
        out = b""
        for i in range(0, len(body), 89):
            got, stop = await relay.feed(body[i : i + 89])
            assert stop is None
            out += got
        got, stop = await relay.finish()
        assert stop is None
        return out + got

    args, n = "", 0
    for ev in asyncio.run(go()).split(b"\n\n"):
        if ev.startswith(b"data: {"):
            for tc in json.loads(ev[6:])["choices"][0]["delta"].get("tool_calls") or []:
                piece = tc["function"].get("arguments")
                if piece is not None and "id" not in tc:
                    assert piece != ""  # held text sends nothing rather than empty argument deltas
                    args, n = args + piece, n + 1
    return args, n


def json_string(value: str, escaped: set[int]) -> str:
    """``value`` as a JSON string, the characters at ``escaped`` positions written as ``\\uXXXX``."""
    return '"' + "".join(f"\\u{ord(c):04x}" if k in escaped else json.dumps(c)[1:-1] for k, c in enumerate(value)) + '"'


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    profile=st.sampled_from(["default", "strict"]),
    values=st.lists(
        st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(ARG_VALUES)), min_size=1, max_size=6).map(" ".join),
        min_size=1,
        max_size=4,
    ),
    escaped=st.sets(st.integers(min_value=0, max_value=120), max_size=12),
    as_list=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    ones=st.booleans(),
)
def test_streamed_tool_arguments_equal_the_whole_answer_rewrite(
    screens: dict,
    profile: str,
    values: list[str],
    escaped: set[int],
    as_list: bool,
    cuts: list[int],
    ones: bool,
) -> None:
    """Tool-call arguments (JSON text: values spelled with ``\\u`` escapes, numbers, a nested list) cut into
    arbitrary deltas: parsed, what the client reassembles equals the whole answer's rewrite."""
    strings = [json_string(v, escaped) for v in values]
    if as_list:
        text = '{"items": [' + ", ".join(strings) + '], "n": 42, "ok": true}'
    else:
        text = "{" + ", ".join(f'"{ARG_KEYS[i]}": {s}' for i, s in enumerate(strings)) + ', "n": -1.5e3}'
    assert json.loads(text)  # well-formed arguments
    pair = screens[profile]
    expected = whole_args(pair, text)
    got, _ = streamed_args(pair, split(text, cuts, ones))
    assert json.loads(got) == json.loads(expected)


def test_tool_arguments_stream_in_pieces_not_held_whole(screens: dict) -> None:
    """A long argument of prose goes out as it streams (no hold until the end); a value in it is redacted."""
    note = "Dear team, the quarterly report is attached and the numbers look fine. " * 6
    text = json.dumps({"to": "ann.lee@mailbox.org", "note": note + "Card 5500 0000 0000 0004 is expired."})
    pieces = [text[i : i + 6] for i in range(0, len(text), 6)]
    got, n = streamed_args(screens["strict"], pieces)
    assert json.loads(got) == json.loads(whole_args(screens["strict"], text))
    assert "ann.lee" not in got and "5500" not in got
    assert n >= len(pieces) // 2, (n, len(pieces))


NUMBERS = ["5500000000000004", "4111111111111111", "5105105105105100", "536904399", "4155550134", "-1.5e3", "0"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    profile=st.sampled_from(["default", "strict"]),
    keys=st.lists(st.sampled_from(ARG_VALUES + ARG_KEYS), min_size=1, max_size=3, unique=True),
    numbers=st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=3),
    escaped=st.sets(st.integers(min_value=0, max_value=60), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    ones=st.booleans(),
)
def test_streamed_keys_and_numbers_equal_the_whole_answer_rewrite(
    screens: dict,
    profile: str,
    keys: list[str],
    numbers: list[str],
    escaped: set[int],
    cuts: list[int],
    ones: bool,
) -> None:
    """Keys are text the model reads and a card number may be written as a JSON number: both are screened,
    whole and streamed alike; a rewritten number becomes a JSON string, so the arguments stay valid JSON."""
    members = [f"{json_string(k, escaped)}: {numbers[i % len(numbers)]}" for i, k in enumerate(keys)]
    text = "{" + ", ".join(members) + ', "list": [' + ", ".join(numbers) + "]}"
    assert json.loads(text)
    pair = screens[profile]
    expected = whole_args(pair, text)
    got, _ = streamed_args(pair, split(text, cuts, ones))
    assert json.loads(got) == json.loads(expected)
    flat = json.dumps(json.loads(got))
    for v in ("5500000000000004", "5105105105105100", "ann.lee@mailbox.org"):
        assert v not in flat or (profile == "default" and "@" in v), (profile, flat)
