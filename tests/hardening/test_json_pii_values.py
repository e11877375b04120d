"""Attack on the running proxy: personal data in the parts of JSON text that are not string values.

Tool-call arguments and tool results are JSON text. A card number written as a JSON number
(``{"card": 5500000000000004}``) or an e-mail address written as an object key (``{"jane.doe@example.com":
"x"}``) is read by the model like any other text. The shipped PII profile screens them (guard.screens.json_text):
a rewritten number becomes a JSON string (``"************0004"``), a key is rewritten like a value; the JSON
stays valid, in requests, in whole answers and in streamed answers cut anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hardening.raw_upstream import RawUpstream, chat_body, chat_tool_answer, chat_tool_stream, fixed

CARD = "5500000000000004"  # a Mastercard test number (not on the shipped allowlist)
EMAIL = "jane.doe@example.com"
ARGS = '{"card": ' + CARD + ', "amount": 12.5, "items": [1, ' + CARD + "]}"


CUTS = [1, 9, 10, 14, 20, 25, 40]
HANDLERS = {
    "w-number": fixed(chat_tool_answer(ARGS, "pay")),
    **{f"s-cut{k}": fixed(chat_tool_stream([ARGS[:k], ARGS[k:]], "pay"), b"text/event-stream") for k in CUTS},
    "s-chars": fixed(chat_tool_stream(list(ARGS), "pay"), b"text/event-stream"),
    "echo": fixed(chat_body("ok")),
}


@pytest.fixture(scope="module")
def upstream(pki_dir: Any, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.conftest import start_guard

    raw = RawUpstream(HANDLERS)
    g = start_guard(pki_dir, raw.url, tmp_path_factory.mktemp("jsonpii"), judge_url=model_server[1])
    g.extra["raw"] = raw
    yield g
    g.stop()
    raw.close()


def _clean(arguments: str) -> dict[str, Any]:
    value = json.loads(arguments)  # still valid JSON
    assert CARD not in json.dumps(value), arguments
    assert value["card"] == "************0004" and value["items"] == [1, "************0004"], value
    assert value["amount"] == 12.5, value  # a number that is no personal data stays a number
    return value


def test_a_card_number_written_as_a_json_number_is_masked_in_an_answer(upstream: Any) -> None:
    r = upstream.openai("staff").chat.completions.create(model="w-number", messages=[{"role": "user", "content": "hi"}])
    calls = r.choices[0].message.tool_calls
    assert calls, r
    _clean(calls[0].function.arguments)


@pytest.mark.parametrize("model", [f"s-cut{k}" for k in CUTS] + ["s-chars"])
def test_a_card_number_written_as_a_json_number_is_masked_when_streamed(upstream: Any, model: str) -> None:
    args = ""
    for chunk in upstream.openai("staff").chat.completions.create(
        model=model, stream=True, messages=[{"role": "user", "content": "hi"}]
    ):
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                args += (tc.function and tc.function.arguments) or ""
    _clean(args)


def test_numbers_and_keys_in_request_json_text_are_screened(upstream: Any) -> None:
    """In a request the shipped profile redacts card numbers and pseudonymises e-mail addresses: the model
    server receives the rewritten JSON text, numbers as strings, keys rewritten."""
    text = '{"' + EMAIL + '": "x", "card": ' + CARD + "}"
    call = {"id": "c1", "type": "function", "function": {"name": "pay", "arguments": text}}
    body = {
        "model": "echo",
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": text},
            {"role": "user", "content": "go on"},
        ],
    }
    with upstream.client("staff") as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    got = upstream.extra["raw"].requests[-1]["body"]["messages"]
    for sent in (got[0]["tool_calls"][0]["function"]["arguments"], got[1]["content"]):
        value = json.loads(sent)
        assert value == {"<EMAIL_ADDRESS_1>": "x", "card": "<CREDIT_CARD>"}, sent
