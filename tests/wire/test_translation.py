"""An Anthropic Messages client (the official ``anthropic`` SDK) routed to an OpenAI-compatible upstream
(``api: openai``, the built-in model server's /v1/chat/completions): the judged request is translated, the
answer (whole, streamed, tool calls, errors) comes back as Messages. Pseudonyms are restored in streamed
answers whether the upstream speaks Messages or Chat Completions. docs/wire-apis.md has the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.filters.test_pii_proxy import PII_YAML
from tests.wire.test_anthropic import client, sent

EMAIL = "ann.lee@mailbox.org"
TOOLS = [
    {
        "name": "get_weather",
        "description": "weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Guard with the PII profile of tests/filters/test_pii_proxy.py; claude-* models go to the OpenAI-
    compatible upstream, native-* to the Messages upstream, chatonly-* to an upstream whose Responses requests
    are translated to Chat Completions."""
    from guard.demo.stack import screening_filters
    from tests.conftest import start_guard

    tmp = tmp_path_factory.mktemp("wire-translation")
    d = screening_filters(tmp / "pii-filters", model_server[1])
    (d / "pii.yaml").write_text(PII_YAML)
    chat_only = {"url": model_server[1], "api": "openai", "timeout_s": 10, "responses": "translate"}
    h = start_guard(
        pki_dir,
        model_server[1],
        tmp,
        judge_url=model_server[1],
        filters={"dir": str(d)},
        upstreams={"chatonly": chat_only},
        routes=[
            {"model": "native-*", "upstream": "anthropic"},
            {"model": "chatonly-*", "upstream": "chatonly"},
            {"model": "*", "upstream": "local"},
        ],
    )
    yield h
    h.stop()


def test_create_is_translated_both_ways(g: Any, model_server: Any) -> None:
    with client(g) as c:
        raw = c.messages.with_raw_response.create(
            model="claude-x",
            max_tokens=30,
            system="be brief",
            stop_sequences=["END"],
            metadata={"user_id": "u1"},
            messages=[{"role": "user", "content": "[[reply: hi there]]"}],
        )
        m = raw.parse()
    assert m.type == "message" and m.content[0].text == "hi there" and m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 2 and m.model == "claude-x"
    got = sent(model_server, raw.headers["x-guard-request-id"])
    assert got["path"] == "/v1/chat/completions"
    assert got["body"] == {
        "model": "claude-x",
        "max_tokens": 30,
        "stop": ["END"],
        "user": "u1",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "[[reply: hi there]]"}],
    }


def test_stream_is_translated(g: Any) -> None:
    with (
        client(g) as c,
        c.messages.stream(
            model="claude-x",
            max_tokens=30,
            messages=[{"role": "user", "content": "[[reply: one two three four]] [[chunks=3]]"}],
        ) as s,
    ):
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert final.content[0].text == "one two three four" and final.stop_reason == "end_turn"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and final.usage.output_tokens == 7


def test_tools_are_translated_whole_streamed_and_round_trip(g: Any, model_server: Any) -> None:
    directive = '[[tool: get_weather {"city": "Paris"}]]'
    with client(g) as c:
        m = c.messages.create(
            model="claude-x",
            max_tokens=30,
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": directive}],
        )
        with c.messages.stream(
            model="claude-x", max_tokens=30, tools=TOOLS, messages=[{"role": "user", "content": directive}]
        ) as s:
            final = s.get_final_message()
        raw = c.messages.with_raw_response.create(
            model="claude-x",
            max_tokens=30,
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "checking"},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {"type": "text", "text": "and now?"},
                    ],
                },
            ],
        )
    assert m.stop_reason == "tool_use" and m.content[0].type == "tool_use" and m.content[0].input == {"city": "Paris"}
    tu = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and tu[0].name == "get_weather" and tu[0].input == {"city": "Paris"}
    body = sent(model_server, raw.headers["x-guard-request-id"])["body"]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": TOOLS[0]["input_schema"],
            },
        }
    ]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "checking",
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    }
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
    ]


@pytest.mark.parametrize(
    "extra,code",
    [
        ({"top_k": 5}, "untranslatable"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "untranslatable"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
                        ],
                    }
                ]
            },
            "untranslatable",
        ),
    ],
)
def test_what_does_not_map_is_refused_before_anything_is_sent(
    g: Any, model_server: Any, extra: dict[str, Any], code: str
) -> None:
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **extra}
    with g.client() as c:
        r = c.post("/v1/messages", json=body)
    assert r.status_code == 400 and r.json()["type"] == "error" and r.json()["error"]["code"] == code, r.text
    assert r.headers["x-guard-request-id"] not in {
        q["headers"].get("x-guard-request-id") for q in model_server[0].requests
    }


