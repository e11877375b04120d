"""OpenAI Responses wire API: POST /v1/responses, ``input`` as a string or items, ``instructions``, function
tools, its typed SSE events, OpenAI's error shape.

Items Guard reads: messages (``input_text``/``output_text``/``refusal`` parts; images and files cannot be
screened), ``function_call`` and ``function_call_output``; any other item type and every built-in tool
(web search, file search, code interpreter, MCP, ...) is refused: they pull context Guard never sees. So is
server-side state (``previous_response_id``, ``conversation``, ``background``, ``store: true``) unless every
upstream of the route sets ``stateful: true`` (docs/wire-apis.md: the audit record then lacks that context).

Answers: every string of the output is screened (refusals, reasoning summaries and text, annotations, items
of types no reference lists yet), not only output text and function-call arguments; streams: see
guard.apis.responses_stream. A stop ends the stream with ``response.incomplete``,
``incomplete_details.reason: "content_filter"`` (the API's own value).
"""

from __future__ import annotations

import json
from typing import Any

from guard.apis import openai, responses_stream
from guard.apis.answer import other_strings
from guard.apis.openai import _dict, _int, _list, _str, event_data, json_segment, split_events
from guard.apis.openai_stream import encode_typed_event as encode
from guard.apis.responses_stream import chunk_channels as chunk_channels
from guard.apis.responses_stream import chunk_finished as chunk_finished
from guard.apis.responses_stream import drop_unscreenable as drop_unscreenable
from guard.apis.responses_stream import finalize as finalize
from guard.apis.responses_stream import flush as flush
from guard.apis.responses_stream import held_only as held_only
from guard.apis.responses_stream import stream_strings as stream_strings
from guard.errors import GuardError, bad_request
from guard.screens.base import Segment

STREAM_MEDIA_TYPE = b"text/event-stream"
SEP = b"\n\n"
END = openai.DONE
ITEM_TYPES = frozenset({"message", "function_call", "function_call_output"})
STATEFUL = ("previous_response_id", "conversation", "background")
_ROLE_KIND = {"system": "system", "developer": "system"}

error_body = openai.error_body
split = split_events
payload = event_data
is_end = openai.is_end


