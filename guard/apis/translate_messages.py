"""Anthropic Messages clients on OpenAI-compatible upstreams: the judged Messages request as a Chat
Completions request (``check`` refuses what does not map, ``to_chat``), and the answer (whole: ``from_chat``,
streamed: ``ChatStream``, an error: ``error_from_chat``) back as Messages. What maps and what is refused:
docs/wire-apis.md. Chosen by guard.apis.translate."""

from __future__ import annotations

import json
from typing import Any

from guard.apis.chat_stream import feed_chat_chunks
from guard.apis.openai import _dict, _int, _list
from guard.errors import GuardError, bad_request

_MAPPED = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "stream",
    "temperature",
    "top_p",
    "stop_sequences",
    "metadata",
    "tools",
    "tool_choice",
    "output_config",
    "thinking",
}
_DROPPED = {"cache_control"}
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _untranslatable(path: str, why: str) -> GuardError:
    return bad_request(f"{path} cannot be sent to an OpenAI-compatible upstream ({why})", "untranslatable", param=path)


def check(body: dict[str, Any]) -> None:
    """Refuse what a Chat Completions upstream could not receive as the client meant it."""
    for k in body:
        if k not in _MAPPED and k not in _DROPPED:
            raise _untranslatable(f"$.{k}", "no Chat Completions equivalent")
    th = _dict(body.get("thinking"))
    if th and th.get("type") != "disabled":
        raise _untranslatable("$.thinking", "extended thinking")
    oc = _dict(body.get("output_config"))
    if set(oc) - {"format"}:
        raise _untranslatable("$.output_config", "only format maps")
    for j, t in enumerate(_list(body.get("tools"))):
        if "input_examples" in _dict(t):
            raise _untranslatable(f"$.tools[{j}].input_examples", "no Chat Completions equivalent")
    for i, m in enumerate(_list(body.get("messages"))):
        for j, b in enumerate(_list(_dict(m).get("content"))):
            b = _dict(b)
            inner = [_dict(x) for x in _list(b.get("content"))] if b.get("type") == "tool_result" else []
            for x in [b, *inner]:
                if x.get("type") == "document":
                    raise _untranslatable(f"$.messages[{i}].content[{j}]", "documents")
                if x.get("type") == "image" and _dict(x.get("source")).get("type") not in ("base64", "url"):
                    raise _untranslatable(f"$.messages[{i}].content[{j}]", "image source")
            if b.get("type") == "tool_result" and any(x.get("type") == "image" for x in inner):
                raise _untranslatable(f"$.messages[{i}].content[{j}]", "images in tool results")


# --- request -----------------------------------------------------------------------------------------------


