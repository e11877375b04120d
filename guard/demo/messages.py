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


# Top-level request fields of the Messages reference; the real API answers any other with 400
# ("Extra inputs are not permitted").
FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
        "top_k", "top_p", "tools", "tool_choice", "thinking", "service_tier", "cache_control", "container",
        "inference_geo", "speed", "output_config", "context_management", "mcp_servers",
    }
)  # fmt: skip
_USER_BLOCKS = frozenset({"text", "image", "document", "tool_result", "search_result"})
_ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})


def invalid(body: dict[str, Any]) -> str | None:
    """Why the Messages API would refuse ``body`` with 400 invalid_request_error (the checks a translating
    client most easily gets wrong), or None."""
    extra = sorted(set(body) - FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    mt = body.get("max_tokens")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        return "max_tokens: Field required (an integer >= 1)"
    t = body.get("temperature")
    if t is not None and (not isinstance(t, (int, float)) or not 0 <= t <= 1):
        return "temperature: Input should be between 0 and 1"
    sysp = body.get("system")
    if (
        sysp is not None
        and not isinstance(sysp, str)
        and not (isinstance(sysp, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in sysp))
    ):
        return "system: a string or text blocks"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages: at least one message is required"
    pending: set[str] = set()  # tool_use ids the next user turn must answer first
    for i, m in enumerate(msgs):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        c = m.get("content")
        if isinstance(c, str):
            blocks: list[Any] = [{"type": "text", "text": c}]
        elif isinstance(c, list):
            blocks = c
        else:
            return f"messages.{i}.content: a string or content blocks"
        allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
        for j, b in enumerate(blocks):
            if not isinstance(b, dict) or b.get("type") not in allowed:
                return f"messages.{i}.content.{j}: block type not allowed for role {role}"
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        lead = [b.get("type") == "tool_result" for b in blocks]
        if pending and (role != "user" or not pending <= answered or (lead and not all(lead[: len(answered)]))):
            return f"messages.{i}: tool_use ids were found without tool_result blocks immediately after"
        if role == "user" and answered - pending:
            return f"messages.{i}: unexpected tool_use_id found in tool_result blocks"
        pending = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
    return None


def error(status: int, message: str = "demo error") -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


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
