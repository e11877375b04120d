"""Ollama wire API: /api/chat, /api/generate, /api/embed, /api/tags; NDJSON streams (stream defaults to true)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from guard.apis import answer, openai
from guard.apis.answer import answer_segments, nest
from guard.apis.openai import _dict, _int, _list, _str, _tool_args, json_segment, parameter_segments
from guard.errors import GuardError, bad_request
from guard.screens.base import Segment

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
        x = body.get("input")
        if not isinstance(x, (str, list)) or (isinstance(x, list) and not all(isinstance(s, str) for s in x)):
            raise bad_request("'input' must be a string or an array of strings", "invalid_input")
        stream = False
    return model, stream


def _args_segment(args: Any, role: str, path: tuple) -> Segment | None:
    # Ollama sends tool-call arguments as an object; screens see its JSON text (written back parsed).
    if isinstance(args, dict):
        return json_segment(args, role, "tool_arguments", path)
    if isinstance(args, str):
        return Segment(args, role, "tool_arguments", path)
    return None


def prompt_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    """Every text of the request that reaches the model's context (guard.apis.fields.CONTEXT_FIELDS)."""
    segs: list[Segment] = []
    if operation == "chat":
        for i, m in enumerate(_list(body.get("messages"))):
            m = _dict(m)
            role = m.get("role", "user")
            kind = {"system": "system", "tool": "tool_result"}.get(role, "content")
            _str(segs, m, "content", role, kind, ("messages", i))
            _str(segs, m, "thinking", role, "content", ("messages", i))
            _str(segs, m, "tool_name", role, "name", ("messages", i))
            for j, tc in enumerate(_list(m.get("tool_calls"))):
                fn = _dict(_dict(tc).get("function"))
                _str(segs, fn, "name", role, "name", ("messages", i, "tool_calls", j, "function"))
                s = _args_segment(fn.get("arguments"), role, ("messages", i, "tool_calls", j, "function", "arguments"))
                if s:
                    segs.append(s)
        for i, t in enumerate(_list(body.get("tools"))):
            fn = _dict(_dict(t).get("function"))
            _str(segs, fn, "name", "system", "tool_definition", ("tools", i, "function"))
            _str(segs, fn, "description", "system", "tool_definition", ("tools", i, "function"))
            if fn.get("parameters") is not None:
                segs.append(
                    json_segment(fn["parameters"], "system", "tool_definition", ("tools", i, "function", "parameters"))
                )
    elif operation == "completion":
        for key, role, kind in (
            ("system", "system", "system"),
            ("template", "system", "template"),
            ("prompt", "user", "prompt"),
            ("suffix", "user", "suffix"),
        ):
            _str(segs, body, key, role, kind, ())
    elif operation == "embeddings":
        x = body.get("input")
        if isinstance(x, str):
            segs.append(Segment(x, "user", "input", ("input",)))
        elif isinstance(x, list):
            segs += [Segment(s, "user", "input", ("input", i)) for i, s in enumerate(x) if isinstance(s, str)]
    fmt = body.get("format")
    if operation != "embeddings" and isinstance(fmt, str):
        segs.append(Segment(fmt, "system", "response_schema", ("format",)))
    elif operation != "embeddings" and fmt is not None:
        segs.append(json_segment(fmt, "system", "response_schema", ("format",)))
    return segs + parameter_segments("ollama", operation, body)