def _text_parts(blocks: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in blocks:
        b = _dict(b)
        if b.get("type") == "text":
            out.append({"type": "text", "text": b.get("text", "")})
        elif b.get("type") == "image":
            src = _dict(b.get("source"))
            url = (
                src.get("url") if src.get("type") == "url" else f"data:{src.get('media_type')};base64,{src.get('data')}"
            )
            out.append({"type": "image_url", "image_url": {"url": url}})
    return out


def _messages(m: dict[str, Any]) -> list[dict[str, Any]]:
    role, c = m.get("role"), m.get("content")
    if isinstance(c, str):
        return [{"role": role, "content": c}]
    blocks = [_dict(b) for b in _list(c)]
    if role == "assistant":
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        calls = [
            {
                "id": b.get("id"),
                "type": "function",
                "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input", {}), ensure_ascii=False)},
            }
            for b in blocks
            if b.get("type") == "tool_use"
        ]
        msg: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            msg["tool_calls"] = calls
        return [msg]
    out: list[dict[str, Any]] = []
    for b in blocks:  # tool results first: they answer the assistant turn just before
        if b.get("type") == "tool_result":
            rc = b.get("content")
            content: Any = rc if isinstance(rc, str) else _text_parts(_list(rc))
            out.append({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": content or ""})
    parts = _text_parts([b for b in blocks if b.get("type") in ("text", "image")])
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The judged Messages request as a Chat Completions request (``check`` passed)."""
    msgs: list[dict[str, Any]] = []
    sysp = body.get("system")
    if isinstance(sysp, str):
        msgs.append({"role": "system", "content": sysp})
    elif isinstance(sysp, list) and sysp:
        msgs.append({"role": "system", "content": _text_parts(sysp)})
    for m in _list(body.get("messages")):
        msgs += _messages(_dict(m))
    out: dict[str, Any] = {"model": body["model"], "messages": msgs, "max_tokens": body.get("max_tokens")}
    for k in ("temperature", "top_p"):
        if k in body:
            out[k] = body[k]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    uid = _dict(body.get("metadata")).get("user_id")
    if isinstance(uid, str):
        out["user"] = uid
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if body.get("tools"):
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    k2: t[k1]
                    for k1, k2 in (("name", "name"), ("description", "description"), ("input_schema", "parameters"))
                    if k1 in t
                },
            }
            for t in (_dict(x) for x in body["tools"])
        ]
    tc = _dict(body.get("tool_choice"))
    if tc:
        kind = str(tc.get("type"))
        out["tool_choice"] = (
            {"type": "function", "function": {"name": tc.get("name")}}
            if kind == "tool"
            else {"any": "required"}.get(kind, kind)
        )
        if tc.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    fmt = _dict(_dict(body.get("output_config")).get("format"))
    if fmt.get("schema") is not None:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}
    return out


# --- answers -----------------------------------------------------------------------------------------------


def _input(args: Any) -> dict[str, Any]:
    try:
        v = json.loads(args) if isinstance(args, str) and args else {}
    except ValueError:
        raise GuardError(
            502, "the upstream's tool call arguments are not JSON", "upstream_error", "upstream_bad_response"
        ) from None
    if not isinstance(v, dict):
        raise GuardError(
            502, "the upstream's tool call arguments are not a JSON object", "upstream_error", "upstream_bad_response"
        )
    return v


def from_chat(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """A Chat Completions answer as a Messages answer (the first choice)."""
    ch = _dict(_list(chat.get("choices"))[0]) if _list(chat.get("choices")) else {}
    msg = _dict(ch.get("message"))
    content: list[dict[str, Any]] = []
    if isinstance(msg.get("content"), str) and msg["content"]:
        content.append({"type": "text", "text": msg["content"]})
    for tc in _list(msg.get("tool_calls")):
        fn = _dict(_dict(tc).get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": _dict(tc).get("id") or "toolu_guard",
                "name": fn.get("name"),
                "input": _input(fn.get("arguments")),
            }
        )
    u = _dict(chat.get("usage"))
    return {
        "id": chat.get("id") or "msg_guard",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP.get(str(ch.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": _int(u.get("prompt_tokens")), "output_tokens": _int(u.get("completion_tokens"))},
    }


def error_from_chat(status: int, data: bytes) -> bytes:
    """An OpenAI-shaped upstream error as Anthropic's shape (the message kept, the type by status)."""
    from guard.apis.anthropic import error_object

    try:
        err = _dict(_dict(json.loads(data)).get("error"))
    except ValueError:
        err = {}
    msg = str(err["message"]) if isinstance(err.get("message"), str) else "upstream error"
    code = err.get("code") if isinstance(err.get("code"), str) else None
    return json.dumps(error_object(status, msg, code, None, "upstream_error")).encode()


class ChatStream:
    """Chat Completions SSE chunks in, Messages SSE events out (message_start, content blocks,
    message_delta with the stop reason and usage, message_stop)."""

    def __init__(self, model: str) -> None:
        from guard.apis.anthropic import encode

        self._encode = encode
        self.model = model
        self._buf = bytearray()
        self._started = False
        self._block: tuple[int, str, Any] | None = None  # (index, "text" | "tool", tool-call index)
        self._next = 0
        self._stop = "end_turn"
        self._usage = {"input_tokens": 0, "output_tokens": 0}
        self._ended = False

    def _ev(self, ev: dict[str, Any]) -> bytes:
        return self._encode(ev)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        return self._ev(
            {
                "type": "message_start",
                "message": {
                    "id": chunk.get("id") or "msg_guard",
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": dict(self._usage),
                },
            }
        )

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        idx = self._block[0]
        self._block = None
        return self._ev({"type": "content_block_stop", "index": idx})

    def _open(self, kind: str, tool: Any, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._block = (self._next, kind, tool)
        self._next += 1
        return out + self._ev({"type": "content_block_start", "index": self._block[0], "content_block": block})

    def feed(self, data: bytes) -> bytes:
        return feed_chat_chunks(self, data)

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = bytearray()
        if not self._started:
            out += self._start(chunk)
        if isinstance(chunk.get("error"), dict):
            from guard.apis.anthropic import error_object

            e = chunk["error"]
            self._ended = True
            return bytes(out) + self._ev(
                error_object(502, str(e.get("message") or "upstream error"), None, None, "upstream_error")
            )
        u = chunk.get("usage")
        if isinstance(u, dict):
            self._usage = {
                "input_tokens": _int(u.get("prompt_tokens")),
                "output_tokens": _int(u.get("completion_tokens")),
            }
        for ch in _list(chunk.get("choices"))[:1]:
            ch = _dict(ch)
            d = _dict(ch.get("delta"))
            if isinstance(d.get("content"), str) and d["content"]:
                if self._block is None or self._block[1] != "text":
                    out += self._open("text", None, {"type": "text", "text": ""})
                out += self._ev(
                    {
                        "type": "content_block_delta",
                        "index": self._block[0],  # type: ignore[index]
                        "delta": {"type": "text_delta", "text": d["content"]},
                    }
                )
            for tc in _list(d.get("tool_calls")):
                tc = _dict(tc)
                fn = _dict(tc.get("function"))
                ti = tc["index"] if isinstance(tc.get("index"), int) else 0
                if self._block is None or self._block[1] != "tool" or self._block[2] != ti or tc.get("id"):
                    out += self._open(
                        "tool",
                        ti,
                        {
                            "type": "tool_use",
                            "id": tc.get("id") or f"toolu_{ti}",
                            "name": fn.get("name") or "",
                            "input": {},
                        },
                    )
                if isinstance(fn.get("arguments"), str) and fn["arguments"]:
                    out += self._ev(
                        {
                            "type": "content_block_delta",
                            "index": self._block[0],  # type: ignore[index]
                            "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]},
                        }
                    )
            if isinstance(ch.get("finish_reason"), str):
                self._stop = _STOP.get(ch["finish_reason"], "end_turn")
        return bytes(out)

    def end(self) -> bytes:
        """The closing events (at [DONE], or when the upstream body ends without one)."""
        if self._ended:
            return b""
        self._ended = True
        out = b"" if self._started else self._start({})
        out += self._close()
        out += self._ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop, "stop_sequence": None},
                "usage": dict(self._usage),
            }
        )
        return out + self._ev({"type": "message_stop"})
