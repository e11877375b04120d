"""OpenAI Responses (POST /v1/responses) through the running proxy with the official ``openai`` SDK,
unchanged, against the built-in model server's /v1/responses: create and stream (typed events), function
tools and their round trip, built-in tools and server-side state refused, screens on whole and streamed
answers including the events that repeat the whole text, errors in OpenAI's shape."""

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
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_create_whole(guard: Any, model_server: Any) -> None:
    with guard.openai() as c:
        raw = c.responses.with_raw_response.create(
            model="demo-model", input="[[reply: Hello there]]", instructions="be brief"
        )
        r = raw.parse()
    assert r.output_text == "Hello there" and r.status == "completed" and r.usage.output_tokens == 2
    got = sent(model_server, raw.headers["x-guard-request-id"])
    assert got["path"] == "/v1/responses" and got["body"]["instructions"] == "be brief"
    assert got["body"]["store"] is False  # the upstream keeps nothing a later request could refer to
    assert "client-secret-key" not in json.dumps(got["headers"])


def test_stream_events(guard: Any) -> None:
    with guard.openai() as c:
        evs = list(
            c.responses.create(
                model="demo-model",
                input=[{"role": "user", "content": [{"type": "input_text", "text": "[[reply: one two three]]"}]}],
                stream=True,
            )
        )
    kinds = [e.type for e in evs]
    text = "".join(e.delta for e in evs if e.type == "response.output_text.delta")
    assert text == "one two three" and kinds[0] == "response.created" and kinds[-1] == "response.completed"
    done = next(e for e in evs if e.type == "response.output_text.done")
    assert done.text == "one two three" and evs[-1].response.output_text == "one two three"
    assert evs[-1].response.usage.output_tokens == 3


def test_function_tools_whole_streamed_and_round_trip(guard: Any, model_server: Any) -> None:
    directive = '[[tool: get_weather {"city": "Paris"}]]'
    with guard.openai() as c:
        r = c.responses.create(model="demo-model", input=directive, tools=[TOOL])
        evs = list(c.responses.create(model="demo-model", input=directive, tools=[TOOL], stream=True))
        raw = c.responses.with_raw_response.create(
            model="demo-model",
            tools=[TOOL],
            input=[
                {"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"role": "user", "content": "[[reply: fine]]"},
            ],
        )
    call = r.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    args = "".join(e.delta for e in evs if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    assert json.loads(next(e for e in evs if e.type == "response.function_call_arguments.done").arguments) == {
        "city": "Paris"
    }
    assert raw.parse().output_text == "fine"
    assert sent(model_server, raw.headers["x-guard-request-id"])["body"]["input"][2]["output"] == "sunny"


@pytest.mark.parametrize(
    "kw,code",
    [
        ({"tools": [{"type": "web_search"}]}, "unsupported_tool"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "unsupported_tool"),
        ({"previous_response_id": "resp_1"}, "stateful_refused"),
        ({"store": True}, "stateful_refused"),
        ({"conversation": "conv_1"}, "stateful_refused"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "unsupported_item"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}
                ]
            },
            "unscreenable_input",
        ),
        ({"prompt": {"id": "pmpt_1"}}, "unknown_field"),
    ],
)
def test_context_guard_cannot_see_is_refused(guard: Any, model_server: Any, kw: dict[str, Any], code: str) -> None:
    body = {"model": "demo-model", "input": "hi", **kw}
    with guard.client() as c:
        r = c.post("/v1/responses", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    assert r.headers["x-guard-request-id"] not in {
        q["headers"].get("x-guard-request-id") for q in model_server[0].requests
    }


def test_stateful_upstream_may_take_previous_response_id(guard_factory: Any, model_server: Any) -> None:
    g = guard_factory(upstreams={"local": {"url": model_server[1], "api": "openai", "timeout_s": 10, "stateful": True}})
    with g.openai() as c:
        raw = c.responses.with_raw_response.create(
            model="demo-model", input="hi", previous_response_id="resp_1", store=True
        )
    body = sent(model_server, raw.headers["x-guard-request-id"])["body"]
    assert body["previous_response_id"] == "resp_1" and body["store"] is True


@pytest.mark.parametrize("where", ["input", "instructions", "part", "function_output", "arguments", "tool"])
def test_secret_blocked(guard: Any, where: str) -> None:
    kw: dict[str, Any] = {"input": "hi"}
    if where == "input":
        kw["input"] = f"key {AWS}"
    elif where == "instructions":
        kw["instructions"] = AWS
    elif where == "part":
        kw["input"] = [{"role": "user", "content": [{"type": "input_text", "text": AWS}]}]
    elif where == "function_output":
        kw["input"] = [
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": AWS},
        ]
    elif where == "arguments":
        kw["input"] = [
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": json.dumps({"k": AWS})},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
        ]
    else:
        kw["tools"] = [{**TOOL, "description": AWS}]
    with guard.openai() as c, pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="demo-model", **kw)
    assert e.value.body["code"] == "secret_blocked" and AWS not in json.dumps(e.value.body)


