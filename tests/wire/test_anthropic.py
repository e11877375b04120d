"""Anthropic Messages (POST /v1/messages) through the running proxy with the official ``anthropic`` SDK,
unchanged (base URL + client certificate), against the built-in model server speaking /v1/messages: create
and stream, tools, errors in Anthropic's shape, screens on whole and streamed answers, the upstream's own
key and version headers, and an audit record like every other API's."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import pytest

from tests.hardening.conftest import events

AWS = "AKIAIOSFODNN7EXAMPLE"


def client(g: Any, name: str = "app") -> anthropic.Anthropic:
    import httpx2

    return anthropic.Anthropic(
        base_url=g.url,
        api_key="client-secret-key",
        max_retries=0,
        http_client=httpx2.Client(verify=g.ssl_context(name)),
    )


def sent(model_server: Any, rid: str) -> dict[str, Any]:
    return next(q for q in reversed(model_server[0].requests) if q["headers"].get("x-guard-request-id") == rid)


def ask(c: anthropic.Anthropic, text: str, **kw: Any) -> Any:
    return c.messages.with_raw_response.create(
        model="claude-demo", max_tokens=100, messages=[{"role": "user", "content": text}], **kw
    )


def test_create_whole(guard: Any, model_server: Any) -> None:
    with client(guard) as c:
        raw = ask(c, "[[reply: Hello there]]", system="be brief")
        m = raw.parse()
    assert m.content[0].text == "Hello there" and m.stop_reason == "end_turn" and m.usage.output_tokens == 2
    got = sent(model_server, raw.headers["x-guard-request-id"])
    assert got["path"] == "/v1/messages" and got["body"]["system"] == "be brief"
    # the client's key never reaches the upstream; Guard speaks the version it was configured for
    assert "client-secret-key" not in json.dumps(got["headers"])
    assert got["headers"]["anthropic-version"] == "2023-06-01" and "x-api-key" not in got["headers"]


def test_upstream_key_from_api_key_env(guard_factory: Any, model_server: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-upstream-own")
    g = guard_factory(
        upstreams={
            "anthropic": {
                "url": model_server[1],
                "api": "anthropic",
                "timeout_s": 10,
                "api_key_env": "TEST_ANTHROPIC_KEY",
                "api_version": "2023-01-01",
            }
        }
    )
    with client(g) as c:
        raw = c.messages.with_raw_response.create(
            model="claude-demo",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": "x", "anthropic-version": "9"},
        )
    h = sent(model_server, raw.headers["x-guard-request-id"])["headers"]
    assert h["x-api-key"] == "sk-upstream-own" and h["anthropic-version"] == "2023-01-01"
    assert "anthropic-beta" not in h and "authorization" not in h


def test_stream_events_and_text(guard: Any) -> None:
    with (
        client(guard) as c,
        c.messages.stream(
            model="claude-demo", max_tokens=100, messages=[{"role": "user", "content": "[[reply: one two three]]"}]
        ) as s,
    ):
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert final.content[0].text == "one two three" and final.stop_reason == "end_turn"
    assert kinds[0] == "message_start" and "content_block_delta" in kinds and kinds[-1] == "message_stop"


def test_tools_whole_and_streamed(guard: Any, model_server: Any) -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    directive = '[[tool: get_weather {"city": "Paris"}]]'
    with client(guard) as c:
        m = c.messages.create(
            model="claude-demo", max_tokens=50, tools=tools, messages=[{"role": "user", "content": directive}]
        )
        with c.messages.stream(
            model="claude-demo", max_tokens=50, tools=tools, messages=[{"role": "user", "content": directive}]
        ) as s:
            final = s.get_final_message()
        # a tool round trip: tool_use in the assistant turn, tool_result in the user turn
        m2 = c.messages.create(
            model="claude-demo",
            max_tokens=50,
            tools=tools,
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {"type": "text", "text": "[[reply: fine]]"},
                    ],
                },
            ],
        )
    assert m.stop_reason == "tool_use" and m.content[0].input == {"city": "Paris"}
    tu = [b for b in final.content if b.type == "tool_use"]
    assert tu and tu[0].input == {"city": "Paris"} and final.stop_reason == "tool_use"
    assert m2.content[0].text == "fine"


@pytest.mark.parametrize("where", ["user", "system", "tool_result", "tool_input", "tool_description"])
def test_secret_blocked_in_anthropic_shape(guard: Any, model_server: Any, where: str) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    kw: dict[str, Any] = {}
    if where == "user":
        msgs = [{"role": "user", "content": f"key {AWS}"}]
    elif where == "system":
        kw["system"] = [{"type": "text", "text": f"key {AWS}"}]
    elif where == "tool_result":
        msgs += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": AWS}]}],
            },
        ]
    elif where == "tool_input":
        msgs += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"k": AWS}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
        ]
    else:
        kw["tools"] = [{"name": "f", "description": AWS, "input_schema": {"type": "object"}}]
    with client(guard) as c, pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="claude-demo", max_tokens=10, messages=msgs, **kw)
    body = e.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "secret_blocked" and AWS not in json.dumps(body)
    rid = e.value.response.headers["x-guard-request-id"]
    assert rid not in {q["headers"].get("x-guard-request-id") for q in model_server[0].requests}


def test_errors_in_anthropic_shape(guard: Any) -> None:
    with client(guard) as c:
        with pytest.raises(anthropic.BadRequestError) as e:  # an image is refused by default (unscreenable)
            c.messages.create(
                model="claude-demo",
                max_tokens=10,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                            }
                        ],
                    }
                ],
            )
        assert e.value.body["error"]["code"] == "unscreenable_input"
        assert e.value.body["error"]["param"] == "$.messages[0].content[0].source"
        with pytest.raises(anthropic.BadRequestError) as e:  # server tools pull context Guard never sees
            c.messages.create(
                model="claude-demo",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
            )
        assert e.value.body["error"]["code"] == "unsupported_tool"
        with pytest.raises(anthropic.RateLimitError) as rl:  # the upstream's own error passes in its shape
            ask(c, "[[status=429]]")
        assert rl.value.body["error"]["type"] == "rate_limit_error"
        with pytest.raises(anthropic.PermissionDeniedError) as pd, client(guard, "contractor") as cc:
            cc.messages.create(model="internal-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert pd.value.body["error"]["type"] == "permission_error"


def test_strict_body_rules_apply(guard: Any) -> None:
    head = {"content-type": "application/json"}
    with guard.client() as c:
        dup = b'{"model":"claude-demo","max_tokens":5,"messages":[{"role":"user","content":"hi","content":"x"}]}'
        r = c.post("/v1/messages", content=dup, headers=head)
        assert r.status_code == 400 and r.json()["type"] == "error" and r.json()["error"]["code"] == "duplicate_key"
        r = c.post(
            "/v1/messages",
            json={
                "model": "claude-demo",
                "max_tokens": 5,
                "System": "x",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "ambiguous_key"
        r = c.post(
            "/v1/messages",
            json={
                "model": "claude-demo",
                "max_tokens": 5,
                "container": "c1",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_field"
        r = c.post(
            "/v1/messages",
            json={
                "model": "claude-demo",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "search_result", "source": "x", "title": "t", "content": []}]}
                ],
            },
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_block"


def test_secrets_in_answers_are_redacted_whole_and_streamed(
    guard_factory: Any, model_server: Any, tmp_path: Any
) -> None:
    from guard.demo.stack import screening_filters

    d = screening_filters(tmp_path / "filters", model_server[1])  # prompt side off: the model may be told it
    deny = d / "denylist.yaml"
    deny.write_text(deny.read_text().replace("prompt: block", 'prompt: "off"'))
    g = guard_factory(filters={"dir": str(d)})
    directive = f"[[reply: the key is {AWS} ok]] [[chunks=7]]"
    with client(g) as c:
        with c.messages.stream(
            model="claude-demo", max_tokens=50, messages=[{"role": "user", "content": directive}]
        ) as s:
            streamed = s.get_final_message().content[0].text
        whole = ask(c, directive).parse().content[0].text
    assert streamed == whole == "the key is [REDACTED:aws_access_key_id] ok"


def test_unsafe_stream_ends_with_stop_reason_refusal(guard_factory: Any, tmp_path: Any) -> None:
    from guard.demo.llama_guard_standin import StandIn, StandInThread
    from tests.filters.test_safety_proxy import SAFE, UNSAFE_TAIL, filters_dir

    judge = StandInThread(StandIn(ignore=r"\[\[.*?\]\]"))
    try:
        g = guard_factory(filters={"dir": str(filters_dir(tmp_path, judge.url))})
        reply = SAFE * 3 + UNSAFE_TAIL + " " + SAFE * 5
        with client(g) as c:
            with c.messages.stream(
                model="claude-demo", max_tokens=500, messages=[{"role": "user", "content": f"[[reply: {reply}]]"}]
            ) as s:
                kinds = [e.type for e in s]
                final = s.get_final_message()
            whole = ask(c, f"[[reply: {reply}]]").parse()
    finally:
        judge.stop()
    text = "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason == "refusal" and kinds[-1] == "message_stop"
    assert "kill" not in text and reply.startswith(text)
    assert whole.stop_reason == "refusal" and whole.content == []


def test_audit_record_shape_is_the_same_as_chat_completions(guard: Any) -> None:
    with client(guard) as c:
        rid_m = ask(c, "hello").headers["x-guard-request-id"]
    with guard.openai() as o:
        rid_c = o.chat.completions.with_raw_response.create(
            model="demo-model", messages=[{"role": "user", "content": "hello"}]
        ).headers["x-guard-request-id"]
    deadline = time.monotonic() + 5
    while True:
        done = {
            e["request_id"]: e
            for e in events(guard.config.audit.dir)
            if e.get("type") == "exchange.completed" and e.get("request_id") in (rid_m, rid_c)
        }
        if len(done) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    m, c2 = done[rid_m], done[rid_c]
    assert set(m) == set(c2)
    assert (m["api"], m["operation"]) == ("anthropic", "chat") and m["usage"]["prompt_tokens"] >= 1


def test_field_table_knows_the_sdk_parameters() -> None:
    """Every parameter of the installed ``anthropic`` SDK's messages.create is in Guard's table, except the
    ones refused on purpose (they bring context or routing Guard does not see)."""
    import typing

    from anthropic.types import (
        ImageBlockParam,
        RedactedThinkingBlockParam,
        TextBlockParam,
        ThinkingBlockParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
        message_create_params,
    )

    from guard.apis import field_tables as F

    refused = {"container", "diagnostics", "user_profile_id", "workspace_id"}
    keys = set(typing.get_type_hints(message_create_params.MessageCreateParamsBase)) | {"stream"}
    assert keys - refused <= set(F.ANTHROPIC_MESSAGES), keys - refused - set(F.ANTHROPIC_MESSAGES)
    assert not refused & set(F.ANTHROPIC_MESSAGES)
    block = F.ANTHROPIC_MESSAGES["messages"].sub["content"].sub  # type: ignore[index]
    not_read = {"citations", "caller", "toolset_name", "transformations"}  # refused unless extra_fields
    for td in (
        TextBlockParam,
        ImageBlockParam,
        ToolUseBlockParam,
        ToolResultBlockParam,
        ThinkingBlockParam,
        RedactedThinkingBlockParam,
    ):
        assert set(typing.get_type_hints(td)) - not_read <= set(block), td
    assert set(typing.get_type_hints(ToolParam)) - {"allowed_callers", "defer_loading", "eager_input_streaming"} <= set(
        F.ANTHROPIC_MESSAGES["tools"].sub
    )  # type: ignore[arg-type]


def test_policy_can_tell_the_wire_api(guard_factory: Any, tmp_path: Any) -> None:
    """Messages requests are the ``chat`` action; ``r.obj.wire`` is the client's API, so a rule can allow
    one API and not another for the same model and group."""
    from guard.demo.stack import ROOT

    rules = tmp_path / "policy.csv"
    rules.write_text(
        (ROOT / "policies/policy.csv").read_text()
        + "\np, access, deny, chat, -, r.obj.wire == 'anthropic' && 'apps' in r.sub.ou\n"
    )
    g = guard_factory(policy={"model": str(ROOT / "policies/model.conf"), "rules": [str(rules)]})
    with client(g) as c, pytest.raises(anthropic.PermissionDeniedError) as e:
        c.messages.create(model="claude-demo", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "permission_error"
    with g.openai() as o:  # the same group and action through Chat Completions
        r = o.chat.completions.create(model="demo-model", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content


def test_thinking_is_screened_whole_and_streamed(guard_factory: Any, model_server: Any, tmp_path: Any) -> None:
    """Thinking blocks are model text too: thinking_delta goes through the stream screens on its own channel."""
    from guard.demo.stack import screening_filters

    d = screening_filters(tmp_path / "filters", model_server[1])
    deny = d / "denylist.yaml"
    deny.write_text(deny.read_text().replace("prompt: block", 'prompt: "off"'))
    g = guard_factory(filters={"dir": str(d)})
    directive = f"[[think: the key is {AWS} hmm]] [[reply: done]]"
    with client(g) as c:
        with c.messages.stream(
            model="claude-demo", max_tokens=50, messages=[{"role": "user", "content": directive}]
        ) as s:
            streamed = s.get_final_message()
        whole = ask(c, directive).parse()
    for m in (streamed, whole):
        assert m.content[0].type == "thinking" and m.content[1].text == "done"
        assert m.content[0].thinking == "the key is [REDACTED:aws_access_key_id] hmm"
