"""Ollama wire API: /api/chat, /api/generate, /api/embed, /api/tags; NDJSON streams (stream defaults to true)."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

from guard.apis.openai import _int, _list, _tool_args
from guard.errors import bad_request
from guard.filters.base import Segment

STREAM_MEDIA_TYPE = b"application/x-ndjson"

# Client path -> upstream path when the upstream speaks the Ollama API.
PATHS = {"chat": "/api/chat", "completion": "/api/generate", "embeddings": "/api/embed", "models": "/api/tags"}


def validate(operation: str, body: dict[str, Any]) -> tuple[str, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string", "invalid_model")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_value")
    if operation == "chat":
        msgs = body.get("messages")
        if not isinstance(msgs, list):
            raise bad_request("'messages' must be an array", "invalid_messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(f"messages[{i}] must be an object with a 'role'", "invalid_messages")
            if m.get("content") is not None and not isinstance(m.get("content"), str):
                raise bad_request(f"messages[{i}].content must be a string", "invalid_messages")
    elif operation == "completion":
        if not isinstance(body.get("prompt", ""), str):
            raise bad_request("'prompt' must be a string", "invalid_prompt")
    elif operation == "embeddings":
        if not isinstance(body.get("input"), (str, list)):
            raise bad_request("'input' must be a string or an array", "invalid_input")
        stream = False
    return model, stream


def _args_segment(args: Any, role: str, path: tuple) -> Segment | None:
    # Ollama sends tool-call arguments as an object; screens see its JSON text (written back parsed).
    if isinstance(args, dict):
        return Segment(json.dumps(args, ensure_ascii=False), role, "tool_arguments", path + ("__json__",))
    return None


def prompt_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    segs: list[Segment] = []
    if operation == "chat":
        for i, m in enumerate(body.get("messages", [])):
            role = m.get("role", "user")
            kind = {"system": "system", "tool": "tool_result"}.get(role, "content")
            if isinstance(m.get("content"), str):
                segs.append(Segment(m["content"], role, kind, ("messages", i, "content")))
            for j, tc in enumerate(_list(m.get("tool_calls"))):
                s = _args_segment(_tool_args(tc), role, ("messages", i, "tool_calls", j, "function", "arguments"))
                if s:
                    segs.append(s)
    elif operation == "completion":
        if isinstance(body.get("system"), str):
            segs.append(Segment(body["system"], "system", "system", ("system",)))
        if isinstance(body.get("prompt"), str):
            segs.append(Segment(body["prompt"], "user", "prompt", ("prompt",)))
    elif operation == "embeddings":
        x = body.get("input")
        if isinstance(x, str):
            segs.append(Segment(x, "user", "input", ("input",)))
        elif isinstance(x, list):
            segs += [Segment(s, "user", "input", ("input", i)) for i, s in enumerate(x) if isinstance(s, str)]
    return segs


def response_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    segs: list[Segment] = []
    if operation == "completion" and isinstance(body.get("response"), str):
        segs.append(Segment(body["response"], "assistant", "content", ("response",)))
    msg = body.get("message")
    if operation == "chat" and isinstance(msg, dict):
        if isinstance(msg.get("content"), str):
            segs.append(Segment(msg["content"], "assistant", "content", ("message", "content")))
        for j, tc in enumerate(_list(msg.get("tool_calls"))):
            s = _args_segment(_tool_args(tc), "assistant", ("message", "tool_calls", j, "function", "arguments"))
            if s:
                segs.append(s)
    return segs


def usage(body: dict[str, Any]) -> dict[str, int] | None:
    if "prompt_eval_count" in body or "eval_count" in body:
        return {"input_tokens": _int(body.get("prompt_eval_count")), "output_tokens": _int(body.get("eval_count"))}
    return None


def finish_reasons(body: dict[str, Any]) -> list[str]:
    r = body.get("done_reason")
    return [r] if isinstance(r, str) else []


# --- streams ---------------------------------------------------------------------------------------------

def split_lines(buf: bytearray) -> Iterator[bytes]:
    while True:
        idx = buf.find(b"\n")
        if idx == -1:
            return
        line = bytes(buf[:idx]).strip()
        del buf[:idx + 1]
        if line:
            yield line


def chunk_channels(operation: str, chunk: dict[str, Any]) -> Iterator[tuple[tuple, tuple, str]]:
    if operation == "completion" and isinstance(chunk.get("response"), str):
        yield (0, "content"), ("response",), chunk["response"]
    msg = chunk.get("message")
    if operation == "chat" and isinstance(msg, dict) and isinstance(msg.get("content"), str):
        yield (0, "content"), ("message", "content"), msg["content"]


def encode_line(chunk: dict[str, Any]) -> bytes:
    return json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def flush_chunk(operation: str, like: dict[str, Any] | None, model: str, text: str) -> dict[str, Any]:
    base = {"model": (like or {}).get("model", model),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "done": False}
    if operation == "completion":
        return {**base, "response": text}
    return {**base, "message": {"role": "assistant", "content": text}}


def stop_line(operation: str, like: dict[str, Any] | None, model: str) -> bytes:
    chunk = flush_chunk(operation, like, model, "")
    chunk["done"] = True
    chunk["done_reason"] = "content_filter"
    return encode_line(chunk)
