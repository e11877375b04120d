"""OpenAI Responses wire API: POST /v1/responses, ``input`` as a string or items, ``instructions``, function
tools, its typed SSE events, OpenAI's error shape.

Items Guard reads: messages (``input_text``/``output_text``/``refusal`` parts; images and files cannot be
screened), ``function_call`` and ``function_call_output``; any other item type and every built-in tool
(web search, file search, code interpreter, MCP, ...) is refused: they pull context Guard never sees. So is
server-side state (``previous_response_id``, ``conversation``, ``background``, ``store: true``) unless every
upstream of the route sets ``stateful: true`` (docs/wire-apis.md: the audit record then lacks that context).

Streams: ``response.output_text.delta`` and ``response.function_call_arguments.delta`` go through the stream
screens; the ``*.done`` events and ``response.completed`` repeat the whole text, so ``finalize`` puts there
what was released on that channel (nothing, for text no delta carried). A stop ends the stream with
``response.incomplete``, ``incomplete_details.reason: "content_filter"`` (the API's own value).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from guard.apis import openai
from guard.apis.openai import _dict, _int, _list, _str, event_data, json_segment, split_events
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
    return segs


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


def _index(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def chunk_channels(operation: str, chunk: dict[str, Any]) -> Iterator[tuple[tuple, tuple, str]]:
    t = chunk.get("type")
    if t == "response.output_text.delta" and isinstance(chunk.get("delta"), str):
        yield (
            (_index(chunk.get("output_index")), "content", _index(chunk.get("content_index"))),
            ("delta",),
            chunk["delta"],
        )
    elif t == "response.function_call_arguments.delta" and isinstance(chunk.get("delta"), str):
        yield (_index(chunk.get("output_index")), "tool"), ("delta",), chunk["delta"]


_DONE = (
    "response.output_text.done",
    "response.content_part.done",
    "response.function_call_arguments.done",
    "response.output_item.done",
)


def chunk_finished(chunk: dict[str, Any]) -> list[Any]:
    """Output items whose text is complete: held-back text is flushed before this event."""
    t = chunk.get("type")
    if t in _DONE:
        return [_index(chunk.get("output_index"))]
    if t in ("response.completed", "response.incomplete", "response.failed"):
        return list(range(len(_list(_response(chunk).get("output")))))
    return []


def _item(item: dict[str, Any], oi: int, released: dict[tuple, str]) -> None:
    if item.get("type") == "message":
        for ci, p in enumerate(_list(item.get("content"))):
            if isinstance(p, dict) and "text" in p:
                p["text"] = released.get((oi, "content", ci), "")
    elif item.get("type") == "function_call" and "arguments" in item:
        item["arguments"] = released.get((oi, "tool"), "")


def finalize(chunk: dict[str, Any], released: dict[tuple, str]) -> None:
    """Events that repeat a whole text carry what the stream screens released on that channel (the client
    never gets text that no screen saw)."""
    t = chunk.get("type")
    oi = _index(chunk.get("output_index"))
    if t == "response.output_text.done":
        chunk["text"] = released.get((oi, "content", _index(chunk.get("content_index"))), "")
    elif t == "response.content_part.done" and isinstance(chunk.get("part"), dict) and "text" in chunk["part"]:
        chunk["part"]["text"] = released.get((oi, "content", _index(chunk.get("content_index"))), "")
    elif t == "response.function_call_arguments.done":
        chunk["arguments"] = released.get((oi, "tool"), "")
    elif t in ("response.output_item.done", "response.output_item.added") and isinstance(chunk.get("item"), dict):
        _item(chunk["item"], oi, released)
    elif str(t).startswith("response.") and isinstance(chunk.get("response"), dict):
        for i, item in enumerate(_list(chunk["response"].get("output"))):
            if isinstance(item, dict):
                _item(item, i, released)


def encode(chunk: dict[str, Any]) -> bytes:
    t = chunk.get("type")
    name = t if isinstance(t, str) else "message"
    return (
        b"event: "
        + name.encode("ascii", "replace")
        + b"\ndata: "
        + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode()
        + b"\n\n"
    )


def flush(operation: str, like: dict[str, Any] | None, model: str, key: tuple, text: str) -> dict[str, Any]:
    like = like or {}
    base = {
        "item_id": like.get("item_id", ""),
        "output_index": key[0],
        "sequence_number": like.get("sequence_number", 0),
        "delta": text,
    }
    if key[1] == "tool":
        return {"type": "response.function_call_arguments.delta", **base}
    return {"type": "response.output_text.delta", "content_index": key[2], **base}


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

_TEXT_DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta")
_DELTA_KEYS = frozenset(
    {"type", "delta", "item_id", "output_index", "content_index", "sequence_number", "logprobs", "obfuscation"}
)


def drop_unscreenable(obj: dict[str, Any]) -> bool:
    """Token log probabilities (``include: ["message.output_text.logprobs"]``) spell the answer token by token,
    past the screens: emptied in delta and done events, content parts, output items and whole responses.
    True if any held something."""
    dropped = False

    def clear(o: dict[str, Any]) -> None:
        nonlocal dropped
        if o.get("logprobs"):
            dropped = True
        if "logprobs" in o:
            o["logprobs"] = []

    def item(it: Any) -> None:
        for part in _list(_dict(it).get("content")):
            if isinstance(part, dict):
                clear(part)

    clear(obj)
    if isinstance(obj.get("part"), dict):
        clear(obj["part"])
    if isinstance(obj.get("item"), dict):
        item(obj["item"])
    for it in _list(obj.get("output")):
        item(it)
    if isinstance(obj.get("response"), dict):
        for it in _list(obj["response"].get("output")):
            item(it)
    return dropped


def stream_strings(
    operation: str, chunk: dict[str, Any], known: frozenset[tuple]
) -> tuple[list[tuple[tuple, tuple, str]], list[tuple[tuple, str]]]:
    """No text beside the channels and the events that repeat them (``finalize``)."""
    return [], []


def held_only(operation: str, chunk: dict[str, Any]) -> bool:
    """A text or function-arguments delta event whose text the screens hold back entirely is not sent (its
    sequence number is skipped; the SDK orders by arrival); every other event always is."""
    return (
        chunk.get("type") in _TEXT_DELTAS
        and chunk.get("delta") == ""
        and not set(chunk) - _DELTA_KEYS
        and not chunk.get("logprobs")
    )
