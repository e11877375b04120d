"""Chat Completions clients on Anthropic Messages upstreams (``api: anthropic``): the judged Chat Completions
request as a Messages request, the answer (whole or an error) back as Chat Completions;
streamed answers: guard.apis.translate_anthropic_stream.

What maps and what is refused: docs/wire-apis.md. ``check`` refuses (400 ``untranslatable``) before any screen
runs, so nothing is sent with part of it silently lost except what that table lists as dropped. The upstream's
key and ``anthropic-version`` are Guard's (guard.upstream.Upstreams.target), never the client's.
"""

from __future__ import annotations

import json
import time
from typing import Any

from guard.apis.openai import _dict, _int, _list
from guard.errors import GuardError, bad_request

DEFAULT_MAX_TOKENS = 4096  # Messages requires max_tokens; sent when the client gives none
PATH = "/v1/messages"

_MAPPED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "temperature",
    "top_p",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "n",
    "response_format",
}
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERROR_TYPES = {"overloaded_error": "server_error", "api_error": "server_error"}


def _untranslatable(path: str, why: str) -> GuardError:
    return bad_request(f"{path} cannot be sent to an Anthropic Messages upstream ({why})", "untranslatable", param=path)


def check(body: dict[str, Any]) -> None:
    """Refuse what a Messages upstream could not receive as the client meant it."""
    for k in body:
        if k not in _MAPPED:
            raise _untranslatable(f"$.{k}", "no Messages equivalent")
    n = body.get("n", 1)
    if n not in (1, None):
        raise _untranslatable("$.n", "one choice only")
    for k in ("max_tokens", "max_completion_tokens"):
        v = body.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise _untranslatable(f"$.{k}", "Messages takes a positive integer")
    t = body.get("temperature")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 1:
        raise _untranslatable("$.temperature", "Messages takes 0 to 1")
    fmt = body.get("response_format")
    if fmt is not None and _dict(fmt).get("type") not in ("text", "json_schema"):
        raise _untranslatable("$.response_format", "only json_schema maps")
    if set(_dict(body.get("stream_options"))) - {"include_usage"}:
        raise _untranslatable("$.stream_options", "only include_usage maps")
    for j, tool in enumerate(_list(body.get("tools"))):
        if _dict(tool).get("type") != "function":
            raise _untranslatable(f"$.tools[{j}]", "only function tools map")
    seen_turn = False
    for i, m in enumerate(_list(body.get("messages"))):
        m = _dict(m)
        role = m.get("role")
        if role in ("system", "developer"):
            if seen_turn:
                raise _untranslatable(f"$.messages[{i}]", "system messages only before the conversation")
        elif role not in ("user", "assistant", "tool"):
            raise _untranslatable(f"$.messages[{i}].role", f"role {role!r}")
        else:
            seen_turn = True
        for key in ("audio", "function_call"):
            if m.get(key) is not None:
                raise _untranslatable(f"$.messages[{i}].{key}", "no Messages equivalent")
        for j, p in enumerate(_list(m.get("content"))):
            pt = _dict(p).get("type")
            if pt == "image_url" and role == "user":
                url = _dict(_dict(p).get("image_url")).get("url")
                if not isinstance(url, str) or not (url.startswith(("https://", "http://")) or _data_url(url)):
                    raise _untranslatable(f"$.messages[{i}].content[{j}]", "image URL or base64 data URL only")
            elif pt not in ("text", "refusal"):
                raise _untranslatable(f"$.messages[{i}].content[{j}]", f"content part {pt!r} for role {role!r}")
        for j, tc in enumerate(_list(m.get("tool_calls"))):
            fn = _dict(_dict(tc).get("function"))
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except (TypeError, ValueError):
                args = None
            if not isinstance(args, dict):
                raise _untranslatable(
                    f"$.messages[{i}].tool_calls[{j}].function.arguments", "tool input must be a JSON object"
                )
    if not seen_turn:
        raise _untranslatable("$.messages", "at least one user or assistant message")


def _data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, data = url[5:].split(";base64,", 1)
    return head, data


# --- request -----------------------------------------------------------------------------------------------


def _text(c: Any) -> str:
    if isinstance(c, str):
        return c
    return "".join(str(_dict(p).get("text") or _dict(p).get("refusal") or "") for p in _list(c))


def _blocks(c: Any) -> list[dict[str, Any]]:
    """User content (string or parts) as Messages content blocks."""
    if isinstance(c, str):
        return [{"type": "text", "text": c}] if c else []
    out: list[dict[str, Any]] = []
    for p in _list(c):
        p = _dict(p)
        if p.get("type") == "image_url":
            url = _dict(p.get("image_url")).get("url", "")
            d = _data_url(url)
            src = {"type": "base64", "media_type": d[0], "data": d[1]} if d else {"type": "url", "url": url}
            out.append({"type": "image", "source": src})
        else:
            out.append({"type": "text", "text": _text([p])})
    return out


