"""Anthropic Messages wire API: POST /v1/messages, content blocks, its typed SSE events, its error shape.

Blocks Guard can screen as text (text, tool_use, tool_result, thinking) are
screened with their field of origin; images, documents and redacted thinking cannot be and are
refused unless the upstream allows their kind (guard.canonical.admit). Server tools (web search, code
execution, ...) pull context Guard never sees and are refused. A stopped answer ends with
``stop_reason: "refusal"`` (whole or streamed), Anthropic's own value for an answer the provider cut off.
"""

from __future__ import annotations

import json
import time
from typing import Any

from guard.apis import openai
from guard.apis.anthropic_stream import block_segments
from guard.apis.anthropic_stream import chunk_channels as chunk_channels
from guard.apis.anthropic_stream import chunk_finished as chunk_finished
from guard.apis.anthropic_stream import drop_unscreenable as drop_unscreenable
from guard.apis.anthropic_stream import flush_chunk as flush_chunk
from guard.apis.anthropic_stream import held_only as held_only
from guard.apis.anthropic_stream import stream_strings as stream_strings
from guard.apis.openai import _dict, _int, _list, _str, event_data, json_segment, split_events
from guard.apis.openai_stream import encode_typed_event as encode
from guard.errors import GuardError, bad_request
from guard.screens.base import Segment

STREAM_MEDIA_TYPE = b"text/event-stream"
SEP = b"\n\n"
END = b""
PATH = "/v1/messages"
STOP_REASON = "refusal"  # what a screen's stop looks like to an Anthropic client

# Block types Guard reads; any other (server tool results, search results, container uploads) is refused.
BLOCK_TYPES = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})
INNER_TYPES = frozenset({"text", "image", "document"})  # inside a tool_result
_KIND = {"user": "content", "assistant": "content"}