def unscreened(operation: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """Inputs that reach the model but cannot be screened as text: (kind, JSON path)."""
    out: list[tuple[str, str]] = []
    if operation == "chat":
        for i, m in enumerate(_list(body.get("messages"))):
            if _dict(m).get("images") not in (None, []):
                out.append(("image", f"$.messages[{i}].images"))
    elif operation == "completion":
        if body.get("images") not in (None, []):
            out.append(("image", "$.images"))
        if body.get("context") not in (None, []):
            out.append(("context", "$.context"))
    return out


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
    return segs + answer_segments(body, segs)  # thinking, tool names, fields no reference lists


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
        del buf[: idx + 1]
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


def flush_chunk(
    operation: str, like: dict[str, Any] | None, model: str, text: str, key: tuple = (0, "content")
) -> dict[str, Any]:
    base = {
        "model": (like or {}).get("model", model),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "done": False,
    }
    if key[1] == "extra":  # another text of the answer (guard.apis.answer.stream_strings)
        out = {**base, **nest(key[2:], text)}
        if isinstance(out.get("message"), dict):
            out["message"] = {"role": "assistant", "content": "", **out["message"]}
        return out
    if operation == "completion":
        return {**base, "response": text}
    return {**base, "message": {"role": "assistant", "content": text}}


def stop_line(operation: str, like: dict[str, Any] | None, model: str) -> bytes:
    chunk = flush_chunk(operation, like, model, "")
    chunk["done"] = True
    chunk["done_reason"] = "content_filter"
    return encode_line(chunk)


# --- what guard.pipeline and guard.relay ask every wire API module -----------------------------------------
CATALOG = True  # /api/tags, /api/show, /api/ps, /api/version: a catalogue (guard.stages.catalog), not a list

SEP = b"\n"
END = b""
split = split_lines
encode = encode_line


def payload(raw: bytes) -> bytes:
    return raw


def is_end(data: bytes) -> bool:
    return False


def chunk_finished(chunk: dict[str, Any]) -> list[Any]:
    return [0] if chunk.get("done") else []


def completion_limit(body: dict[str, Any]) -> int | None:
    """``options.num_predict``: the most answer tokens the request allows, if it says."""
    opts = body.get("options")
    v = opts.get("num_predict") if isinstance(opts, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def ask_stream_usage(operation: str, body: dict[str, Any]) -> bool:
    """Ollama's last line always carries its counts (``prompt_eval_count``, ``eval_count``): nothing to ask."""
    return False


def usage_only(chunk: dict[str, Any]) -> bool:
    return False


def flush(operation: str, like: dict[str, Any] | None, model: str, key: tuple, text: str) -> dict[str, Any]:
    return flush_chunk(operation, like, model, text, key)


def stop_bytes(operation: str, like: dict[str, Any] | None, model: str) -> bytes:
    return stop_line(operation, like, model)


def error_body(err: GuardError) -> bytes:
    """Ollama's error shape, ``{"error": "text"}`` (the ``ollama`` clients raise ResponseError with that text
    and the status); Guard's code, and the field at fault when there is one, ride beside it."""
    out: dict[str, Any] = {"error": err.message, "code": err.code}
    if err.param:
        out["param"] = err.param
    return json.dumps(out).encode()


def stream_error(err: GuardError) -> bytes:
    """An Ollama ``{"error": ...}`` line (what Ollama itself sends; its clients raise ResponseError)."""
    return json.dumps({"error": err.message}).encode() + b"\n"


def filter_whole(operation: str, body: dict[str, Any]) -> None:
    """A blocked whole answer: only its structure kept, empty content and done_reason content_filter."""
    kept: dict[str, Any] = {k: body[k] for k in ("model", "created_at", "done", "message", "response") if k in body}
    body.clear()
    body.update(kept, done_reason="content_filter")
    if "message" in body:
        body["message"] = {"role": "assistant", "content": ""}
    if "response" in body:
        body["response"] = ""


# --- what guard.upstream, guard.upstream_errors and the audit recorder ask (through guard.apis.wire) ------

prompt_text = openai.prompt_text
upstream_target = openai.upstream_target


def upstream_error_body(message: str, code: str) -> bytes:
    """What stands for an upstream's error answer Guard withheld: Ollama's own ``{"error": text}``."""
    return json.dumps({"error": message}).encode()


def model_list(names: list[str], now: int) -> dict[str, Any]:
    """``GET /api/tags``: the models a client may name."""
    return {"models": [{"name": n, "model": n, "modified_at": "1970-01-01T00:00:00Z", "size": 0} for n in names]}


# --- what guard.relay asks of each chunk, beside its channels ---------------------------------------------


def drop_unscreenable(obj: dict[str, Any]) -> bool:
    """``logprobs`` and ``context`` (the conversation as token ids): removed from an answer or chunk."""
    return answer.drop_keys(obj)


def stream_strings(
    operation: str, chunk: dict[str, Any], known: frozenset[tuple]
) -> tuple[list[tuple[tuple, tuple, str]], list[tuple[tuple, str]]]:
    """Every other text of a line (``thinking``, tool-call arguments carried whole, unknown fields)."""
    return answer.stream_strings("ollama", chunk, known)


def held_only(operation: str, chunk: dict[str, Any]) -> bool:
    """Whether a line whose text the screens hold back carries nothing else the client needs (then it is not
    sent): not the last line, no tool calls, no other message field."""
    msg = chunk.get("message")
    rest = {k: v for k, v in (msg.items() if isinstance(msg, dict) else ()) if k not in ("role", "content")}
    return (
        not chunk.get("done")
        and chunk.get("response") in ("", None)
        and not any(rest.values())
        and not chunk.get("context")
    )
