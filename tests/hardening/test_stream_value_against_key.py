"""Attack on the running proxy: a model writes a personal value right against the start of a secret
(``call (212) 555-7788https://hooks.slack.com/services/...``), where the value reads differently as written
(the letter after the digits makes them no phone number) and once the secret is redacted (``[`` follows),
hoping the stream screens disagree with the whole-answer screens, or leak the key while one waits for the
other. Each response screen reads the answer as the model wrote it and their edits are merged, so the
streamed text the client reassembles (official openai SDK, one character per chunk and seeded random
chunkings) equals the non-streamed answer of the same model text, the key never shows, and the value
goes out before the key is decided."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from guard.screens import json_text
from tests.filters.test_stream_proxy import shipped_filters_answers_only

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"
GHP = "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
AKIA = "AKIAIOSFODNN7EXAMPLE"
# (the model's text, the key: "" where there is none as written (a key's start that never completes, or
# that a letter or digit before it makes no key))
CASES = [
    (f"call (212) 555-7788{HOOK} then hang up", HOOK),
    (f"call (212) 555-7788{HOOK[:40]} is not a hook", ""),
    (f"call 555 0100 {GHP} now", GHP),
    (f"call 555 0100{GHP} now", ""),
    (f"host fe80::{AKIA} is up", AKIA),
    (f"host 10.20.30.40{AKIA} is up", ""),
    (f"mail ann.lee@mailbox.org {GHP} now", GHP),
]


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import start_guard

    tmp = tmp_path_factory.mktemp("against")
    d = shipped_filters_answers_only(tmp, model_server[1])
    pii = d / "pii.yaml"  # the default profile redacts phone numbers, IP and email addresses in answers too
    text, n = re.subn(
        r"(EMAIL_ADDRESS|PHONE_NUMBER|IP_ADDRESS): \{prompt: allow, response: allow\}",
        r"\1: {prompt: allow, response: redact, threshold: 0.4}",
        pii.read_text(),
    )
    assert n == 3, "the shipped default profile changed: adjust this test"
    pii.write_text(text)
    h = start_guard(pki_dir, model_server[1], tmp, judge_url=model_server[1], filters={"dir": str(d)})
    yield h
    h.stop()


def whole(g: Any, text: str) -> str:
    with g.openai() as c:
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"[[reply: {text}]]"}])
    return r.choices[0].message.content or ""


def streamed(g: Any, text: str, chunks: int) -> list[str]:
    pieces: list[str] = []
    with g.openai() as c:
        for ch in c.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": f"[[reply: {text}]] [[chunks={chunks}]]"}]
        ):
            if ch.choices and ch.choices[0].delta.content:
                pieces.append(ch.choices[0].delta.content)
    return pieces


@pytest.mark.parametrize(("text", "key"), CASES)
def test_a_value_against_a_key_streams_as_the_whole_answer_and_the_key_never_shows(g: Any, text: str, key: str) -> None:
    expected = whole(g, text)
    assert not key or (key not in expected and "[REDACTED" in expected)
    rng = random.Random(text)
    for chunks in [len(text), *(rng.randint(2, len(text) - 1) for _ in range(3))]:
        pieces = streamed(g, text, chunks)
        assert "".join(pieces) == expected, (chunks, pieces)
        seen = ""
        for p in pieces:
            seen += p
            assert not key or key[:12] not in seen, (chunks, p)
        if chunks == len(text) and key == HOOK:
            # one character per chunk: the number, no phone number as written, is out before the key is
            # decided (PII alone would let it go at once; the denylist does not make it wait)
            cut = expected.index("[REDACTED")
            ends = [len("".join(pieces[: k + 1])) for k in range(len(pieces))]
            assert any(len(expected[:cut].rstrip()) <= e <= cut for e in ends), (expected, pieces[-4:])


# --- the same texts as tool-call arguments (JSON text), streamed as argument deltas ---------------------


def spelled(text: str, key: str) -> str:
    """``{"note": text}`` as JSON text, every third character of the key (or of the text's last word)
    written as a ``\\u`` escape: a reader of the string sees the same text."""
    word = key or text.split()[-2]
    at = text.index(word)
    out = []
    for k, ch in enumerate(text):
        inside = at <= k < at + len(word) and (k - at) % 3 == 1
        out.append(f"\\u{ord(ch):04x}" if inside else json.dumps(ch)[1:-1])
    return '{"note": "' + "".join(out) + '", "n": 1}'


def tool_whole(g: Any, args: str) -> str:
    with g.openai() as c:
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"[[tool: send {args}]]"}])
    calls = r.choices[0].message.tool_calls or []
    assert len(calls) == 1
    return calls[0].function.arguments


def tool_streamed(g: Any, args: str, chunks: int) -> list[str]:
    pieces: list[str] = []
    with g.openai() as c:
        for ch in c.chat.completions.create(
            model="m",
            stream=True,
            messages=[{"role": "user", "content": f"[[reply: ]] [[tool: send {args}]] [[tool_chunks={chunks}]]"}],
        ):
            for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
                if tc.function and tc.function.arguments:
                    pieces.append(tc.function.arguments)
    return pieces


@pytest.mark.parametrize("escaped", [False, True])
@pytest.mark.parametrize(("text", "key"), CASES)
def test_a_value_against_a_key_in_tool_arguments_streams_as_the_whole_answer(
    g: Any, text: str, key: str, escaped: bool
) -> None:
    """The same texts in tool-call arguments (JSON text, the key partly spelt with ``\\u`` escapes), streamed
    as argument deltas of one character and of seeded random sizes: parsed, the arguments the client
    reassembles equal the non-streamed answer's, and no prefix of the key shows in them, as written or
    decoded."""
    args = spelled(text, key) if escaped else json.dumps({"note": text, "n": 1})
    assert json.loads(args)["note"] == text
    expected = tool_whole(g, args)
    assert not key or (key not in json.loads(expected)["note"] and "[REDACTED" in expected)
    rng = random.Random(args)
    for chunks in [len(args), *(rng.randint(2, len(args) - 1) for _ in range(3))]:
        pieces = tool_streamed(g, args, chunks)
        assert json.loads("".join(pieces)) == json.loads(expected), (chunks, pieces)
        assert len(pieces) > 1 or chunks < 8, (chunks, pieces)  # the arguments stream, not held whole
        seen = ""
        for p in pieces:
            seen += p
            assert not key or key[:12] not in json_text.decoded_view(seen), (chunks, p)
            assert not key or key[:12] not in seen, (chunks, p)