def test_redaction_reaches_the_done_events_too(guard_factory: Any, model_server: Any, tmp_path: Path) -> None:
    """A streamed answer's delta events are screened; the events that repeat the whole text
    (output_text.done, content_part.done, output_item.done, response.completed) carry the screened text."""
    from guard.demo.stack import screening_filters

    d = screening_filters(tmp_path / "filters", model_server[1])
    deny = d / "denylist.yaml"
    deny.write_text(deny.read_text().replace("prompt: block", 'prompt: "off"'))
    g = guard_factory(filters={"dir": str(d)})
    with g.openai() as c:
        evs = list(
            c.responses.create(model="demo-model", input=f"[[reply: the key is {AWS} ok]] [[chunks=6]]", stream=True)
        )
        whole = c.responses.create(model="demo-model", input=f"[[reply: the key is {AWS} ok]]")
    want = "the key is [REDACTED:aws_access_key_id] ok"
    dump = json.dumps([e.model_dump() for e in evs])
    assert AWS not in dump and whole.output_text == want
    assert "".join(e.delta for e in evs if e.type == "response.output_text.delta") == want
    assert next(e for e in evs if e.type == "response.output_text.done").text == want
    assert evs[-1].type == "response.completed" and evs[-1].response.output_text == want


def test_unsafe_stream_ends_incomplete_content_filter(guard_factory: Any, tmp_path: Path) -> None:
    from guard.demo.llama_guard_standin import StandIn, StandInThread
    from tests.filters.test_safety_proxy import SAFE, UNSAFE_TAIL, filters_dir

    judge = StandInThread(StandIn(ignore=r"\[\[.*?\]\]"))
    try:
        g = guard_factory(filters={"dir": str(filters_dir(tmp_path, judge.url))})
        reply = SAFE * 3 + UNSAFE_TAIL + " " + SAFE * 5
        with g.openai() as c:
            evs = list(c.responses.create(model="demo-model", input=f"[[reply: {reply}]]", stream=True))
            whole = c.responses.create(model="demo-model", input=f"[[reply: {reply}]]")
    finally:
        judge.stop()
    text = "".join(e.delta for e in evs if e.type == "response.output_text.delta")
    assert evs[-1].type == "response.incomplete" and evs[-1].response.incomplete_details.reason == "content_filter"
    assert "kill" not in json.dumps([e.model_dump() for e in evs]) and reply.startswith(text)
    assert whole.status == "incomplete" and whole.incomplete_details.reason == "content_filter" and whole.output == []


def test_pseudonym_restored_in_the_streamed_answer(pki_dir: Path, model_server: Any, tmp_path: Path) -> None:
    from guard.demo.stack import screening_filters
    from tests.conftest import start_guard

    d = screening_filters(tmp_path / "pii-filters", model_server[1])
    (d / "pii.yaml").write_text(PII_YAML)
    g = start_guard(pki_dir, model_server[1], tmp_path, judge_url=model_server[1], filters={"dir": str(d)})
    try:
        with g.openai() as c:
            evs = list(
                c.responses.create(
                    model="demo-model", stream=True, input=f"[[echo]] [[chunks=31]] please mail {EMAIL} today"
                )
            )
    finally:
        g.stop()
    text = "".join(e.delta for e in evs if e.type == "response.output_text.delta")
    assert text.endswith(f"please mail {EMAIL} today") and evs[-1].response.output_text == text
    reqs = [r for r in model_server[0].requests if "guard" not in str(r["body"].get("model", "")).lower()]
    assert EMAIL not in json.dumps(reqs[-1]["body"]) and "<EMAIL_ADDRESS_1>" in json.dumps(reqs[-1]["body"])


