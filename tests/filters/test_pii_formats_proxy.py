"""Through the running proxy with the shipped filters/pii.yaml and policy: a spaced IBAN with letters and
an e-mail address at an internal domain never reach the model. The default profile pseudonymizes both
(the user gets them back); a model outside our network gets the strict profile, which blocks the IBAN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

IBANS = ["GB82 WEST 1234 5698 7654 32", "gb82-west-1234-5698-7654-32", "DE89.3704.0044.0532.0130.00"]
EMAILS = ["ops@billing.internal", "Jane.Doe@ACME.CORP", "printer@office.local"]


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import start_guard

    url = model_server[1]
    h = start_guard(
        pki_dir,
        url,
        tmp_path_factory.mktemp("pii-formats"),
        judge_url=url,  # shipped filters/
        upstreams={"external": {"url": url, "api": "openai", "timeout_s": 10, "external": True}},
        routes=[
            {"model": "ext-*", "upstream": "external"},
            {"model": "llama3*", "upstream": "ollama"},
            {"model": "*", "upstream": "local"},
        ],
        limits={"screen_budget_ms": 20_000},
    )  # a busy test machine: the budget is not under test
    yield h
    h.stop()


def seen_by_model(model_server: Any) -> str:
    reqs = [r for r in model_server[0].requests if "guard" not in str(r["body"].get("model", "")).lower()]
    return json.dumps(reqs[-1]["body"])


def ask(c: Any, content: str, model: str = "m", **kw: Any) -> Any:
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kw)


@pytest.mark.parametrize("iban, email", list(zip(IBANS, EMAILS, strict=False)))
def test_default_profile_pseudonymizes_grouped_iban_and_internal_email(
    g: Any, model_server: Any, iban: str, email: str
) -> None:
    prompt = f"[[echo]] pay {iban} and confirm to {email} today"
    with g.openai() as c:
        whole = ask(c, prompt).choices[0].message.content
        sent = seen_by_model(model_server)
        streamed = "".join(
            ch.choices[0].delta.content or "" for ch in ask(c, prompt + " [[chunks=29]]", stream=True) if ch.choices
        )
    assert iban not in sent and email not in sent and email.lower() not in sent.lower()
    assert "<IBAN_CODE_1>" in sent and "<EMAIL_ADDRESS_1>" in sent
    assert f"pay {iban} and confirm to {email} today" in whole
    assert f"pay {iban} and confirm to {email} today" in streamed


@pytest.mark.parametrize("iban", IBANS)
def test_strict_profile_blocks_the_iban_for_an_external_model(g: Any, model_server: Any, iban: str) -> None:
    before = len(model_server[0].requests)
    with g.openai() as c, pytest.raises(openai.BadRequestError) as e:
        ask(c, f"pay {iban} now", model="ext-gpt")
    body = e.value.body
    assert e.value.status_code == 400 and body["code"] == "pii_blocked" and "IBAN_CODE" in body["message"]
    assert iban not in json.dumps(body)
    chats = [r for r in model_server[0].requests[before:] if "guard" not in str(r["body"].get("model", "")).lower()]
    assert all(iban not in json.dumps(r["body"]) for r in chats)  # (the local safety judge is not the model)


def test_strict_profile_pseudonymizes_an_internal_email_for_an_external_model(g: Any, model_server: Any) -> None:
    with g.openai() as c:
        r = ask(c, "[[echo]] write to ops@billing.internal", model="ext-gpt")
    assert "ops@billing.internal" not in seen_by_model(model_server)
    assert "<EMAIL_ADDRESS_1>" in seen_by_model(model_server)
    assert "ops@billing.internal" in r.choices[0].message.content
