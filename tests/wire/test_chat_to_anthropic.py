"""Chat Completions clients (the official ``openai`` SDK, unchanged) routed to an Anthropic Messages upstream
(``api: anthropic``, the built-in model server's /v1/messages, which refuses what the real API refuses:
unknown fields, a missing max_tokens, tool results out of place): the judged request is translated, the
answer (whole, streamed, tool calls, errors) comes back as Chat Completions. docs/wire-apis.md has the table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.filters.test_pii_proxy import PII_YAML
from tests.hardening.conftest import events
from tests.wire.test_anthropic import sent

AWS = "AKIAIOSFODNN7EXAMPLE"
EMAIL = "ann.lee@mailbox.org"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Guard with the PII profile of tests/filters/test_pii_proxy.py; claude-* models go to the Messages
    upstream, whose key comes from $TEST_CHAT_ANTHROPIC_KEY."""
    import os

    from guard.demo.stack import screening_filters
    from tests.conftest import start_guard

    os.environ["TEST_CHAT_ANTHROPIC_KEY"] = "sk-upstream-own"
    tmp = tmp_path_factory.mktemp("chat-to-anthropic")
    d = screening_filters(tmp / "pii-filters", model_server[1])
    (d / "pii.yaml").write_text(PII_YAML)
    up = {"url": model_server[1], "api": "anthropic", "timeout_s": 10, "api_key_env": "TEST_CHAT_ANTHROPIC_KEY"}
    h = start_guard(
        pki_dir,
        model_server[1],
        tmp,
        judge_url=model_server[1],
        filters={"dir": str(d)},
        upstreams={"anthropic": up},
        limits={"screen_budget_ms": 20000},  # PII screening on a loaded machine; budgets: tests/filters
    )
    yield h
    h.stop()


def _done(g: Any, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        for e in events(g.config.audit.dir):
            if e.get("request_id") == rid and e.get("type") in ("exchange.completed", "exchange.denied"):
                return e
        assert time.monotonic() < deadline, f"no final audit record for {rid}"
        time.sleep(0.05)


def test_create_is_translated_both_ways(g: Any, model_server: Any) -> None:
    with g.openai() as c:
        raw = c.chat.completions.with_raw_response.create(
            model="claude-x",
            max_tokens=30,
            temperature=0.5,
            stop="END",
            user="u1",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "no lists"}]},
                {"role": "user", "content": "[[reply: hi there]]"},
            ],
            extra_headers={"anthropic-version": "9", "x-api-key": "client-key"},
        )
        r = raw.parse()
    assert r.object == "chat.completion" and r.model == "claude-x"
    assert r.choices[0].message.content == "hi there" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 2 and r.usage.prompt_tokens >= 1
    got = sent(model_server, raw.headers["x-guard-request-id"])
    assert got["path"] == "/v1/messages"
    assert got["body"] == {
        "model": "claude-x",
        "max_tokens": 30,
        "system": "be brief\n\nno lists",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "[[reply: hi there]]"}]}],
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
    }
    # Guard's upstream key and version; the client's key and headers never reach the upstream
    h = got["headers"]
    assert h["x-api-key"] == "sk-upstream-own" and h["anthropic-version"] == "2023-06-01"
    assert "authorization" not in h and "client-secret-key" not in json.dumps(h) and "client-key" not in json.dumps(h)
    rec = _done(g, raw.headers["x-guard-request-id"])
    assert (rec["api"], rec["operation"], rec["outcome"]["status"]) == ("openai", "chat", 200)
    assert rec["usage"]["completion_tokens"] == 2


def test_max_tokens_default_and_max_completion_tokens(g: Any, model_server: Any) -> None:
    from guard.apis.translate_anthropic import DEFAULT_MAX_TOKENS

    with g.openai() as c:
        a = c.chat.completions.with_raw_response.create(model="claude-x", messages=[{"role": "user", "content": "hi"}])
        b = c.chat.completions.with_raw_response.create(
            model="claude-x", max_completion_tokens=7, messages=[{"role": "user", "content": "hi"}]
        )
    assert sent(model_server, a.headers["x-guard-request-id"])["body"]["max_tokens"] == DEFAULT_MAX_TOKENS
    assert sent(model_server, b.headers["x-guard-request-id"])["body"]["max_tokens"] == 7


