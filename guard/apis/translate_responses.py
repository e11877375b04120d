"""OpenAI Responses clients on upstreams that serve only Chat Completions (``responses: translate``): the
judged Responses request as a Chat Completions request, the answer and its stream back as Responses.

What maps and what is refused: docs/wire-apis.md. ``check`` refuses (400 ``untranslatable``) before any screen
runs. Errors keep OpenAI's shape, which both APIs share.
"""

from __future__ import annotations

import json
from typing import Any

from guard.apis.chat_stream import feed_chat_chunks
from guard.apis.openai import _dict, _int, _list
from guard.errors import GuardError, bad_request

_MAPPED = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "stream",
    "stream_options",
    "max_output_tokens",
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "text",
    "store",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "reasoning",
}
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _untranslatable(path: str, why: str) -> GuardError:
    return bad_request(f"{path} cannot be sent to a Chat Completions upstream ({why})", "untranslatable", param=path)


def check(body: dict[str, Any]) -> None:
    for k in body:
        if k not in _MAPPED:
            raise _untranslatable(f"$.{k}", "no Chat Completions equivalent")
    if set(_dict(body.get("text"))) - {"format"}:
        raise _untranslatable("$.text", "only format maps")
    if set(_dict(body.get("reasoning"))) - {"effort"}:
        raise _untranslatable("$.reasoning", "only effort maps")
    for i, item in enumerate(_list(body.get("input"))):
        item = _dict(item)
        for _j, p in enumerate(_list(item.get("content")) + _list(item.get("output"))):
            t = _dict(p).get("type")
            if t == "input_file" or (t == "input_image" and not isinstance(_dict(p).get("image_url"), str)):
                raise _untranslatable(f"$.input[{i}]", "files and images by file id")


def _parts(parts: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        p = _dict(p)
        if p.get("type") == "input_image":
            out.append({"type": "image_url", "image_url": {"url": p["image_url"]}})
        elif isinstance(p.get("text"), str):
            out.append({"type": "text", "text": p["text"]})
        elif isinstance(p.get("refusal"), str):
            out.append({"type": "text", "text": p["refusal"]})
    return out


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        msgs.append({"role": "system", "content": body["instructions"]})
    x = body.get("input")
    if isinstance(x, str):
        msgs.append({"role": "user", "content": x})
    for item in _list(x):
        item = _dict(item)
        t = item.get("type", "message")
        if t == "message":
            c = item.get("content")
            content: Any = c if isinstance(c, str) else _parts(_list(c))
            if item.get("role") == "assistant" and isinstance(content, list):
                content = "".join(p.get("text", "") for p in content)
            msgs.append({"role": item.get("role", "user"), "content": content})
        elif t == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = msgs[-1] if msgs else {}
            if last.get("role") == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif t == "function_call_output":
            out = item.get("output")
            msgs.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": out if isinstance(out, str) else _parts(_list(out)),
                }
            )
    chat: dict[str, Any] = {"model": body["model"], "messages": msgs}
    for k in (
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "service_tier",
    ):
        if k in body:
            chat[k] = body[k]
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    if _dict(body.get("reasoning")).get("effort"):
        chat["reasoning_effort"] = body["reasoning"]["effort"]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if body.get("tools"):
        chat["tools"] = [
            {
                "type": "function",
                "function": {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t},
            }
            for t in (_dict(x) for x in body["tools"])
        ]
    tc = body.get("tool_choice")
    if isinstance(tc, str):
        chat["tool_choice"] = tc
    elif isinstance(tc, dict) and tc.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": tc.get("name")}}
    fmt = _dict(_dict(body.get("text")).get("format"))
    if fmt.get("type") == "json_schema":
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt},
        }
    elif fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


# --- answers -----------------------------------------------------------------------------------------------


def _message(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_guard",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call(call_id: str, name: str, args: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": args,
        "status": status,
    }


def _response(
    rid: str, model: str, output: list[dict[str, Any]], finish: Any, usage: dict[str, Any] | None, status: str = ""
) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish) if isinstance(finish, str) else None
    u = _dict(usage)
    n_in, n_out = _int(u.get("prompt_tokens")), _int(u.get("completion_tokens"))
    return {
        "id": rid,
        "object": "response",
        "created_at": 0,
        "model": model,
        "status": status or ("incomplete" if reason else "completed"),
        "incomplete_details": {"reason": reason} if reason else None,
        "error": None,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
        if usage is not None
        else None,
    }


