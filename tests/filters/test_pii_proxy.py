"""PII screening through the real proxy with the OpenAI SDK (and an Ollama stream): block, redact,
pseudonymize and restore (whole, streamed, tool-call arguments), mask, allowlist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

PII_YAML = """
profiles:
  default:
    entities:
      EMAIL_ADDRESS: {prompt: pseudonymize, response: redact}
      PHONE_NUMBER: {prompt: pseudonymize, response: redact}
      CREDIT_CARD: {prompt: allow, response: mask}
      IBAN_CODE: {prompt: redact, response: redact}
      US_SSN: {prompt: block, response: redact}
    allowlist:
      values: [support@example.com]
"""
EMAIL, PHONE, SSN = "ann.lee@mailbox.org", "+1 415-555-0134", "536-90-4399"


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from guard.demo.stack import screening_filters
    from tests.conftest import start_guard

    tmp = tmp_path_factory.mktemp("pii-proxy")
    d = screening_filters(tmp / "pii-filters", model_server[1])  # start_guard rewrites tmp/filters
    (d / "pii.yaml").write_text(PII_YAML)
    h = start_guard(pki_dir, model_server[1], tmp, judge_url=model_server[1], filters={"dir": str(d)})
    yield h
    h.stop()


def seen_by_model(model_server: Any) -> str:
    """The last chat request the model server received (not the safety judge's)."""
    reqs = [r for r in model_server[0].requests if "guard" not in str(r["body"].get("model", "")).lower()]
    return json.dumps(reqs[-1]["body"])


def ask(c: Any, content: str, **kw: Any) -> Any:
    return c.chat.completions.create(model="m", messages=[{"role": "user", "content": content}], **kw)


def test_block_returns_400_naming_the_type_only(g: Any) -> None:
    with g.openai() as c, pytest.raises(openai.BadRequestError) as e:
        ask(c, f"my SSN is {SSN}")
    body = e.value.body
    assert e.value.status_code == 400 and body["code"] == "pii_blocked" and body["type"] == "guard_policy_violation"
    assert "US_SSN" in body["message"] and SSN not in body["message"]


def test_pseudonymized_prompt_and_restored_answer(g: Any, model_server: Any) -> None:
    with g.openai() as c:
        r = ask(c, f"[[echo]] write to {EMAIL} or {PHONE}, again {EMAIL}")
    sent = seen_by_model(model_server)
    assert EMAIL not in sent and "<EMAIL_ADDRESS_1>" in sent and "<PHONE_NUMBER_1>" in sent
    assert EMAIL in r.choices[0].message.content and PHONE in r.choices[0].message.content


def test_pseudonyms_restored_in_a_stream_split_across_chunks(g: Any, model_server: Any) -> None:
    with g.openai() as c:
        chunks = list(ask(c, f"[[echo]] [[chunks=37]] mail {EMAIL} now, then call {PHONE} please", stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert f"mail {EMAIL} now, then call {PHONE} please" in text
    assert EMAIL not in seen_by_model(model_server)


def test_tool_call_arguments_restored_and_valid_json(g: Any) -> None:
    directive = '[[tool: send_mail {"to": "<EMAIL_ADDRESS_1>", "note": "hi \\"there\\""}]]'
    with g.openai() as c:
        r = ask(c, f"mail {EMAIL} {directive}")
        chunks = list(ask(c, f"mail {EMAIL} {directive}", stream=True))
    args = r.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(args) == {"to": EMAIL, "note": 'hi "there"'}
    streamed = "".join(
        tc.function.arguments or "" for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])
    )
    assert json.loads(streamed) == {"to": EMAIL, "note": 'hi "there"'}


def test_answers_are_masked_and_redacted_streamed_or_not(g: Any) -> None:
    directive = "[[reply: Card 5500 0000 0000 0004, IBAN DE89 3704 0044 0532 0130 00, ask ops@corpmail.com.]]"
    # The card may reach the model (prompt: allow) and is masked on the way back; the IBAN is redacted before
    # the model sees it; the e-mail address is the user's own (pseudonymized, then restored).
    want = "Card **** **** **** 0004, IBAN <IBAN_CODE>, ask ops@corpmail.com."
    with g.openai() as c:
        whole = ask(c, directive).choices[0].message.content
        text = "".join(
            ch.choices[0].delta.content or "" for ch in ask(c, directive + " [[chunks=23]]", stream=True) if ch.choices
        )
    assert whole == want and text == want


def test_allowlisted_value_passes(g: Any, model_server: Any) -> None:
    with g.openai() as c:
        r = ask(c, "[[echo]] write to support@example.com")
    assert "support@example.com" in seen_by_model(model_server)
    assert "support@example.com" in r.choices[0].message.content


def test_ollama_stream_restores_pseudonyms(g: Any, model_server: Any) -> None:
    with (
        g.client() as c,
        c.stream(
            "POST",
            "/api/chat",
            json={
                "model": "llama3",
                "messages": [
                    {"role": "user", "content": f"[[echo]] [[chunks=19]] reach {EMAIL}; the desk is +44 20 7946 0958"}
                ],
            },
        ) as r,
    ):
        assert r.status_code == 200
        lines = [json.loads(x) for x in r.iter_lines() if x]
    text = "".join(x["message"]["content"] for x in lines)
    assert text.endswith(f"reach {EMAIL}; the desk is +44 20 7946 0958") and lines[-1]["done"] is True
    sent = seen_by_model(model_server)
    assert EMAIL not in sent and "the desk is <PHONE_NUMBER_1>" in sent


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_tool_call_arguments_restored_as_an_object(g: Any, stream: bool) -> None:
    """Ollama gives tool-call arguments as an object, streamed lines too: screened as one JSON text (as in a
    whole answer) and written back as the object, pseudonyms restored."""
    directive = '[[tool: send_mail {"to": "<EMAIL_ADDRESS_1>", "n": 2, "note": "hi \\"there\\""}]]'
    body = {"model": "llama3", "stream": stream, "messages": [{"role": "user", "content": f"mail {EMAIL} {directive}"}]}
    with g.client() as c:
        r = c.post("/api/chat", json=body)
    assert r.status_code == 200, r.text
    lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
    calls = [tc for ln in lines for tc in (ln.get("message") or {}).get("tool_calls") or []]
    assert [tc["function"]["arguments"] for tc in calls] == [{"to": EMAIL, "n": 2, "note": 'hi "there"'}], r.text
