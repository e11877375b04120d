"""Attack on the running proxy: a secret written with JSON escapes in a field that carries JSON text.

Tool-call arguments, tool results and Responses ``function_call_output`` are JSON text inside a JSON string.
Any model (or client) reading them decodes the escapes: ``"\\u0067hp_..."`` is ``ghp_...``. A screen that reads
the raw text would see ``\\u0067hp_`` and let the token pass. Guard screens such text decoded, every string
value and every key (guard.screens.json_text): in requests the shipped denylist blocks (400
``secret_blocked``, never reaching the model server), in answers it redacts and the arguments stay valid
JSON, whole and streamed in any chunking (a ``\\u00`` escape cut between two stream chunks included).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hardening.conftest import error_field, events
from tests.hardening.raw_upstream import chat_tool_answer, chat_tool_stream, fixed, guard_before

AWS = "AKIAIOSFODNN7EXAMPLE"
GHP = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
CHAT, RESP, AMSG, OCHAT = "/v1/chat/completions", "/v1/responses", "/v1/messages", "/api/chat"


def esc(text: str, at: tuple[int, ...] | None = None, upper: bool = False) -> str:
    """``text`` as JSON string content with the characters at ``at`` (all when None) written as ``\\uXXXX``."""
    out = []
    for i, ch in enumerate(text):
        if at is None or i in at:
            out.append(("\\u%04X" if upper else "\\u%04x") % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


# each: a secret's JSON-escaped spelling (what goes between the quotes of a JSON string)
SPELLINGS = {
    "first-char": esc(GHP, (0,)),
    "middle-char": esc(AWS, (4,)),
    "upper-hex": esc(AWS, (0, 5, 19), upper=True),
    "every-char": esc(AWS),
    "mixed": esc(GHP, tuple(range(0, 40, 3))),
}


def args_text(spelled: str, where: str = "value") -> str:
    """JSON text of tool-call arguments with the spelled secret as a value, or as a key."""
    if where == "key":
        return '{"' + spelled + '": 1}'
    return '{"note": "see", "token": "' + spelled + '"}'


def _requests(text: str) -> list[tuple[str, dict[str, Any]]]:
    """A request body for each JSON-text field a client can fill, with ``text`` in it."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": text}}
    go = {"role": "user", "content": "go on"}
    return [
        (CHAT, {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [call]}, go]}),
        (
            CHAT,
            {
                "model": "m",
                "messages": [
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "c1", "content": text},
                    go,
                ],
            },
        ),
        (
            CHAT,
            {
                "model": "m",
                "messages": [
                    {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": text}},
                    go,
                ],
            },
        ),
        (
            RESP,
            {"model": "m", "input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": text}, go]},
        ),
        (
            RESP,
            {
                "model": "m",
                "input": [
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": text},
                    go,
                ],
            },
        ),
        (
            AMSG,
            {
                "model": "claude-demo",
                "max_tokens": 20,
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": text}]},
                ],
            },
        ),
        (
            OCHAT,
            {
                "model": "llama3",
                "stream": False,
                "messages": [
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"function": {"name": "f", "arguments": text}}],
                    },
                    {"role": "tool", "content": text},
                    go,
                ],
            },
        ),
    ]


@pytest.mark.parametrize("where", ["value", "key"])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_an_escaped_secret_in_a_json_text_field_is_blocked(
    guard: Any, model_server: Any, spelling: str, where: str
) -> None:
    text = args_text(SPELLINGS[spelling], where)
    assert json.loads(text)  # valid JSON, whose decoded strings hold the secret
    assert AWS not in text and GHP not in text
    rids = []
    with guard.client("prod-workload") as c:
        for path, body in _requests(text):
            r = c.post(path, json=body)
            assert r.status_code == 400, (path, body, r.text)
            assert error_field(r) == "secret_blocked", (path, r.text)
            rids.append(r.headers["x-guard-request-id"])
    sent = {q["headers"].get("x-guard-request-id") for q in model_server[0].requests}
    assert not set(rids) & sent
    if spelling == "middle-char":  # the audit record says in which kind of field (not the value)
        denied = _denied(guard.config.audit.dir, set(rids))
        for rid in rids:
            deny = [x for x in denied[rid]["screens"] if x["name"] == "denylist"]
            assert deny and deny[0]["blocked"], deny
            assert deny[0]["fields"] and set(deny[0]["fields"]) <= {"tool_arguments", "tool_result"}, deny
            assert AWS not in json.dumps(denied[rid]), denied[rid]


