"""A hostile upstream against the stream relay of the newer wire APIs: model text placed where a relay that
only screens deltas would not look. Through the running proxy with the shipped denylist (answers: secrets
redacted), the client never receives the secret:

* Responses events that repeat the whole text (``output_text.done``, ``content_part.done``,
  ``output_item.done``, ``response.completed``) while the deltas are clean, or with no deltas at all;
* Anthropic text in ``content_block_start`` and in ``thinking_delta``; whole answers' thinking blocks.

And hostile request shapes for the same APIs: a 400 in the API's shape, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from guard.demo.stack import ServerThread, free_port

AWS = "AKIAIOSFODNN7EXAMPLE"


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)


def _msg(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "m1",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_stream(deltas: list[str]) -> bytes:
    full = f"the key is {AWS}"
    evs: list[dict[str, Any]] = [
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {
                "id": "r1",
                "object": "response",
                "created_at": 0,
                "model": "m",
                "status": "in_progress",
                "output": [],
            },
        }
    ]
    evs += [
        {
            "type": "response.output_text.delta",
            "item_id": "m1",
            "output_index": 0,
            "content_index": 0,
            "delta": d,
            "sequence_number": 1,
        }
        for d in deltas
    ]
    evs += [
        {
            "type": "response.output_text.done",
            "item_id": "m1",
            "output_index": 0,
            "content_index": 0,
            "text": full,
            "sequence_number": 2,
        },
        {
            "type": "response.content_part.done",
            "item_id": "m1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": full},
            "sequence_number": 3,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": _msg(full), "sequence_number": 4},
        {
            "type": "response.completed",
            "sequence_number": 5,
            "response": {
                "id": "r1",
                "object": "response",
                "created_at": 0,
                "model": "m",
                "status": "completed",
                "output": [_msg(full)],
                "usage": {"input_tokens": 1, "output_tokens": 4},
            },
        },
    ]
    return _sse(evs)


def messages_stream() -> bytes:
    evs = [
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "m",
                "stop_reason": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": f"k={AWS}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": f"key {AWS} "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "done"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]
    return _sse(evs)


def messages_whole() -> bytes:
    return json.dumps(
        {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "stop_reason": "end_turn",
            "content": [
                {"type": "thinking", "thinking": f"k={AWS}", "signature": "s"},
                {"type": "text", "text": "done"},
            ],
            "usage": {"input_tokens": 1, "output_tokens": 2},
        }
    ).encode()


def hostile_app(answers: dict[str, Callable[[], tuple[bytes, bytes]]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            m = await receive()
            raw += m.get("body", b"")
            if not m.get("more_body"):
                break
        ctype, body = answers[json.loads(raw)["model"]]()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})

    return app


SSE, JSON = b"text/event-stream", b"application/json"


@pytest.fixture
def hostile() -> Iterator[str]:
    import uvicorn

    app = hostile_app(
        {
            "resp-clean-deltas": lambda: (SSE, responses_stream(["the key ", "is ", "hidden"])),
            "resp-no-deltas": lambda: (SSE, responses_stream([])),
            "claude-stream": lambda: (SSE, messages_stream()),
            "claude-whole": lambda: (JSON, messages_whole()),
        }
    )
    port = free_port()
    th = ServerThread(
        lambda: [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))]
    ).start()
    yield f"http://127.0.0.1:{port}"
    th.stop()


def test_text_outside_the_deltas_never_reaches_the_client(guard_factory: Any, hostile: str) -> None:
    g = guard_factory(
        upstreams={
            "local": {"url": hostile, "api": "openai", "timeout_s": 10},
            "anthropic": {"url": hostile, "api": "anthropic", "timeout_s": 10},
        }
    )
    seen: dict[str, str] = {}
    with g.client() as c:
        for model in ("resp-clean-deltas", "resp-no-deltas"):
            r = c.post("/v1/responses", json={"model": model, "input": "hi", "stream": True})
            seen[model] = r.text
        r = c.post(
            "/v1/messages",
            json={
                "model": "claude-stream",
                "max_tokens": 9,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        seen["claude-stream"] = r.text
        r = c.post(
            "/v1/messages",
            json={"model": "claude-whole", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
        )
        seen["claude-whole"] = r.text
    for model, text in seen.items():
        assert AWS not in text, model
    done = [json.loads(line[6:]) for line in seen["resp-clean-deltas"].splitlines() if line.startswith("data: ")]
    assert [e["text"] for e in done if e["type"] == "response.output_text.done"] == ["the key is hidden"]
    nodelta = [json.loads(line[6:]) for line in seen["resp-no-deltas"].splitlines() if line.startswith("data: ")]
    assert nodelta[-1]["response"]["output"][0]["content"][0]["text"] == ""
    assert "[REDACTED:aws_access_key_id]" in seen["claude-stream"] and "[REDACTED" in seen["claude-whole"]


@pytest.mark.parametrize(
    "path,body",
    [
        (
            "/v1/messages",
            {
                "model": "claude-x",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": ["text"], "text": "hi"}]}],
            },
        ),
        ("/v1/messages", {"model": "claude-x", "max_tokens": 5, "messages": [{"role": ["user"], "content": "hi"}]}),
        (
            "/v1/messages",
            {
                "model": "claude-x",
                "max_tokens": 5,
                "system": [{"type": {"t": 1}, "text": "x"}],
                "messages": [{"role": "user", "content": "hi"}],
            },
        ),
        ("/v1/messages", {"model": "claude-x", "max_tokens": True, "messages": [{"role": "user", "content": "hi"}]}),
        (
            "/v1/messages",
            {
                "model": "claude-x",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": ["custom"], "name": "f", "input_schema": {}}],
            },
        ),
        ("/v1/responses", {"model": "m", "input": [{"type": ["message"], "role": "user", "content": "hi"}]}),
        ("/v1/responses", {"model": "m", "input": [{"type": {"a": 1}}]}),
        ("/v1/responses", {"model": "m", "input": {"role": "user"}}),
        ("/v1/responses", {"model": "m", "input": "hi", "tools": [{"type": ["function"], "name": "f"}]}),
    ],
)
def test_hostile_request_shapes_get_a_400(guard: Any, path: str, body: dict[str, Any]) -> None:
    """Types where a string is expected (lists, objects as block/item/tool types or roles) are refused with
    400 in the API's own shape, never a 500."""
    with guard.client() as c:
        r = c.post(path, json=body)
    assert r.status_code == 400, r.text
    assert (r.json()["type"] == "error") if path == "/v1/messages" else ("error" in r.json())