def _turns(msgs: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def user(blocks: list[dict[str, Any]], results: bool) -> None:
        last = out[-1] if out else None
        if last is not None and last["role"] == "user":
            if results:  # tool results go first in the user turn that answers the tool calls
                n = sum(1 for b in last["content"] if b.get("type") == "tool_result")
                last["content"][n:n] = blocks
            else:
                last["content"] += blocks
        else:
            out.append({"role": "user", "content": blocks})

    for m in msgs:
        m = _dict(m)
        role = m.get("role")
        if role == "user":
            user(_blocks(m.get("content")), False)
        elif role == "tool":
            c = m.get("content")
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.get("tool_call_id") or ""}
            result["content"] = c if isinstance(c, str) else [{"type": "text", "text": _text([p])} for p in _list(c)]
            user([result], True)
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _text(m.get("content")) or (m.get("refusal") if isinstance(m.get("refusal"), str) else "")
            if text:
                blocks.append({"type": "text", "text": text})
            for tc in _list(m.get("tool_calls")):
                fn = _dict(_dict(tc).get("function"))
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": _dict(tc).get("id") or "",
                        "name": fn.get("name") or "",
                        "input": json.loads(fn.get("arguments") or "{}"),
                    }
                )
            out.append({"role": "assistant", "content": blocks})
    return out


def to_messages(body: dict[str, Any]) -> dict[str, Any]:
    """The judged Chat Completions request as a Messages request (``check`` passed)."""
    msgs = _list(body.get("messages"))
    system = [_text(_dict(m).get("content")) for m in msgs if _dict(m).get("role") in ("system", "developer")]
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    out: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": mt if isinstance(mt, int) and not isinstance(mt, bool) else DEFAULT_MAX_TOKENS,
        "messages": _turns([m for m in msgs if _dict(m).get("role") not in ("system", "developer")]),
    }
    if system:
        out["system"] = "\n\n".join(system)
    for k in ("temperature", "top_p"):
        if body.get(k) is not None:
            out[k] = body[k]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    if body.get("tools"):
        out["tools"] = []
        for t in _list(body["tools"]):
            fn = _dict(_dict(t).get("function"))
            tool = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object"}}
            if isinstance(fn.get("description"), str):
                tool["description"] = fn["description"]
            out["tools"].append(tool)
    tc = body.get("tool_choice")
    choice: dict[str, Any] | None = None
    if isinstance(tc, str):
        choice = {"type": {"required": "any"}.get(tc, tc)}
    elif isinstance(tc, dict):
        choice = {"type": "tool", "name": _dict(tc.get("function")).get("name")}
    if body.get("parallel_tool_calls") is False and body.get("tools"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None and (body.get("tools") or choice["type"] == "none"):
        out["tool_choice"] = choice
    js = _dict(_dict(body.get("response_format")).get("json_schema"))
    if js.get("schema") is not None:
        out["output_config"] = {"format": {"type": "json_schema", "schema": js["schema"]}}
    return out


# --- answers -----------------------------------------------------------------------------------------------


def usage_of(u: dict[str, Any]) -> dict[str, int]:
    n_in = sum(_int(u.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    n_out = _int(u.get("output_tokens"))
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def from_messages(msg: dict[str, Any], model: str) -> dict[str, Any]:
    """A Messages answer as a Chat Completions answer (text blocks joined; tool_use blocks as tool_calls;
    thinking blocks dropped: Chat Completions has no field for them)."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for b in _list(msg.get("content")):
        b = _dict(b)
        if b.get("type") == "text" and isinstance(b.get("text"), str):
            text.append(b["text"])
        elif b.get("type") == "tool_use":
            calls.append(
                {
                    "id": b.get("id") or f"call_{len(calls)}",
                    "type": "function",
                    "function": {"name": b.get("name") or "", "arguments": json.dumps(b.get("input") or {})},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": msg.get("id") or "chatcmpl-guard",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_REASONS.get(str(msg.get("stop_reason")), "stop"),
                "logprobs": None,
            }
        ],
        "usage": usage_of(_dict(msg.get("usage"))),
    }


def error_from_messages(status: int, data: bytes) -> bytes:
    """An Anthropic-shaped upstream error as OpenAI's shape (message kept; Anthropic's type as ``code``)."""
    try:
        err = _dict(_dict(json.loads(data)).get("error"))
    except (ValueError, RecursionError):
        err = {}
    kind = err.get("type") if isinstance(err.get("type"), str) else None
    message = err["message"] if isinstance(err.get("message"), str) else "upstream error"
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": _ERROR_TYPES.get(kind or "", kind or "upstream_error"),
                "code": kind,
                "param": None,
            }
        }
    ).encode()


def whole(status: int, data: bytes, model: str) -> bytes:
    if status != 200:
        return error_from_messages(status, data)
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return data
    return json.dumps(from_messages(msg, model)).encode() if isinstance(msg, dict) else data