def test_upstream_errors_come_back_in_anthropic_shape(g: Any) -> None:
    with client(g) as c, pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "[[status=429]]"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error"
    with (
        client(g) as c,
        pytest.raises(anthropic.APIStatusError) as e2,
        c.messages.stream(  # a broken stream
            model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "[[garbage]] a b c d"}]
        ) as s,
    ):
        list(s)
    assert "invalid stream" in str(e2.value)


def test_ollama_generate_to_a_messages_upstream_is_refused(g: Any) -> None:
    """Chat Completions and Ollama chat clients are translated to a Messages upstream
    (tests/wire/test_chat_to_anthropic.py); Ollama's /api/generate is not."""
    import ollama

    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=g.url, verify=g.ssl_context("app")).generate(model="native-x", prompt="hi")
    assert e.value.status_code == 400 and "Anthropic Messages API" in e.value.error


@pytest.mark.parametrize("model", ["claude-x", "native-x"])
def test_pseudonym_restored_in_the_streamed_answer(g: Any, model_server: Any, model: str) -> None:
    """The e-mail address is pseudonymised before the model sees it and restored in the answer, streamed in
    small pieces, whether the upstream speaks Chat Completions (translated) or Messages."""
    with (
        client(g) as c,
        c.messages.stream(
            model=model,
            max_tokens=100,
            messages=[{"role": "user", "content": f"[[echo]] [[chunks=29]] please mail {EMAIL} today"}],
        ) as s,
    ):
        text = s.get_final_message().content[0].text
    assert text.endswith(f"please mail {EMAIL} today")
    reqs = [r for r in model_server[0].requests if "guard" not in str(r["body"].get("model", "")).lower()]
    seen = json.dumps(reqs[-1]["body"])
    assert EMAIL not in seen and "<EMAIL_ADDRESS_1>" in seen


# --- Responses clients on a Chat-Completions-only upstream --------------------------------------------------

RTOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_responses_create_is_translated(g: Any, model_server: Any) -> None:
    with g.openai() as c:
        raw = c.responses.with_raw_response.create(
            model="chatonly-m",
            instructions="be brief",
            max_output_tokens=20,
            input=[{"role": "user", "content": [{"type": "input_text", "text": "[[reply: hi there]]"}]}],
        )
        r = raw.parse()
    assert r.output_text == "hi there" and r.status == "completed" and r.usage.output_tokens == 2
    got = sent(model_server, raw.headers["x-guard-request-id"])
    assert got["path"] == "/v1/chat/completions"
    assert got["body"] == {
        "model": "chatonly-m",
        "max_tokens": 20,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "[[reply: hi there]]"}]},
        ],
    }


def test_responses_stream_and_tools_are_translated(g: Any, model_server: Any) -> None:
    directive = '[[tool: get_weather {"city": "Paris"}]]'
    with g.openai() as c:
        evs = list(c.responses.create(model="chatonly-m", input="[[reply: one two three]]", stream=True))
        tool_evs = list(c.responses.create(model="chatonly-m", input=directive, tools=[RTOOL], stream=True))
        whole = c.responses.create(model="chatonly-m", input=directive, tools=[RTOOL])
        raw = c.responses.with_raw_response.create(
            model="chatonly-m",
            tools=[RTOOL],
            input=[
                {"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"role": "user", "content": "[[reply: fine]]"},
            ],
        )
    assert "".join(e.delta for e in evs if e.type == "response.output_text.delta") == "one two three"
    assert evs[0].type == "response.created" and evs[-1].type == "response.completed"
    assert evs[-1].response.output_text == "one two three" and evs[-1].response.usage.output_tokens == 7
    args = "".join(e.delta for e in tool_evs if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    calls = [o for o in tool_evs[-1].response.output if o.type == "function_call"]
    assert calls and json.loads(calls[0].arguments) == {"city": "Paris"} and calls[0].name == "get_weather"
    assert whole.output[0].type == "function_call" and json.loads(whole.output[0].arguments) == {"city": "Paris"}
    body = sent(model_server, raw.headers["x-guard-request-id"])["body"]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert raw.parse().output_text == "fine"


def test_responses_pseudonym_restored_through_translation(g: Any, model_server: Any) -> None:
    with g.openai() as c:
        evs = list(
            c.responses.create(
                model="chatonly-m", stream=True, input=f"[[echo]] [[chunks=23]] please mail {EMAIL} today"
            )
        )
    text = "".join(e.delta for e in evs if e.type == "response.output_text.delta")
    assert text.endswith(f"please mail {EMAIL} today") and evs[-1].response.output_text == text
    reqs = [r for r in model_server[0].requests if "guard" not in str(r["body"].get("model", "")).lower()]
    assert EMAIL not in json.dumps(reqs[-1]["body"]) and reqs[-1]["path"] == "/v1/chat/completions"


def test_responses_untranslatable_is_refused(g: Any) -> None:
    with g.client() as c:
        r = c.post("/v1/responses", json={"model": "chatonly-m", "input": "hi", "truncation": "auto"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "untranslatable"
