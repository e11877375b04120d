"""Property: a secret written with JSON escapes, in any mix of characters, in tool-call arguments cut into
any chunks, never reaches the client of a streamed answer (the arguments stay valid JSON) and is caught in
a request (the shipped denylist: ``block`` for prompts, ``redact`` for answers).

The screen under test is the real one with the shipped filters/denylist.yaml; the running-proxy attacks are
in tests/hardening/test_json_escaped_secrets.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.screens import json_text
from guard.screens.base import Segment
from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import load_denylist

FILTERS = Path(__file__).resolve().parents[2] / "filters"
SECRETS = {
    "AKIAIOSFODNN7EXAMPLE": "aws_access_key_id",
    "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8": "github_token",
    "sk-proj-abcdefghij0123456789ABCDEFGHIJ": "openai_api_key",
    "xoxb-1234567890-abcdefghij": "slack_token",
}


@pytest.fixture(scope="module")
def screen() -> DenylistScreen:
    return DenylistScreen.from_settings(load_denylist(FILTERS))


def spell(secret: str, escaped: list[bool], upper: list[bool]) -> str:
    """``secret`` as JSON string content, the characters marked in ``escaped`` as ``\\uXXXX``."""
    out = []
    for i, ch in enumerate(secret):
        if escaped[i % len(escaped)]:
            out.append(("\\u%04X" if upper[i % len(upper)] else "\\u%04x") % ord(ch))
        elif ch == "/":
            out.append("\\/")
        else:
            out.append(ch)
    return "".join(out)


def arguments(spelled: str, as_key: bool) -> str:
    if as_key:
        return '{"a": 1, "' + spelled + '": [true, null]}'
    return '{"note": "here", "list": [1, 2.5], "token": "' + spelled + '"}'


def cut(text: str, points: list[int]) -> list[str]:
    at = sorted({p % (len(text) + 1) for p in points})
    return [text[a:b] for a, b in zip([0, *at], [*at, len(text)], strict=True)]


async def stream(screen: DenylistScreen, pieces: list[str]) -> str:
    s = screen.open_stream([], {}, kind="tool_arguments")
    out = ""
    for p in pieces:
        step = await s.feed(p)
        assert step.stop is None
        out += step.release
    step = await s.finish()
    assert step.stop is None
    return out + step.release


escapes = st.lists(st.booleans(), min_size=1, max_size=8)
spellings = st.tuples(st.sampled_from(sorted(SECRETS)), escapes, escapes, st.booleans())


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spelling=spellings, points=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_an_escaped_secret_never_reaches_the_client_in_any_chunking(
    screen: DenylistScreen, spelling: tuple[str, list[bool], list[bool], bool], points: list[int]
) -> None:
    secret, escaped, upper, as_key = spelling
    text = arguments(spell(secret, escaped, upper), as_key)
    got = asyncio.run(stream(screen, cut(text, points)))
    flat = json.dumps(json.loads(got), ensure_ascii=False)  # still valid JSON; its decoded strings:
    assert secret not in flat, (text, got)
    assert f"[REDACTED:{SECRETS[secret]}]" in flat, (text, got)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spelling=spellings)
def test_an_escaped_secret_is_caught_whole(
    screen: DenylistScreen, spelling: tuple[str, list[bool], list[bool], bool]
) -> None:
    secret, escaped, upper, as_key = spelling
    text = arguments(spell(secret, escaped, upper), as_key)
    for kind in json_text.JSON_KINDS:
        prompt = [Segment(text, "assistant", kind, ("messages", 0, "x"))]
        v = asyncio.run(screen.screen_prompt(prompt, {}))
        assert v.blocked and v.code == "secret_blocked" and v.fields == [kind], (text, v)
        answer = [Segment(text, "assistant", kind, ("choices", 0, "x"))]
        v = asyncio.run(screen.screen_response(answer, [], {}))
        assert not v.blocked and v.action == "redact", v
        flat = json.dumps(json.loads(answer[0].text), ensure_ascii=False)
        assert secret not in flat and f"[REDACTED:{SECRETS[secret]}]" in flat, answer[0].text


def test_a_pattern_across_a_key_and_its_value_is_still_found(screen: DenylistScreen) -> None:
    """Read as written first: ``"aws_secret_access_key": "..."`` spans two JSON strings."""
    text = '{"aws_secret_access_key": "wJalrXUtnFEMI\\/K7MDENG\\/bPxRfiCYEXAMPLEKEY"}'
    v = asyncio.run(screen.screen_prompt([Segment(text, "assistant", "tool_arguments", ("x",))], {}))
    assert v.blocked, v
    got = asyncio.run(stream(screen, cut(text, [5, 30, 41])))
    assert "EXAMPLEKEY" not in got, got


def test_json_text_round_trip_keeps_numbers_and_escapes() -> None:
    text = '{"n": 1.50e3, "s": "caf\\u00e9 \\"q\\" \\ud83d\\ude00", "big": 12345678901234567890, "l": [true, null]}'
    obj = json_text.parse(text)
    assert json.loads(json_text.dump(obj)) == json.loads(text)
    assert "1.50e3" in json_text.dump(obj) and "12345678901234567890" in json_text.dump(obj)
    assert json_text.parse("NaN") is None and json_text.parse('{"a": NaN}') is None and json_text.parse("plain") is None


def test_a_replacement_inside_a_string_is_written_as_json_string_content() -> None:
    """A rule of one's own whose replacement holds a quote and a backslash, matching as written and only
    once decoded: whole and streamed (one character per chunk), the arguments stay valid JSON and read
    the replacement; the escapes JSON does not need come out decoded."""
    from guard.screens.denylist.settings import DenylistProfile, DenylistRule
    from guard.screens.edits import screen_answer

    rule = DenylistRule(name="own", pattern=r"tok-[0-9]{6}", replacement='[he said "no" \\ ok]')
    own = DenylistScreen(DenylistProfile(rules=[rule]))
    for text in ('{"a": "x tok-123456 y", "b": "caf\\u00e9"}', '{"a": "x t\\u006fk-123456 y", "b": "\\/"}'):
        segs = [Segment(text, "assistant", "tool_arguments", ("x",))]
        v = asyncio.run(screen_answer([own], segs, [], {}))
        assert not v[0].blocked and v[0].entities == {"own": 1}, v
        assert json.loads(segs[0].text)["a"] == 'x [he said "no" \\ ok] y', segs[0].text
        got = asyncio.run(stream(own, list(text)))
        assert json.loads(got) == json.loads(segs[0].text) and "\\u00" not in got and "\\/" not in got, got


def test_a_redaction_that_cuts_into_an_escape_covers_it_whole() -> None:
    """``\\t`` followed by ``ok-123456`` reads, as written, as ``tok-123456``: a redaction starting at the
    ``t`` covers the whole escape, so the arguments stay valid JSON, whole and streamed."""
    from guard.screens.denylist.settings import DenylistProfile, DenylistRule
    from guard.screens.edits import screen_answer

    own = DenylistScreen(DenylistProfile(rules=[DenylistRule(name="own", pattern=r"tok-[0-9]{6}", replacement="#")]))
    for text in ('{"a": "x\\tok-123456 y"}', '{"a": "x\\tok-123456 \\u0079"}', '{"a": "x\\\\tok-123456"}'):
        segs = [Segment(text, "assistant", "tool_arguments", ("x",))]
        asyncio.run(screen_answer([own], segs, [], {}))
        assert json.loads(segs[0].text)["a"] in ("x# y", "x\\#"), segs[0].text
        for size in (1, 3, 7):
            got = asyncio.run(stream(own, [text[i : i + size] for i in range(0, len(text), size)]))
            assert json.loads(got) == json.loads(segs[0].text), (size, got)


PAIR_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
spaces = st.sampled_from(["", " ", "\n  ", "\t"])


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    gaps=st.tuples(spaces, spaces, spaces),
    escaped=escapes,
    before=st.sampled_from(["", '"a": [1, true], ', '"n": -2.5e3, ']),
    points=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_a_redaction_across_a_key_and_its_value_keeps_the_arguments_json(
    screen: DenylistScreen, gaps: tuple[str, str, str], escaped: list[bool], before: str, points: list[int]
) -> None:
    """The shipped aws_secret_access_key rule matches from the key's name to the end of its value (across
    two quotes and a colon): the key and the value are each redacted, the JSON between them kept, whole and
    streamed in any chunking alike."""
    from guard.screens.edits import screen_answer

    value = spell(PAIR_SECRET, escaped, [False])
    text = "{" + gaps[0] + before + '"aws_secret_access_key"' + gaps[1] + ":" + gaps[2] + '"' + value + '"}'
    segs = [Segment(text, "assistant", "tool_arguments", ("x",))]
    v = asyncio.run(screen_answer([screen], segs, [], {}))
    assert v[0].entities == {"aws_secret_access_key": 1}, (text, v)
    mark = "[REDACTED:aws_secret_access_key]"
    got = json.loads(segs[0].text)
    assert got[mark] == mark and PAIR_SECRET not in json.dumps(got), segs[0].text
    assert asyncio.run(stream(screen, cut(text, points))) == segs[0].text, text


def test_a_redaction_from_a_key_into_a_number_makes_the_number_a_string() -> None:
    """A rule of one's own matching a key and the number after it: the number (whole, though the match ends
    inside it) becomes the replacement as a JSON string, in any chunking (the number cut at a chunk's end
    waits for its end)."""
    from guard.screens.denylist.settings import DenylistProfile, DenylistRule

    rule = DenylistRule(name="pin", pattern=r'pin"?\s*:\s*"?[0-9]{4}', replacement="<pin>")
    own = DenylistScreen(DenylistProfile(rules=[rule]))
    text = '{"pin": 123456, "pin_note": "pin:9876 here", "x": [1, 2]}'
    whole = own.scan_segment(text, "tool_arguments", "response").text
    assert json.loads(whole) == {"<pin>": "<pin>", "pin_note": "<pin> here", "x": [1, 2]}, whole
    for size in (1, 2, 3, 5, 8):
        assert asyncio.run(stream(own, [text[i : i + size] for i in range(0, len(text), size)])) == whole, size


def test_text_that_is_not_json_is_redacted_as_plain_text() -> None:
    """Where there is no JSON to keep (text that does not start as JSON, or something between values that
    JSON has no room for) a redaction is one plain replacement, whole and streamed alike."""
    from guard.screens.denylist.settings import DenylistProfile, DenylistRule

    own = DenylistScreen(DenylistProfile(rules=[DenylistRule(name="own", pattern=r'tok"?[ :x"]*-[0-9]{6}')]))
    for text, want in (
        ('tok": "-123456" and more', '[REDACTED:own]" and more'),
        ('{"tok" x "-123456"}', '{"[REDACTED:own]"}'),
        ('{"a": "b\\q", "tok": "-123456"}', '{"a": "b\\q", "[REDACTED:own]"}'),  # an invalid escape ends JSON
    ):
        whole = own.scan_segment(text, "tool_arguments", "response").text
        assert whole == want, whole
        for size in (1, 4):
            assert asyncio.run(stream(own, [text[i : i + size] for i in range(0, len(text), size)])) == whole