def test_audit_record_and_policy_attributes(guard: Any) -> None:
    with guard.openai() as c:
        rid_r = c.responses.with_raw_response.create(model="demo-model", input="hi").headers["x-guard-request-id"]
        rid_c = c.chat.completions.with_raw_response.create(
            model="demo-model", messages=[{"role": "user", "content": "hi"}]
        ).headers["x-guard-request-id"]
    deadline = time.monotonic() + 5
    while True:
        done = {
            e["request_id"]: e
            for e in events(guard.config.audit.dir)
            if e.get("type") == "exchange.completed" and e.get("request_id") in (rid_r, rid_c)
        }
        if len(done) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    r, c2 = done[rid_r], done[rid_c]
    assert set(r) == set(c2) and (r["api"], r["operation"]) == ("responses", "chat")
    assert r["usage"]["prompt_tokens"] >= 1 and r["decisions"]["access"]["effect"] == "allow"


def test_field_table_knows_the_sdk_parameters() -> None:
    import typing

    from openai.types.responses import response_create_params as rc

    from guard.apis import field_tables as F

    refused = {"prompt", "context_management", "access_programs", "image", "moderation", "background_options"}
    keys = set(typing.get_type_hints(rc.ResponseCreateParamsBase)) | {"stream"}
    assert keys - refused <= set(F.OPENAI_RESPONSES), keys - refused - set(F.OPENAI_RESPONSES)


def test_content_capture_keeps_the_prompt_of_items(guard_factory: Any, tmp_path: Path) -> None:
    """audit.capture: full keeps the prompt as forwarded whatever the API: Responses items and Messages blocks
    (messages, system prompt, tool results), not only plain strings."""
    import anthropic as anthropic_sdk
    import httpx2

    g = guard_factory(audit={"dir": str(tmp_path / "audit"), "capture": "full"})
    with g.openai() as c:
        rid_r = c.responses.with_raw_response.create(
            model="demo-model",
            instructions="sys-r",
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": "item-text"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "tool-out"},
            ],
        ).headers["x-guard-request-id"]
    with anthropic_sdk.Anthropic(
        base_url=g.url, api_key="k", max_retries=0, http_client=httpx2.Client(verify=g.ssl_context())
    ) as a:
        rid_m = a.messages.with_raw_response.create(
            model="claude-demo",
            max_tokens=5,
            system=[{"type": "text", "text": "sys-m"}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "block-text"}]}],
        ).headers["x-guard-request-id"]
    deadline = time.monotonic() + 5
    while True:
        started = {
            e["request_id"]: e
            for e in events(g.config.audit.dir)
            if e.get("type") == "exchange.started" and e.get("request_id") in (rid_r, rid_m)
        }
        if len(started) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pr = started[rid_r]["content"]["prompt"]
    pm = started[rid_m]["content"]["prompt"]
    assert all(t in pr for t in ("sys-r", "item-text", "tool-out")), pr
    assert all(t in pm for t in ("sys-m", "block-text")), pm


def test_policy_allows_responses_only_for_one_group(guard_factory: Any, tmp_path: Path) -> None:
    """Responses requests are the ``chat`` action; ``r.obj.wire`` tells the client's API, so the rule of
    docs/wire-apis.md keeps the Responses API to staff while apps keep Chat Completions for the same model."""
    from guard.demo.stack import ROOT

    rules = tmp_path / "policy.csv"
    rules.write_text(
        (ROOT / "policies/policy.csv").read_text()
        + "\np, access, deny, chat, -, r.obj.wire == 'responses' && !('staff' in r.sub.ou)\n"
    )
    g = guard_factory(policy={"model": str(ROOT / "policies/model.conf"), "rules": [str(rules)]})
    with g.openai() as app, g.openai("staff") as staff:
        with pytest.raises(openai.PermissionDeniedError) as e:
            app.responses.create(model="demo-model", input="[[reply: hi]]")
        assert e.value.body["code"] == "access_denied"  # type: ignore[index]
        chat = app.chat.completions.create(model="demo-model", messages=[{"role": "user", "content": "[[reply: hi]]"}])
        assert chat.choices[0].message.content == "hi"
        assert staff.responses.create(model="demo-model", input="[[reply: hi]]").output_text == "hi"
    rid = e.value.response.headers["x-guard-request-id"]
    deadline = time.monotonic() + 5
    while not (rec := [x for x in events(g.config.audit.dir) if x.get("request_id") == rid]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert rec[0]["type"] == "exchange.denied" and rec[0]["decisions"]["access"]["rule"].endswith(":41")