def _denied(audit_dir: Any, rids: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        found = {e["request_id"]: e for e in events(audit_dir) if e.get("type") == "exchange.denied"}
        if rids <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_openai_sdk_cannot_pass_an_escaped_secret_in_tool_arguments(guard: Any) -> None:
    import openai

    client = guard.openai("prod-workload")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="demo-model",
            messages=[
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": args_text(SPELLINGS["middle-char"])},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
        )
    assert e.value.status_code == 400 and e.value.body["code"] == "secret_blocked", e.value.body


def test_plain_json_text_still_passes(guard: Any) -> None:
    """The decoding is no false alarm: ordinary escaped JSON (quotes, non-ASCII, ``\\/``) goes through."""
    text = '{"q": "caf\\u00e9 \\"latte\\"", "path": "a\\/b", "n": 3}'
    with guard.client("prod-workload") as c:
        for path, body in _requests(text):
            r = c.post(path, json=body)
            assert r.status_code == 200, (path, r.text)


# --- answers ------------------------------------------------------------------------------------------------


def _resp_answer(arguments: str) -> bytes:
    item = {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c1", "name": "f"}
    return json.dumps(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 0,
            "model": "r-m",
            "status": "completed",
            "output": [{**item, "arguments": arguments}],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
    ).encode()


ANSWER_TEXT = args_text(SPELLINGS["middle-char"])
KEY_TEXT = args_text(SPELLINGS["every-char"], "key")
CUTS = [ANSWER_TEXT[:i] for i in range(ANSWER_TEXT.index("\\u"), ANSWER_TEXT.index("\\u") + 7)]
# The shipped aws_secret_access_key rule matches from the key's name to the end of its value: across a quote.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PAIR_TEXT = '{"region": "eu-west-1", "aws_secret_access_key": "' + AWS_SECRET.replace("/", "\\/") + '", "n": 7}'


def _anthropic_stream(pieces: list[str]) -> bytes:
    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "a-m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": msg},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}}
            for p in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


def _responses_stream(pieces: list[str]) -> bytes:
    item = {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "c1", "name": "f"}
    done = {**item, "status": "completed", "arguments": "".join(pieces)}
    resp = {
        "id": "resp_1",
        "object": "response",
        "created_at": 0,
        "model": "r-m",
        "status": "in_progress",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": resp},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "arguments": ""}},
        *(
            {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": p}
            for p in pieces
        ),
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 0,
            "arguments": done["arguments"],
        },
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": {**resp, "status": "completed", "output": [done]}},
    ]
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps({**e, "sequence_number": i}).encode())
        for i, e in enumerate(events)
    )


HANDLERS: dict[str, Any] = {
    **{
        f"r-cut{len(cut)}": fixed(_responses_stream([cut, ANSWER_TEXT[len(cut) :]]), b"text/event-stream")
        for cut in CUTS
    },
    **{
        f"a-cut{len(cut)}": fixed(_anthropic_stream([cut, ANSWER_TEXT[len(cut) :]]), b"text/event-stream")
        for cut in CUTS
    },
    "w-value": fixed(chat_tool_answer(ANSWER_TEXT)),
    "w-key": fixed(chat_tool_answer(KEY_TEXT)),
    "r-value": fixed(_resp_answer(ANSWER_TEXT)),
    **{
        f"s-cut{len(cut)}": fixed(chat_tool_stream([cut, ANSWER_TEXT[len(cut) :]]), b"text/event-stream")
        for cut in CUTS
    },
    "s-chars": fixed(chat_tool_stream(list(ANSWER_TEXT)), b"text/event-stream"),
    "s-key": fixed(chat_tool_stream([KEY_TEXT[:9], KEY_TEXT[9:40], KEY_TEXT[40:]]), b"text/event-stream"),
    "w-pair": fixed(chat_tool_answer(PAIR_TEXT)),
    "s-pair": fixed(chat_tool_stream(list(PAIR_TEXT)), b"text/event-stream"),
    "a-pair": fixed(
        _anthropic_stream([PAIR_TEXT[i : i + 3] for i in range(0, len(PAIR_TEXT), 3)]), b"text/event-stream"
    ),
    "r-pair": fixed(
        _responses_stream([PAIR_TEXT[i : i + 5] for i in range(0, len(PAIR_TEXT), 5)]), b"text/event-stream"
    ),
}


