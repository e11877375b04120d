"""Attack on the running proxy: a model (or a prompt-injected one) spells secrets and personal values out one
character per chunk, or in pieces cut at every possible place, hoping a screen lets the first half go before
the second arrives. Every chunk the client reads, over OpenAI SSE and Ollama NDJSON, must hold only text
the whole-answer screens would have let through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.filters.test_stream_proxy import shipped_filters_answers_only

VALUES = {  # each as the shipped default profile's answer screens treat it
    "AKIAIOSFODNN7EXAMPLE": "[REDACTED:aws_access_key_id]",
    "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8": "[REDACTED:github_token]",
    "sk-proj-abcdefghij0123456789ABCDEFGHIJ": "[REDACTED:openai_api_key]",
    "Bearer abcdefghijklmnop1234567890": "[REDACTED:bearer_token]",
    "5500 0000 0000 0004": "**** **** **** 0004",
    "DE89 3704 0044 0532 0130 00": "<IBAN_CODE>",
    "536-90-4399": "<US_SSN>",
}
REPLY = "Here: " + "; then ".join(VALUES) + ". Done."


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import start_guard

    tmp = tmp_path_factory.mktemp("split")
    h = start_guard(
        pki_dir,
        model_server[1],
        tmp,
        judge_url=model_server[1],
        filters={"dir": str(shipped_filters_answers_only(tmp, model_server[1]))},
    )
    yield h
    h.stop()


def expected() -> str:
    out = REPLY
    for v, r in VALUES.items():
        out = out.replace(v, r)
    return out


def check(pieces: list[str]) -> None:
    assert "".join(pieces) == expected()
    assert len(pieces) > 5  # streamed in pieces: the screens under test held only what they had to
    seen = ""
    for p in pieces:
        seen += p
        for v in VALUES:
            for k in range(4, len(v) + 1):  # no 4+ character piece of a value ever reaches the client
                assert v[:k] not in seen or v[:k] in expected(), (v, p)


@pytest.mark.parametrize("chunks", [len(REPLY), len(REPLY) // 2, len(REPLY) // 3, 17])
def test_values_spelled_in_small_chunks_never_show_over_sse(g: Any, chunks: int) -> None:
    pieces: list[str] = []
    with g.openai() as c:
        for ch in c.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": f"[[reply: {REPLY}]] [[chunks={chunks}]]"}]
        ):
            if ch.choices and ch.choices[0].delta.content:
                pieces.append(ch.choices[0].delta.content)
    check(pieces)


def test_values_spelled_one_character_per_line_never_show_over_ollama(g: Any) -> None:
    with (
        g.client() as c,
        c.stream(
            "POST",
            "/api/chat",
            json={
                "model": "llama3",
                "messages": [{"role": "user", "content": f"[[reply: {REPLY}]] [[chunks={len(REPLY)}]]"}],
            },
        ) as r,
    ):
        assert r.status_code == 200
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert lines[-1]["done"] is True
    pieces = [x["message"]["content"] for x in lines if x.get("message", {}).get("content")]
    assert all(p for p in pieces)
    check(pieces)


# Keys written straight after a letter of another script: the denylist's RE2 rules see a word boundary
# there (theirs is ASCII), so the whole answer redacts them; the stream must hold them from their start.
SCRIPTS = {
    "caféghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8": "café[REDACTED:github_token]",
    "日本sk-proj-abcdefghij0123456789ABCDEFGHIJ": "日本[REDACTED:openai_api_key]",
    "Ωmega東AKIAIOSFODNN7EXAMPLE": "Ωmega東[REDACTED:aws_access_key_id]",
}
REPLY_SCRIPTS = "Voilà: " + " et ".join(SCRIPTS) + ". Fin."


@pytest.mark.parametrize("chunks", [len(REPLY_SCRIPTS), len(REPLY_SCRIPTS) // 3, 17])
def test_a_key_right_after_a_letter_of_another_script_never_shows_over_sse(g: Any, chunks: int) -> None:
    pieces: list[str] = []
    with g.openai() as c:
        for ch in c.chat.completions.create(
            model="m",
            stream=True,
            messages=[{"role": "user", "content": f"[[reply: {REPLY_SCRIPTS}]] [[chunks={chunks}]]"}],
        ):
            if ch.choices and ch.choices[0].delta.content:
                pieces.append(ch.choices[0].delta.content)
    want = REPLY_SCRIPTS
    for v, r in SCRIPTS.items():
        want = want.replace(v, r)
    assert "".join(pieces) == want
    seen = ""
    for p in pieces:
        seen += p
        for key in ("ghp_a1B2", "sk-proj-abc", "AKIAIOSF"):
            assert key not in seen, (key, pieces)
