"""The built-in model server's Anthropic Messages answers (POST /v1/messages): whole, streamed with the
typed events (message_start, content_block_start/delta/stop, ping, message_delta, message_stop) and errors
in Anthropic's shape. Directives as in guard.demo.modelserver, and [[think: TEXT]]: a thinking block first."""

from __future__ import annotations

import json
from typing import Any


def last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(str(b.get("text", "")) for b in c if isinstance(b, dict))
            return str(c or "")
    return ""


def error(status: int) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": "demo error"}}


def _usage(prompt_len: int, answer: str) -> dict[str, int]:
    return {"input_tokens": max(1, prompt_len // 4), "output_tokens": len(answer.split())}


def whole(model: str, answer: str, d: dict[str, str], prompt_len: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": answer}]
    if "think" in d:
        content.insert(0, {"type": "thinking", "thinking": d["think"], "signature": "sig"})
    stop = "end_turn"
    if "tool" in d:
        name, _, args = d["tool"].partition(" ")
        content = [{"type": "tool_use", "id": "toolu_demo", "name": name, "input": json.loads(args or "{}")}]
        stop = "tool_use"
    return {
        "id": "msg_demo",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _usage(prompt_len, answer),
    }


def event(ev: dict[str, Any]) -> bytes:
    return b"event: " + ev["type"].encode() + b"\ndata: " + json.dumps(ev).encode() + b"\n\n"


def _text_index(d: dict[str, str]) -> int:
    return 1 if "think" in d else 0


def start(model: str, prompt_len: int, d: dict[str, str]) -> bytes:
    msg: dict[str, Any] = {
        "id": "msg_demo",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": max(1, prompt_len // 4), "output_tokens": 1},
    }
    out = event({"type": "message_start", "message": msg})
    if "think" in d:
        t = d["think"]
        out += event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        )
        for part in (t[: len(t) // 2], t[len(t) // 2 :]):
            out += event(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": part}}
            )
        out += event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}
        )
        out += event({"type": "content_block_stop", "index": 0})
    i = _text_index(d)
    return (
        out
        + event({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
        + event({"type": "ping"})
    )


def delta(piece: str, d: dict[str, str]) -> bytes:
    return event(
        {"type": "content_block_delta", "index": _text_index(d), "delta": {"type": "text_delta", "text": piece}}
    )


def end(answer: str, d: dict[str, str], prompt_len: int) -> bytes:
    i = _text_index(d)
    out = event({"type": "content_block_stop", "index": i})
    stop = "end_turn"
    if "tool" in d:
        name, _, args = d["tool"].partition(" ")
        out += event(
            {
                "type": "content_block_start",
                "index": i + 1,
                "content_block": {"type": "tool_use", "id": "toolu_demo", "name": name, "input": {}},
            }
        )
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            out += event(
                {
                    "type": "content_block_delta",
                    "index": i + 1,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                }
            )
        out += event({"type": "content_block_stop", "index": i + 1})
        stop = "tool_use"
    u = _usage(prompt_len, answer)
    return (
        out
        + event({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": u})
        + event({"type": "message_stop"})
    )
