"""Ollama ``/api/chat`` clients on Anthropic Messages upstreams, through the Chat Completions translation: the
judged Ollama request as Chat Completions, then as Messages (guard.apis.translate_anthropic); the answer back the
same way, whole or as Ollama's NDJSON stream, errors as ``{"error": "text"}``.

What maps and what is refused: docs/wire-apis.md. ``check`` refuses (400 ``untranslatable``) before any screen
runs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from guard.apis import translate_anthropic as ta
from guard.apis import translate_anthropic_stream as tas
from guard.apis.openai import _dict, _int, _list, event_data, split_events
from guard.errors import GuardError, bad_request

_MAPPED = {"model", "messages", "tools", "stream", "options", "keep_alive", "format", "think"}
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "stop": "stop", "num_predict": "max_tokens"}
_DONE = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "content_filter"}


def _untranslatable(path: str, why: str) -> GuardError:
    return bad_request(f"{path} cannot be sent to an Anthropic Messages upstream ({why})", "untranslatable", param=path)


def check(body: dict[str, Any]) -> None:
    for k in body:
        if k not in _MAPPED:
            raise _untranslatable(f"$.{k}", "no Messages equivalent")
    for k in _dict(body.get("options")):
        if k not in _OPTIONS:
            raise _untranslatable(f"$.options.{k}", "no Messages equivalent")
    fmt = body.get("format")
    if fmt is not None and not isinstance(fmt, dict):
        raise _untranslatable("$.format", "only a JSON schema maps")
    if body.get("think"):
        raise _untranslatable("$.think", "extended thinking")
    for i, m in enumerate(_list(body.get("messages"))):
        if _dict(m).get("images") not in (None, []):
            raise _untranslatable(f"$.messages[{i}].images", "images")
    ta.check(to_chat(body))


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The Ollama chat request as Chat Completions (tool calls get ids by position, which the tool messages
    that follow them answer in order: Ollama has no call ids)."""
    msgs: list[dict[str, Any]] = []
    pending: list[str] = []
    for i, m in enumerate(_list(body.get("messages"))):
        m = _dict(m)
        role = m.get("role")
        out: dict[str, Any] = {"role": role, "content": m.get("content") if isinstance(m.get("content"), str) else ""}
        if role == "assistant" and _list(m.get("tool_calls")):
            pending = []
            calls = []
            for j, tc in enumerate(_list(m.get("tool_calls"))):
                fn = _dict(_dict(tc).get("function"))
                cid = f"call_{i}_{j}"
                pending.append(cid)
                args = fn.get("arguments")
                calls.append(
                    {
                        "id": cid,
                        "type": "function",
                        "function": {
                            "name": fn.get("name") or "",
                            "arguments": args if isinstance(args, str) else json.dumps(args or {}),
                        },
                    }
                )
            out["tool_calls"] = calls
            out["content"] = out["content"] or None
        elif role == "tool":
            out["tool_call_id"] = pending.pop(0) if pending else f"call_{i}"
        msgs.append(out)
    chat: dict[str, Any] = {"model": body["model"], "messages": msgs, "stream": body.get("stream", True) is not False}
    if body.get("tools"):
        chat["tools"] = body["tools"]
    for k, v in _dict(body.get("options")).items():
        if k == "num_predict" and isinstance(v, int) and not isinstance(v, bool) and v < 1:
            continue  # -1 (no limit), -2 (fill the context): Messages needs a number, its default is used
        chat[_OPTIONS[k]] = v
    if isinstance(body.get("format"), dict):
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": body["format"]}}
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}
    return chat


def to_messages(body: dict[str, Any]) -> dict[str, Any]:
    return ta.to_messages(to_chat(body))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tc in calls:
        fn = _dict(_dict(tc).get("function"))
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = {}
        out.append({"function": {"name": fn.get("name") or "", "arguments": args}})
    return out


def _final(model: str, finish: Any, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": _DONE.get(str(finish), "stop"),
        "prompt_eval_count": _int(usage.get("prompt_tokens")),
        "eval_count": _int(usage.get("completion_tokens")),
    }


def whole(status: int, data: bytes, model: str) -> bytes:
    if status != 200:
        err = _dict(json.loads(ta.error_from_messages(status, data)).get("error"))
        return json.dumps({"error": err.get("message") or "upstream error"}).encode()
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(msg, dict):
        return data
    chat = ta.from_messages(msg, model)
    ch = chat["choices"][0]
    out = _final(model, ch["finish_reason"], chat["usage"])
    out["message"] = {"role": "assistant", "content": ch["message"]["content"] or ""}
    if ch["message"].get("tool_calls"):
        out["message"]["tool_calls"] = _tool_calls(ch["message"]["tool_calls"])
    return json.dumps(out).encode()


class OllamaStream:
    """Messages SSE events in, Ollama NDJSON lines out: content pieces as they come, tool calls whole in one line
    (Ollama streams them whole), then the ``done`` line with the stop reason and the counts."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._chat = tas.MessagesStream(model, include_usage=True)
        self._buf = bytearray()
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: Any = None

    def _line(self, obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    def _convert(self, sse: bytes) -> bytes:
        self._buf += sse
        out = bytearray()
        for raw in split_events(self._buf):
            payload = event_data(raw)
            if payload is None:
                continue
            if payload.strip() == b"[DONE]":
                continue
            chunk = json.loads(payload)
            if "error" in chunk:
                out += self._line({"error": str(_dict(chunk["error"]).get("message") or "upstream error")})
                continue
            if isinstance(chunk.get("usage"), dict):  # the last chunk: tool calls whole, then the done line
                if self._calls:
                    calls = [
                        {"function": {"name": c["name"], "arguments": c["arguments"]}}
                        for _, c in sorted(self._calls.items())
                    ]
                    msg = {"role": "assistant", "content": "", "tool_calls": _tool_calls(calls)}
                    out += self._line({"model": self.model, "created_at": _now(), "message": msg, "done": False})
                out += self._line(_final(self.model, self._finish, chunk["usage"]))
            for ch in _list(chunk.get("choices"))[:1]:
                d = _dict(_dict(ch).get("delta"))
                if isinstance(d.get("content"), str) and d["content"]:
                    msg = {"role": "assistant", "content": d["content"]}
                    out += self._line({"model": self.model, "created_at": _now(), "message": msg, "done": False})
                for tc in _list(d.get("tool_calls")):
                    slot = self._calls.setdefault(_int(_dict(tc).get("index")), {"name": "", "arguments": ""})
                    fn = _dict(_dict(tc).get("function"))
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
                if _dict(ch).get("finish_reason"):
                    self._finish = ch["finish_reason"]
        return bytes(out)

    def feed(self, data: bytes) -> bytes:
        return self._convert(self._chat.feed(data))

    def end(self) -> bytes:
        return self._convert(self._chat.end())