def validate(operation: str, body: dict[str, Any]) -> tuple[str, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string", "invalid_model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_value")
    x = body.get("input")
    if not isinstance(x, (str, list)):
        raise bad_request("'input' must be a string or an array of items", "invalid_input", param="$.input")
    for i, item in enumerate(_list(x)):
        t = _item_type(item)
        if not isinstance(t, str) or t not in ITEM_TYPES:
            raise bad_request(
                f"input[{i}]: item type {t!r} is not supported (messages, function_call, function_call_output)",
                "unsupported_item",
                param=f"$.input[{i}]",
            )
    for j, t in enumerate(_list(body.get("tools"))):
        if not isinstance(t, dict) or t.get("type") != "function":
            raise bad_request(
                f"tools[{j}]: only function tools are supported; built-in tools fetch context Guard cannot screen",
                "unsupported_tool",
                param=f"$.tools[{j}]",
            )
    return model, stream


def _item_type(item: Any) -> Any:
    if not isinstance(item, dict):
        return None
    return item.get("type", "message" if "role" in item else None)


def stateful(body: dict[str, Any]) -> list[str]:
    """The fields of this request that use context kept by the upstream (not in the request Guard judged)."""
    out = [k for k in STATEFUL if body.get(k) not in (None, False)]
    if body.get("store") is True:
        out.append("store")
    return out


def _parts(segs: list[Segment], parts: list[Any], role: str, kind: str, base: tuple) -> None:
    for j, p in enumerate(parts):
        p = _dict(p)
        _str(segs, p, "text", role, kind, (*base, j))
        _str(segs, p, "refusal", role, kind, (*base, j))


def prompt_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    """Every text of the request that reaches the model's context (guard.apis.fields.CONTEXT_FIELDS)."""
    segs: list[Segment] = []
    _str(segs, body, "instructions", "system", "system", ())
    x = body.get("input")
    if isinstance(x, str):
        segs.append(Segment(x, "user", "content", ("input",)))
    for i, item in enumerate(_list(x)):
        item = _dict(item)
        t = _item_type(item)
        base = ("input", i)
        if t == "message":
            role = item.get("role", "user")
            kind = _ROLE_KIND.get(role, "content")
            c = item.get("content")
            if isinstance(c, str):
                segs.append(Segment(c, role, kind, (*base, "content")))
            else:
                _parts(segs, _list(c), role, kind, (*base, "content"))
        elif t == "function_call":
            _str(segs, item, "name", "assistant", "name", base)
            _str(segs, item, "arguments", "assistant", "tool_arguments", base)
        elif t == "function_call_output":
            out = item.get("output")
            if isinstance(out, str):
                segs.append(Segment(out, "tool", "tool_result", (*base, "output")))
            else:
                _parts(segs, _list(out), "tool", "tool_result", (*base, "output"))
    for i, t in enumerate(_list(body.get("tools"))):
        t = _dict(t)
        _str(segs, t, "name", "system", "tool_definition", ("tools", i))
        _str(segs, t, "description", "system", "tool_definition", ("tools", i))
        if t.get("parameters") is not None:
            segs.append(json_segment(t["parameters"], "system", "tool_definition", ("tools", i, "parameters")))
    fmt = _dict(_dict(body.get("text")).get("format"))
    _str(segs, fmt, "name", "system", "response_schema", ("text", "format"))
    _str(segs, fmt, "description", "system", "response_schema", ("text", "format"))
    if fmt.get("schema") is not None:
        segs.append(json_segment(fmt["schema"], "system", "response_schema", ("text", "format", "schema")))
    return segs


def unscreened(operation: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i, item in enumerate(_list(body.get("input"))):
        item = _dict(item)
        key = "output" if _item_type(item) == "function_call_output" else "content"
        for j, p in enumerate(_list(item.get(key))):
            t = _dict(p).get("type")
            if t == "input_image":
                out.append(("image", f"$.input[{i}].{key}[{j}]"))
            elif t == "input_file":
                out.append(("file", f"$.input[{i}].{key}[{j}]"))
    return out


def response_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    segs: list[Segment] = []
    for i, item in enumerate(_list(body.get("output"))):
        item = _dict(item)
        if item.get("type") == "message":
            for j, p in enumerate(_list(item.get("content"))):
                p = _dict(p)
                if isinstance(p.get("text"), str):
                    segs.append(Segment(p["text"], "assistant", "content", ("output", i, "content", j, "text")))
        elif item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
            segs.append(Segment(item["arguments"], "assistant", "tool_arguments", ("output", i, "arguments")))
    # every other string of the output (refusals, reasoning summaries and text, annotations, items of types
    # no reference lists yet), screened as answer text; the rest of the body echoes the request
    known = frozenset(s.path for s in segs)
    return segs + [
        Segment(t, "assistant", "content", p)
        for p, t in other_strings(body.get("output"), ("output",), known, responses_stream.SKIP)
    ]


def _response(body: dict[str, Any]) -> dict[str, Any]:
    return _dict(body.get("response")) if str(body.get("type", "")).startswith("response.") else body


def usage(body: dict[str, Any]) -> dict[str, int] | None:
    u = _response(body).get("usage")
    if isinstance(u, dict):
        return {"input_tokens": _int(u.get("input_tokens")), "output_tokens": _int(u.get("output_tokens"))}
    return None


def finish_reasons(body: dict[str, Any]) -> list[str]:
    if str(body.get("type", "")).startswith("response.") and body.get("type") not in (
        "response.completed",
        "response.incomplete",
        "response.failed",
    ):
        return []
    r = _response(body)
    reason = _dict(r.get("incomplete_details")).get("reason")
    status = r.get("status")
    return [reason] if isinstance(reason, str) else [status] if isinstance(status, str) else []


def filter_whole(operation: str, body: dict[str, Any]) -> None:
    body["output"] = []
    body["status"] = "incomplete"
    body["incomplete_details"] = {"reason": "content_filter"}
    if "output_text" in body:
        body["output_text"] = ""


def stream_error(err: GuardError) -> bytes:
    """An ``error`` event that also carries OpenAI's error object (the SDK raises an APIError on it)."""
    ev = {
        "type": "error",
        "code": err.code,
        "message": err.message,
        "param": err.param,
        "error": json.loads(err.body())["error"],
    }
    return encode(ev)


# --- streams ---------------------------------------------------------------------------------------------


def completion_limit(body: dict[str, Any]) -> int | None:
    """``max_output_tokens``: the most answer tokens the request allows, if it says."""
    v = body.get("max_output_tokens")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def ask_stream_usage(operation: str, body: dict[str, Any]) -> bool:
    """A Responses stream always ends with ``response.completed`` (or ``.incomplete``) and its usage."""
    return False


def usage_only(chunk: dict[str, Any]) -> bool:
    return False


def stop_bytes(operation: str, like: dict[str, Any] | None, model: str) -> bytes:
    resp = {
        "id": "resp_guard",
        "object": "response",
        "created_at": 0,
        "model": model,
        "status": "incomplete",
        "incomplete_details": {"reason": "content_filter"},
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    return encode(
        {"type": "response.incomplete", "sequence_number": (like or {}).get("sequence_number", 0), "response": resp}
    )


# --- what guard.upstream_errors and the audit recorder ask (through guard.apis.wire) ----------------------

upstream_error_body = openai.upstream_error_body


def prompt_text(operation: str, body: dict[str, Any]) -> str | None:
    """The texts of the input items, instructions and tool outputs, for audit content capture."""
    return openai.segments_text(prompt_segments, operation, body)


# --- what guard.relay asks of each event, beside its channels ---------------------------------------------