@pytest.fixture(scope="module")
def upstream(pki_dir: Any, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    routes = [
        ("r-*", {"api": "openai", "responses": "native"}),
        ("a-*", {"api": "anthropic"}),
        ("*", {"api": "openai"}),
    ]
    with guard_before(HANDLERS, pki_dir, model_server[1], tmp_path_factory.mktemp("escaped"), routes) as g:
        yield g


def _decoded_clean(arguments: str) -> None:
    """The arguments are still valid JSON, and no decoded key or string holds the secret."""
    value = json.loads(arguments)
    flat = json.dumps(value, ensure_ascii=False)
    assert AWS not in flat and GHP not in flat, flat
    assert "[REDACTED:aws_access_key_id]" in flat, flat


def test_an_escaped_secret_in_answer_arguments_is_redacted(upstream: Any) -> None:
    client = upstream.openai("staff")
    for model in ("w-value", "w-key"):
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        calls = r.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "f", r
        _decoded_clean(calls[0].function.arguments)


def test_an_escaped_secret_in_responses_arguments_is_redacted(upstream: Any) -> None:
    with upstream.client("staff") as c:
        r = c.post(RESP, json={"model": "r-value", "input": "hi"})
    assert r.status_code == 200, r.text
    item = r.json()["output"][0]
    assert item["type"] == "function_call", item
    _decoded_clean(item["arguments"])


@pytest.mark.parametrize("model", [f"s-cut{len(c)}" for c in CUTS] + ["s-chars", "s-key"])
def test_an_escaped_secret_in_streamed_arguments_is_redacted(upstream: Any, model: str) -> None:
    """The escape may be cut anywhere between two chunks (``\\``, ``\\u``, ``\\u00``, ``\\u004``...)."""
    client = upstream.openai("staff")
    args = ""
    for chunk in client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "hi"}]):
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                args += (tc.function and tc.function.arguments) or ""
    _decoded_clean(args)


@pytest.mark.parametrize("model", [f"a-cut{len(c)}" for c in CUTS])
def test_an_escaped_secret_in_streamed_anthropic_tool_input_is_redacted(upstream: Any, model: str) -> None:
    """Anthropic streams tool input as ``input_json_delta`` pieces; the official SDK joins and parses them."""
    import anthropic
    import httpx2

    client = anthropic.Anthropic(
        base_url=upstream.url,
        api_key="client-secret-key",
        max_retries=0,
        http_client=httpx2.Client(verify=upstream.ssl_context("staff")),
    )
    with client.messages.stream(model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as s:
        raw = "".join(
            e.delta.partial_json for e in s if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        )
        final = s.get_final_message()
    _decoded_clean(raw)
    block = final.content[0]
    assert block.type == "tool_use", final
    _decoded_clean(json.dumps(block.input))


@pytest.mark.parametrize("model", [f"r-cut{len(c)}" for c in CUTS])
def test_an_escaped_secret_in_streamed_responses_arguments_is_redacted(upstream: Any, model: str) -> None:
    """Responses streams arguments as ``function_call_arguments.delta`` events and repeats them whole in the
    ``.done``, ``output_item.done`` and ``response.completed`` events: every copy is the screened one."""
    deltas, whole = "", []
    with upstream.openai("staff").responses.stream(model=model, input="hi") as s:
        for e in s:
            if e.type == "response.function_call_arguments.delta":
                deltas += e.delta
            elif e.type == "response.function_call_arguments.done":
                whole.append(e.arguments)
            elif e.type == "response.output_item.done":
                whole.append(e.item.arguments)
        final = s.get_final_response()
    whole.append(final.output[0].arguments)
    for text in (deltas, *whole):
        _decoded_clean(text)


def _pair_clean(arguments: str) -> None:
    """Redacted in the key and in the value, the JSON between them kept: the arguments still parse."""
    value = json.loads(arguments)
    mark = "[REDACTED:aws_secret_access_key]"
    assert value == {"region": "eu-west-1", mark: mark, "n": 7}, arguments


def test_a_secret_across_a_key_and_its_value_is_redacted_and_the_arguments_stay_json(upstream: Any) -> None:
    """A redaction spanning ``"aws_secret_access_key": "..."`` is made in the key and in the value: whole and
    streamed a character at a time (Chat Completions), three characters at a time as Anthropic
    ``input_json_delta`` (the official SDK parses the joined input: broken JSON would raise there) and five
    at a time as Responses argument deltas."""
    client = upstream.openai("staff")
    r = client.chat.completions.create(model="w-pair", messages=[{"role": "user", "content": "hi"}])
    _pair_clean(r.choices[0].message.tool_calls[0].function.arguments)
    args = ""
    for chunk in client.chat.completions.create(
        model="s-pair", stream=True, messages=[{"role": "user", "content": "hi"}]
    ):
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                args += (tc.function and tc.function.arguments) or ""
    _pair_clean(args)

    import anthropic
    import httpx2

    claude = anthropic.Anthropic(
        base_url=upstream.url,
        api_key="client-secret-key",
        max_retries=0,
        http_client=httpx2.Client(verify=upstream.ssl_context("staff")),
    )
    with claude.messages.stream(model="a-pair", max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use", final
    _pair_clean(json.dumps(block.input))

    with client.responses.stream(model="r-pair", input="hi") as rs:
        done = [e.arguments for e in rs if e.type == "response.function_call_arguments.done"]
        final_r = rs.get_final_response()
    for text in (*done, final_r.output[0].arguments):
        _pair_clean(text)
