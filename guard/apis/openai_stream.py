"""OpenAI's SSE streams (chat and completion chunks): events, text channels, the chunks Guard writes, and
what guard.relay asks of each chunk. Part of the OpenAI wire module (guard.apis.openai re-exports it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from guard.apis import answer
from guard.apis.answer import nest
from guard.apis.values import _dict, _index, _list, _tool_args

# --- streams ---------------------------------------------------------------------------------------------


def split_events(buf: bytearray) -> Iterator[bytes]:
    """Pop complete SSE events (terminated by a blank line) off ``buf``; yields each event's raw bytes."""
    while True:
        idx = buf.find(b"\n\n")
        crlf = buf.find(b"\r\n\r\n")
        if crlf != -1 and (idx == -1 or crlf < idx):
            end, sep = crlf, 4
        elif idx != -1:
            end, sep = idx, 2
        else:
            return
        ev = bytes(buf[:end])
        del buf[: end + sep]
        yield ev


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` payload of one SSE event, or None for comments/keep-alives."""
    lines = [ln[5:].lstrip(b" ") for ln in event.replace(b"\r\n", b"\n").split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def chunk_channels(operation: str, chunk: dict[str, Any]) -> Iterator[tuple[tuple, tuple, str]]:
    """(channel key, path, text) for each piece of streamed text in a chunk."""
    for ci, ch in enumerate(_list(chunk.get("choices"))):
        if not isinstance(ch, dict):
            continue
        idx = _index(ch.get("index"), ci)
        if operation == "completion":
            if isinstance(ch.get("text"), str):
                yield (idx, "text"), ("choices", ci, "text"), ch["text"]
            continue
        delta = _dict(ch.get("delta"))
        if isinstance(delta.get("content"), str):
            yield (idx, "content"), ("choices", ci, "delta", "content"), delta["content"]
        for tj, tc in enumerate(_list(delta.get("tool_calls"))):
            args = _tool_args(tc)
            if isinstance(args, str):
                yield (
                    (idx, "tool", _index(tc.get("index"), tj)),
                    ("choices", ci, "delta", "tool_calls", tj, "function", "arguments"),
                    args,
                )


def chunk_finished(chunk: dict[str, Any]) -> list[Any]:
    """Choice indexes whose finish_reason is set in this chunk."""
    return [
        _index(ch.get("index"), i)
        for i, ch in enumerate(_list(chunk.get("choices")))
        if isinstance(ch, dict) and ch.get("finish_reason")
    ]


def encode_event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def encode_typed_event(chunk: dict[str, Any]) -> bytes:
    """An SSE event named by its ``type`` (Responses and Anthropic Messages streams)."""
    t = chunk.get("type")
    name = t if isinstance(t, str) else "message"
    return (
        b"event: "
        + name.encode("ascii", "replace")
        + b"\ndata: "
        + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode()
        + b"\n\n"
    )


def flush_chunk(operation: str, like: dict[str, Any] | None, model: str, key: tuple, text: str) -> dict[str, Any]:
    """A synthetic chunk carrying held-back text for one channel."""
    base = {
        "id": (like or {}).get("id", "guard"),
        "object": (like or {}).get("object", "chat.completion.chunk"),
        "created": (like or {}).get("created", int(time.time())),
        "model": (like or {}).get("model", model),
    }
    if operation == "completion":
        return {**base, "choices": [{"index": key[0], "text": text, "finish_reason": None}]}
    if key[1] == "extra":  # another text of the choice (guard.apis.answer.stream_strings)
        return {**base, "choices": [{"index": key[0], "finish_reason": None, **nest(key[2:], text)}]}
    delta: dict[str, Any]
    if key[1] == "tool":
        delta = {"tool_calls": [{"index": key[2], "function": {"arguments": text}}]}
    else:
        delta = {"content": text}
    return {**base, "choices": [{"index": key[0], "delta": delta, "finish_reason": None}]}


def stop_events(operation: str, like: dict[str, Any] | None, model: str) -> bytes:
    """Final chunk with finish_reason content_filter, then [DONE] (DESIGN.md contract)."""
    chunk = flush_chunk(operation, like, model, (0, "content"), "")
    ch = chunk["choices"][0]
    ch["finish_reason"] = "content_filter"
    if operation != "completion":
        ch["delta"] = {}
    return encode_event(chunk) + b"data: [DONE]\n\n"


DONE = b"data: [DONE]\n\n"


# --- what guard.relay asks of each chunk, beside its channels ---------------------------------------------

_QUIET = ("", None)


def drop_unscreenable(obj: dict[str, Any]) -> bool:
    """Token-level detail a screen cannot judge (every choice's ``logprobs``): removed from an answer or chunk."""
    return answer.drop_choice_logprobs(obj)


def stream_strings(
    operation: str, chunk: dict[str, Any], known: frozenset[tuple]
) -> tuple[list[tuple[tuple, tuple, str]], list[tuple[tuple, str]]]:
    """Every other text of a chunk (``refusal``, ``reasoning_content``, fields no reference lists yet)."""
    return answer.stream_strings("openai", chunk, known)


def held_only(operation: str, chunk: dict[str, Any]) -> bool:
    """Whether a chunk whose text the screens hold back carries nothing else the client needs (then it is
    not sent: no empty deltas). A role, a tool call's id or name, a finish reason, usage keep it."""
    if chunk.get("usage"):
        return False
    for ch in chunk.get("choices") or []:
        if not isinstance(ch, dict) or ch.get("finish_reason") or ch.get("logprobs"):
            return False
        if operation == "completion":
            if ch.get("text") not in _QUIET:
                return False
            continue
        for k, v in (ch.get("delta") or {}).items():
            if k == "tool_calls":
                for tc in v if isinstance(v, list) else [v]:
                    fn = tc.get("function") if isinstance(tc, dict) else None
                    if (
                        not isinstance(tc, dict)
                        or tc.get("id")
                        or not isinstance(fn, dict)
                        or fn.get("name")
                        or fn.get("arguments") not in _QUIET
                    ):
                        return False
            elif v not in _QUIET:
                return False
    return True