def test_stream_with_usage(g: Any) -> None:
    with g.openai() as c:
        chunks = list(
            c.chat.completions.create(
                model="claude-x",
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "[[reply: one two three four]] [[chunks=3]]"}],
            )
        )
        plain = list(
            c.chat.completions.create(
                model="claude-x", stream=True, messages=[{"role": "user", "content": "[[reply: one two]]"}]
            )
        )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "one two three four"
    assert chunks[0].choices[0].delta.role == "assistant" and all(ch.object == "chat.completion.chunk" for ch in chunks)
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert all(ch.usage is None for ch in plain) and plain[-1].choices[0].finish_reason == "stop"


def test_tools_whole_streamed_and_round_trip(g: Any, model_server: Any) -> None:
    directive = '[[tool: get_weather {"city": "Paris"}]]'
    with g.openai() as c:
        r = c.chat.completions.create(
            model="claude-x",
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            messages=[{"role": "user", "content": directive}],
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for ch in c.chat.completions.create(
            model="claude-x", tools=TOOLS, stream=True, messages=[{"role": "user", "content": directive}]
        ):
            for tc in ch.choices[0].delta.tool_calls or [] if ch.choices else []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                slot["id"] += tc.id or ""
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["args"] += (tc.function.arguments or "") if tc.function else ""
            if ch.choices and ch.choices[0].finish_reason:
                finish = ch.choices[0].finish_reason
        raw = c.chat.completions.with_raw_response.create(
            model="claude-x",
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "checking",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "t2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "rain"}]},
                {"role": "user", "content": "[[reply: thanks]]"},
            ],
        )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert finish == "tool_calls" and len(calls) == 1 and calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["args"]) == {"city": "Paris"}
    assert raw.parse().choices[0].message.content == "thanks"
    body = sent(model_server, raw.headers["x-guard-request-id"])["body"]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "weather for a city",
        }
    ]
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "rain"}]},
                {"type": "text", "text": "[[reply: thanks]]"},
            ],
        },
    ]
    first = [q for q in model_server[0].requests if q["body"].get("tool_choice")][-1]["body"]
    assert first["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}


def test_upstream_error_in_openai_shape(g: Any) -> None:
    with g.openai() as c:
        c = c.with_options(max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="claude-x", messages=[{"role": "user", "content": "[[status=429]]"}])
        assert e.value.body["code"] == "rate_limit_error" and e.value.body["message"] == "demo error"  # type: ignore[index]
        with pytest.raises(openai.InternalServerError) as e2:
            c.chat.completions.create(model="claude-x", messages=[{"role": "user", "content": "[[status=529]]"}])
        assert e2.value.status_code == 529 and e2.value.body["code"] == "overloaded_error"  # type: ignore[index]
        with pytest.raises(openai.APIError) as e3:  # cut short mid-stream: an error, never a clean finish
            list(
                c.chat.completions.create(
                    model="claude-x",
                    stream=True,
                    messages=[{"role": "user", "content": "[[reply: a b c d e]] [[reset]]"}],
                )
            )
        assert "model server" in str(e3.value)


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 2},
        {"logprobs": True},
        {"top_logprobs": 2, "logprobs": True},
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        {"seed": 1},
        {"presence_penalty": 0.5},
        {"response_format": {"type": "json_object"}},
        {"temperature": 1.5},
        {"reasoning_effort": "high"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
            ]
        },
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "x",
                    "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ]
        },
    ],
)
def test_what_does_not_map_is_refused_and_audited(g: Any, model_server: Any, extra: dict[str, Any]) -> None:
    before = len(model_server[0].requests)
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], **extra}
    with g.client() as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] in ("untranslatable", "unscreenable_content", "unknown_field"), err
    assert err["param"].startswith("$.") and r.headers["x-guard-request-id"]
    rec = _done(g, r.headers["x-guard-request-id"])
    assert rec["type"] == "exchange.denied" and rec["outcome"]["status"] == 400
    assert not [q for q in model_server[0].requests[before:] if q["path"] == "/v1/messages"]