def validate(operation: str, body: dict[str, Any]) -> tuple[str, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string", "invalid_model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_value")
    mt = body.get("max_tokens")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 0:
        raise bad_request(
            "'max_tokens' is required and must be a non-negative integer", "invalid_value", param="$.max_tokens"
        )
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("'messages' must be a non-empty array", "invalid_messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise bad_request(
                f"messages[{i}] must be an object with role 'user' or 'assistant'",
                "invalid_messages",
                param=f"$.messages[{i}]",
            )
        c = m.get("content")
        if not isinstance(c, (str, list)):
            raise bad_request(
                f"messages[{i}].content must be a string or an array",
                "invalid_messages",
                param=f"$.messages[{i}].content",
            )
        for j, b in enumerate(_list(c)):
            _block(b, BLOCK_TYPES, f"$.messages[{i}].content[{j}]")
            for k, inner in enumerate(_list(_dict(b).get("content"))):
                _block(inner, INNER_TYPES, f"$.messages[{i}].content[{j}].content[{k}]")
    for j, b in enumerate(_list(body.get("system"))):
        _block(b, frozenset({"text"}), f"$.system[{j}]")
    for j, t in enumerate(_list(body.get("tools"))):
        if not isinstance(t, dict) or t.get("type", "custom") not in ("custom", None):
            raise bad_request(
                f"tools[{j}]: only client tools (name, description, input_schema) are supported; server "
                "tools fetch context Guard cannot screen",
                "unsupported_tool",
                param=f"$.tools[{j}]",
            )
    return model, stream


def _block(b: Any, allowed: frozenset[str], path: str) -> None:
    t = b.get("type") if isinstance(b, dict) else None
    if not isinstance(t, str) or t not in allowed:
        raise bad_request(
            f"{path} must be a content block of type {', '.join(sorted(allowed))}", "unsupported_block", param=path
        )


def _blocks(segs: list[Segment], blocks: list[Any], role: str, kind: str, base: tuple) -> None:
    for j, b in enumerate(blocks):
        b = _dict(b)
        path = (*base, j)
        t = b.get("type")
        if t == "text":
            _str(segs, b, "text", role, kind, path)
        elif t == "thinking":
            _str(segs, b, "thinking", role, "content", path)
        elif t == "tool_use":
            _str(segs, b, "name", role, "name", path)
            if b.get("input") is not None:
                segs.append(json_segment(b["input"], role, "tool_arguments", (*path, "input")))
        elif t == "tool_result":
            c = b.get("content")
            if isinstance(c, str):
                segs.append(Segment(c, role, "tool_result", (*path, "content")))
            else:
                _blocks(segs, _list(c), role, "tool_result", (*path, "content"))


def prompt_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    """Every text of the request that reaches the model's context (guard.apis.fields.CONTEXT_FIELDS)."""
    segs: list[Segment] = []
    sysp = body.get("system")
    if isinstance(sysp, str):
        segs.append(Segment(sysp, "system", "system", ("system",)))
    else:
        _blocks(segs, _list(sysp), "system", "system", ("system",))
    for i, m in enumerate(_list(body.get("messages"))):
        m = _dict(m)
        role = m.get("role", "user")
        c = m.get("content")
        if isinstance(c, str):
            segs.append(Segment(c, role, "content", ("messages", i, "content")))
        else:
            _blocks(segs, _list(c), role, _KIND.get(role, "content"), ("messages", i, "content"))
    for i, t in enumerate(_list(body.get("tools"))):
        t = _dict(t)
        _str(segs, t, "name", "system", "tool_definition", ("tools", i))
        _str(segs, t, "description", "system", "tool_definition", ("tools", i))
        for key in ("input_schema", "input_examples"):
            if t.get(key) is not None:
                segs.append(json_segment(t[key], "system", "tool_definition", ("tools", i, key)))
    fmt = _dict(_dict(body.get("output_config")).get("format"))
    if fmt.get("schema") is not None:
        segs.append(json_segment(fmt["schema"], "system", "response_schema", ("output_config", "format", "schema")))
    return segs


def unscreened(operation: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """Inputs that reach the model but cannot be screened as text: (kind, JSON path)."""
    out: list[tuple[str, str]] = []

    def walk(blocks: list[Any], path: str) -> None:
        for j, b in enumerate(blocks):
            t = _dict(b).get("type")
            if t == "image":
                out.append(("image", f"{path}[{j}].source"))
            elif t == "document":
                out.append(("file", f"{path}[{j}].source"))
            elif t == "redacted_thinking":
                out.append(("context", f"{path}[{j}].data"))
            elif t == "tool_result":
                walk(_list(_dict(b).get("content")), f"{path}[{j}].content")

    for i, m in enumerate(_list(body.get("messages"))):
        walk(_list(_dict(m).get("content")), f"$.messages[{i}].content")
    return out


def response_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    """Every text of the answer's content blocks (guard.apis.anthropic_stream.block_segments)."""
    return block_segments(body.get("content"), ("content",))


def usage(body: dict[str, Any]) -> dict[str, int] | None:
    """Token counts of a whole answer, or the part a stream event carries (message_start: input and the
    first output count; message_delta: the running output count)."""
    u = body.get("usage")
    if body.get("type") == "message_start":
        u = _dict(body.get("message")).get("usage")
    if not isinstance(u, dict):
        return None
    out = {}
    for k in ("input_tokens", "output_tokens"):
        if k in u:
            out[k] = _int(u[k])
    return out or None


def finish_reasons(body: dict[str, Any]) -> list[str]:
    r = body.get("stop_reason")
    if body.get("type") == "message_delta":
        r = _dict(body.get("delta")).get("stop_reason")
    return [r] if isinstance(r, str) else []


def filter_whole(operation: str, body: dict[str, Any]) -> None:
    """A blocked whole answer: no content, stop_reason refusal."""
    body["content"] = []
    body["stop_reason"] = STOP_REASON
    body["stop_sequence"] = None


# --- errors ----------------------------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_object(status: int, message: str, code: str | None, param: str | None, guard_type: str) -> dict[str, Any]:
    """Anthropic's error shape; Guard's code (``secret_blocked``, ...) and the field at fault ride along."""
    return {
        "type": "error",
        "error": {
            "type": _ERROR_TYPES.get(status, "api_error"),
            "message": message,
            "code": code,
            "param": param,
            "guard_type": guard_type,
        },
    }


def error_body(err: GuardError) -> bytes:
    return json.dumps(error_object(err.status, err.message, err.code, err.param, err.type)).encode()


def stream_error(err: GuardError) -> bytes:
    """A stream that already started ends with an ``error`` event (the SDK raises it)."""
    return b"event: error\ndata: " + error_body(err) + b"\n\n"


# --- streams ---------------------------------------------------------------------------------------------

split = split_events
payload = event_data


def is_end(data: bytes) -> bool:
    return False


def completion_limit(body: dict[str, Any]) -> int | None:
    """``max_tokens`` (required by the API): the most answer tokens the request allows."""
    v = body.get("max_tokens")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def ask_stream_usage(operation: str, body: dict[str, Any]) -> bool:
    """A Messages stream always carries usage (``message_start``, the running count in ``message_delta``)."""
    return False


def usage_only(chunk: dict[str, Any]) -> bool:
    return False


def stop_bytes(operation: str, like: dict[str, Any] | None, model: str) -> bytes:
    """The open block closed, then message_delta with stop_reason refusal and message_stop."""
    out = b""
    like = like or {}
    if like.get("type") in ("content_block_start", "content_block_delta"):
        out += encode({"type": "content_block_stop", "index": like.get("index", 0)})
    out += encode(
        {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASON, "stop_sequence": None},
            "usage": {"output_tokens": 0},
        }
    )
    return out + encode({"type": "message_stop"})


# --- what guard.upstream, guard.upstream_errors and the audit recorder ask (through guard.apis.wire) ------

VERSION = "2023-06-01"  # the ``anthropic-version`` sent when the upstream's ``api_version`` names none
upstream_error_body = openai.upstream_error_body


def prompt_text(operation: str, body: dict[str, Any]) -> str | None:
    """The texts of the messages, system prompt and tool results, for audit content capture."""
    return openai.segments_text(prompt_segments, operation, body)


def model_list(names: list[str], now: int) -> dict[str, Any]:
    """``GET /v1/models`` as the ``anthropic`` SDK reads it: every model on one page."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {
        "data": [{"type": "model", "id": n, "display_name": n, "created_at": created} for n in names],
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }


def upstream_target(base: str, path: str, model: str, version: str | None, key: str) -> tuple[str, list[bytes]]:
    """The request target on an Anthropic upstream, ``anthropic-version`` and the ``x-api-key``."""
    if base.endswith("/v1") and path.startswith("/v1/"):
        base = base[:-3]
    lines = [f"anthropic-version: {version or VERSION}\r\n".encode("latin-1")]
    if key:
        lines.append(f"x-api-key: {key}\r\n".encode("latin-1"))
    return base + path, lines


flush = flush_chunk
