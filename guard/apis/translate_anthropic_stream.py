"""Chat Completions clients on Anthropic Messages upstreams, streamed: Messages SSE events in,
``chat.completion.chunk`` SSE out (the request and whole answers: guard.apis.translate_anthropic)."""

from __future__ import annotations

import json
import time
from typing import Any

from guard.apis.openai import _dict, _int, event_data, split_events
from guard.apis.translate_anthropic import STOP_REASONS, usage_of


class MessagesStream:
    """Messages SSE events in (message_start, content_block_start/delta/stop, message_delta, message_stop,
    ping, error), chat.completion.chunk SSE out: text deltas as ``content``, tool_use blocks as ``tool_calls``
    (one index per block), the stop reason as ``finish_reason``, and a usage chunk when the client asked
    ``stream_options.include_usage``."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self._usage_wanted = include_usage
        self._buf = bytearray()
        self._id = "chatcmpl-guard"
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}  # content block index -> tool_calls index
        self._finish: str | None = None
        self._ended = False

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None, usage: bool = False) -> bytes:
        c: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}],
        }
        if usage:
            c["usage"] = usage_of(self._usage)
        return b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

    def feed(self, data: bytes) -> bytes:
        from guard.relay import UpstreamStreamError

        self._buf += data
        out = bytearray()
        for raw in split_events(self._buf):
            payload = event_data(raw)
            if payload is None or self._ended:
                continue
            try:
                ev = json.loads(payload)
                if not isinstance(ev, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError) as e:
                raise UpstreamStreamError(f"unparseable stream event: {e}") from None
            out += self._event(ev)
        return bytes(out)

    def _event(self, ev: dict[str, Any]) -> bytes:
        t = ev.get("type")
        if t == "message_start":
            m = _dict(ev.get("message"))
            if isinstance(m.get("id"), str):
                self._id = m["id"]
            self._usage.update(_dict(m.get("usage")))
            return self._chunk({"role": "assistant", "content": ""})
        if t == "content_block_start":
            b = _dict(ev.get("content_block"))
            if b.get("type") == "tool_use":
                n = self._tools[_int(ev.get("index"))] = len(self._tools)
                call = {"index": n, "id": b.get("id") or f"call_{n}", "type": "function"}
                return self._chunk(
                    {"tool_calls": [{**call, "function": {"name": b.get("name") or "", "arguments": ""}}]}
                )
            if b.get("type") == "text" and isinstance(b.get("text"), str) and b["text"]:
                return self._chunk({"content": b["text"]})
            return b""
        if t == "content_block_delta":
            d = _dict(ev.get("delta"))
            if d.get("type") == "text_delta" and isinstance(d.get("text"), str):
                return self._chunk({"content": d["text"]})
            if d.get("type") == "input_json_delta" and isinstance(d.get("partial_json"), str):
                k = self._tools.get(_int(ev.get("index")))
                if k is not None:
                    return self._chunk({"tool_calls": [{"index": k, "function": {"arguments": d["partial_json"]}}]})
            return b""  # thinking, signature and citation deltas have no Chat Completions field
        if t == "message_delta":
            self._usage.update(_dict(ev.get("usage")))
            r = _dict(ev.get("delta")).get("stop_reason")
            if isinstance(r, str):
                self._finish = STOP_REASONS.get(r, "stop")
            return b""
        if t == "message_stop":
            return self._close()
        if t == "error":  # the relay refuses a chunk with an error object (UpstreamReportedError)
            self._ended = True
            e = _dict(ev.get("error"))
            return (
                b"data: "
                + json.dumps({"error": {"message": str(e.get("message") or "upstream error")}}).encode()
                + b"\n\n"
            )
        return b""  # ping, and event types added later

    def end(self) -> bytes:
        """The upstream body ended: after message_stop, nothing more; before it, the stream was cut short
        (guard.relay.UpstreamStreamError: the client gets an error event, not a clean finish)."""
        if self._ended:
            return b""
        from guard.relay import UpstreamStreamError

        raise UpstreamStreamError("the stream ended before message_stop")

    def _close(self) -> bytes:
        """The finishing chunk, the usage chunk if asked, then ``[DONE]``."""
        if self._ended:
            return b""
        self._ended = True
        out = self._chunk({}, self._finish or "stop")
        if self._usage_wanted:
            out += self._chunk(None, usage=True)
        return out + b"data: [DONE]\n\n"