@pytest.mark.parametrize("where", ["content", "system", "tool_arguments", "tool_result", "tool_definition"])
def test_a_secret_in_any_field_is_refused(g: Any, model_server: Any, where: str) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    kw: dict[str, Any] = {}
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": json.dumps({"k": AWS})}}
    if where == "content":
        msgs = [{"role": "user", "content": [{"type": "text", "text": f"key {AWS}"}]}]
    elif where == "system":
        msgs = [{"role": "system", "content": f"key {AWS}"}, *msgs]
    elif where == "tool_arguments":
        msgs = [
            *msgs,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "t", "content": "ok"},
        ]
    elif where == "tool_result":
        call["function"]["arguments"] = "{}"  # type: ignore[index]
        msgs = [
            *msgs,
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "t", "content": AWS},
        ]
    else:
        kw["tools"] = [
            {"type": "function", "function": {"name": "f", "description": AWS, "parameters": {"type": "object"}}}
        ]
    before = len(model_server[0].requests)
    with g.openai() as c, pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="claude-x", messages=msgs, **kw)
    body = e.value.body
    assert body["code"] == "secret_blocked" and AWS not in json.dumps(body)  # type: ignore[index]
    assert not [q for q in model_server[0].requests[before:] if q["path"] == "/v1/messages"]


def test_secret_in_the_answer_is_redacted_whole_and_streamed(
    guard_factory: Any, model_server: Any, tmp_path: Any
) -> None:
    from guard.demo.stack import screening_filters

    d = screening_filters(tmp_path / "filters", model_server[1])  # prompt side off: the model may be told it
    deny = d / "denylist.yaml"
    deny.write_text(deny.read_text().replace("prompt: block", 'prompt: "off"'))
    g = guard_factory(filters={"dir": str(d)})
    directive = f"[[reply: the key is {AWS} ok]] [[chunks=7]]"
    with g.openai() as c:
        whole = c.chat.completions.create(model="claude-x", messages=[{"role": "user", "content": directive}])
        streamed = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(
                model="claude-x", stream=True, messages=[{"role": "user", "content": directive}]
            )
            if ch.choices
        )
    assert whole.choices[0].message.content == streamed == "the key is [REDACTED:aws_access_key_id] ok"


def test_pseudonym_restored_in_the_streamed_answer(g: Any, model_server: Any) -> None:
    """The e-mail address is pseudonymised before the Messages upstream sees it and restored in the Chat
    Completions stream, which arrives in small pieces."""
    with g.openai() as c:
        text = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(
                model="claude-x",
                stream=True,
                messages=[{"role": "user", "content": f"[[echo]] [[chunks=29]] please mail {EMAIL} today"}],
            )
            if ch.choices
        )
    assert text.endswith(f"please mail {EMAIL} today")
    reqs = [r for r in model_server[0].requests if r["path"] == "/v1/messages"]
    seen = json.dumps(reqs[-1]["body"])
    assert EMAIL not in seen and "<EMAIL_ADDRESS_1>" in seen


def test_other_openai_operations_to_a_messages_upstream_are_refused(g: Any) -> None:
    with g.openai() as c:
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model="claude-x", prompt="hi")
        assert e.value.body["code"] == "api_mismatch"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as e2:
            c.embeddings.create(model="claude-x", input="hi")
        assert e2.value.body["code"] == "api_mismatch"  # type: ignore[index]


def test_image_parts_translate_to_image_blocks() -> None:
    """(No server: the image parts need ``allow_unscreened: [image]``, tested for every API in
    tests/hardening/test_canonical_body.py.) Data URLs become base64 sources, web URLs url sources."""
    from guard.apis.translate_anthropic import check, to_messages

    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.org/a.png", "detail": "low"}},
                ],
            }
        ],
    }
    check(body)
    assert to_messages(body)["messages"][0]["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.org/a.png"}},
    ]
    body["messages"][0]["content"][1]["image_url"]["url"] = "file:///etc/passwd"
    with pytest.raises(Exception, match="image URL"):
        check(body)