def from_chat(chat: dict[str, Any], model: str) -> dict[str, Any]:
    ch = _dict(_list(chat.get("choices"))[0]) if _list(chat.get("choices")) else {}
    msg = _dict(ch.get("message"))
    output: list[dict[str, Any]] = []
    if isinstance(msg.get("content"), str) and msg["content"]:
        output.append(_message(msg["content"]))
    for tc in _list(msg.get("tool_calls")):
        fn = _dict(_dict(tc).get("function"))
        output.append(
            _call(
                str(_dict(tc).get("id") or "call_guard"),
                str(fn.get("name") or ""),
                str(fn["arguments"]) if isinstance(fn.get("arguments"), str) else "",
            )
        )
    return _response(
        f"resp_{chat.get('id') or 'guard'}", model, output, ch.get("finish_reason"), _dict(chat.get("usage"))
    )


class ChatStream:
    """Chat Completions SSE chunks in, Responses events out: response.created, then per output item
    output_item.added (content_part.added), the deltas, the .done events, output_item.done, and
    response.completed (or response.incomplete) with the whole response."""

    def __init__(self, model: str) -> None:
        from guard.apis.responses import encode

        self._encode = encode
        self.model = model
        self._buf = bytearray()
        self._seq = 0
        self._rid = "resp_guard"
        self._started = False
        self._ended = False
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being streamed (message or function_call)
        self._calls: dict[Any, int] = {}  # tool-call index -> output index
        self._finish: Any = None
        self._usage: dict[str, Any] | None = None

    def _ev(self, ev: dict[str, Any]) -> bytes:
        ev["sequence_number"] = self._seq
        self._seq += 1
        return self._encode(ev)

    def _close(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        oi = len(self._output)
        self._output.append(item)
        out = b""
        if item["type"] == "message":
            text = item["content"][0]["text"]
            out += self._ev(
                {
                    "type": "response.output_text.done",
                    "item_id": item["id"],
                    "output_index": oi,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                }
            )
            out += self._ev(
                {
                    "type": "response.content_part.done",
                    "item_id": item["id"],
                    "output_index": oi,
                    "content_index": 0,
                    "part": item["content"][0],
                }
            )
        else:
            out += self._ev(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item["id"],
                    "output_index": oi,
                    "arguments": item["arguments"],
                }
            )
        item["status"] = "completed"
        return out + self._ev({"type": "response.output_item.done", "output_index": oi, "item": item})

    def _start_item(self, item: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = item
        oi = len(self._output)
        shown = json.loads(json.dumps(item))
        out += self._ev({"type": "response.output_item.added", "output_index": oi, "item": shown})
        if item["type"] == "message":
            out += self._ev(
                {
                    "type": "response.content_part.added",
                    "item_id": item["id"],
                    "output_index": oi,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
        return out

    def feed(self, data: bytes) -> bytes:
        return feed_chat_chunks(self, data)

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = bytearray()
        if not self._started:
            self._started = True
            self._rid = f"resp_{chunk.get('id') or 'guard'}"
            out += self._ev(
                {
                    "type": "response.created",
                    "response": _response(self._rid, self.model, [], None, None, "in_progress"),
                }
            )
        if isinstance(chunk.get("error"), dict):
            self._ended = True
            return bytes(out) + self._ev(
                {
                    "type": "error",
                    "error": chunk["error"],
                    "message": str(chunk["error"].get("message") or "upstream error"),
                }
            )
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for ch in _list(chunk.get("choices"))[:1]:
            ch = _dict(ch)
            d = _dict(ch.get("delta"))
            if isinstance(d.get("content"), str) and d["content"]:
                if self._open is None or self._open["type"] != "message":
                    out += self._start_item(_message("", "in_progress"))
                assert self._open is not None
                self._open["content"][0]["text"] += d["content"]
                out += self._ev(
                    {
                        "type": "response.output_text.delta",
                        "item_id": self._open["id"],
                        "output_index": len(self._output),
                        "content_index": 0,
                        "delta": d["content"],
                        "logprobs": [],
                    }
                )
            for tc in _list(d.get("tool_calls")):
                tc = _dict(tc)
                fn = _dict(tc.get("function"))
                ti = tc["index"] if isinstance(tc.get("index"), int) else 0
                if ti not in self._calls or tc.get("id"):
                    out += self._start_item(
                        _call(str(tc.get("id") or f"call_{ti}"), str(fn.get("name") or ""), "", "in_progress")
                    )
                    self._calls[ti] = len(self._output)
                args = fn.get("arguments")
                if isinstance(args, str) and args and self._open is not None:
                    self._open["arguments"] += args
                    out += self._ev(
                        {
                            "type": "response.function_call_arguments.delta",
                            "item_id": self._open["id"],
                            "output_index": len(self._output),
                            "delta": args,
                        }
                    )
            if isinstance(ch.get("finish_reason"), str):
                self._finish = ch["finish_reason"]
        return bytes(out)

    def end(self) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        out = b"" if self._started else self._chunk({})
        out += self._close()
        resp = _response(self._rid, self.model, self._output, self._finish, self._usage or {})
        kind = "response.incomplete" if resp["status"] == "incomplete" else "response.completed"
        return out + self._ev({"type": kind, "response": resp})