# --- Ollama /api/chat clients on the same upstream (through the same translation) --------------------------


def _oc(g: Any) -> Any:
    import ollama

    return ollama.Client(host=g.url, verify=g.ssl_context("app"), timeout=10)


def test_ollama_chat_whole_and_streamed(g: Any, model_server: Any) -> None:
    c = _oc(g)
    r = c.chat(
        model="claude-x",
        stream=False,
        options={"temperature": 0.2, "num_predict": 20, "stop": ["END"]},
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "[[reply: hi there]]"}],
    )
    assert r.message.content == "hi there" and r.done and r.done_reason == "stop" and r.eval_count == 2
    body = [q for q in model_server[0].requests if q["path"] == "/v1/messages"][-1]["body"]
    assert body == {
        "model": "claude-x",
        "max_tokens": 20,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "[[reply: hi there]]"}]}],
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }
    parts = list(
        c.chat(model="claude-x", stream=True, messages=[{"role": "user", "content": "[[reply: one two three]]"}])
    )
    assert "".join(p.message.content for p in parts) == "one two three"
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 3
    assert all(not p.done for p in parts[:-1])


def test_ollama_chat_tools_round_trip(g: Any, model_server: Any) -> None:
    c = _oc(g)
    directive = '[[tool: get_weather {"city": "Paris"}]]'
    r = c.chat(model="claude-x", stream=False, tools=TOOLS, messages=[{"role": "user", "content": directive}])
    assert r.message.tool_calls[0].function.name == "get_weather"
    assert r.message.tool_calls[0].function.arguments == {"city": "Paris"}
    streamed = [
        p for p in c.chat(model="claude-x", stream=True, tools=TOOLS, messages=[{"role": "user", "content": directive}])
    ]
    calls = [tc for p in streamed for tc in (p.message.tool_calls or [])]
    assert [(tc.function.name, tc.function.arguments) for tc in calls] == [("get_weather", {"city": "Paris"})]
    assert streamed[-1].done
    c.chat(
        model="claude-x",
        stream=False,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ],
    )
    body = [q for q in model_server[0].requests if q["path"] == "/v1/messages"][-1]["body"]
    use = body["messages"][1]["content"][0]
    assert use["type"] == "tool_use" and use["input"] == {"city": "Paris"}
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": use["id"], "content": "sunny"}]


def test_ollama_chat_refusals_and_errors(g: Any) -> None:
    import ollama

    c = _oc(g)
    for kw, word in (
        ({"think": True}, "thinking"),
        ({"format": "json"}, "JSON schema"),
        ({"options": {"seed": 1}}, "options.seed"),
        ({"messages": [{"role": "user", "content": "hi", "images": ["iVBORw0KGgo="]}]}, "image"),
        ({"messages": [{"role": "user", "content": f"key {AWS}"}]}, "credential"),
        ({"messages": [{"role": "user", "content": "[[status=429]]"}]}, "demo error"),
    ):
        args = {"model": "claude-x", "stream": False, "messages": [{"role": "user", "content": "hi"}], **kw}
        with pytest.raises(ollama.ResponseError) as e:
            c.chat(**args)
        assert isinstance(e.value.error, str) and word in e.value.error, (kw, e.value.error)
        assert AWS not in e.value.error


def test_ollama_pseudonym_restored_in_the_streamed_answer(g: Any, model_server: Any) -> None:
    parts = _oc(g).chat(
        model="claude-x",
        stream=True,
        messages=[{"role": "user", "content": f"[[echo]] [[chunks=29]] please mail {EMAIL} today"}],
    )
    assert "".join(p.message.content for p in parts).endswith(f"please mail {EMAIL} today")
    seen = json.dumps([r for r in model_server[0].requests if r["path"] == "/v1/messages"][-1]["body"])
    assert EMAIL not in seen and "<EMAIL_ADDRESS_1>" in seen
