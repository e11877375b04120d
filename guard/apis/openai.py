"""OpenAI wire API: chat completions, completions, embeddings, models; SSE streams."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from guard.apis import JSON_MARK
from guard.apis.answer import answer_segments, json_text
from guard.apis.fields import parameter_texts
from guard.apis.openai_stream import DONE as DONE
from guard.apis.openai_stream import chunk_channels as chunk_channels
from guard.apis.openai_stream import chunk_finished as chunk_finished
from guard.apis.openai_stream import drop_unscreenable as drop_unscreenable
from guard.apis.openai_stream import encode_event, event_data, flush_chunk, split_events, stop_events
from guard.apis.openai_stream import held_only as held_only
from guard.apis.openai_stream import stream_strings as stream_strings
from guard.apis.values import _dict as _dict
from guard.apis.values import _index as _index
from guard.apis.values import _int as _int
from guard.apis.values import _list as _list
from guard.apis.values import _tool_args as _tool_args
from guard.errors import GuardError, bad_request
from guard.screens.base import Segment

STREAM_MEDIA_TYPE = b"text/event-stream"


def validate(operation: str, body: dict[str, Any]) -> tuple[str, bool]:
    """Check the request shape the proxy relies on; return (model, stream)."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string", "invalid_model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_value")
    if operation == "chat":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise bad_request("'messages' must be a non-empty array", "invalid_messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(f"messages[{i}] must be an object with a 'role'", "invalid_messages")
            c = m.get("content")
            if c is not None and not isinstance(c, (str, list)):
                raise bad_request(f"messages[{i}].content must be a string or an array", "invalid_messages")
    elif operation == "completion":
        p = body.get("prompt")
        if not isinstance(p, (str, list)):
            raise bad_request("'prompt' must be a string or an array", "invalid_prompt")
    elif operation == "embeddings":
        if not isinstance(body.get("input"), (str, list)):
            raise bad_request("'input' must be a string or an array", "invalid_input")
        stream = False
    return model, stream


_ROLE_KIND = {"system": "system", "developer": "system", "tool": "tool_result", "function": "tool_result"}


def json_segment(value: Any, role: str, kind: str, path: tuple) -> Segment:
    """A JSON value (a schema, Ollama tool-call arguments) as screens see it: its JSON text, every key and
    string in it. The ``__json__`` path end marks it for write-back parsed (guard.stages.decide.write_back)."""
    return Segment(json_text(value), role, kind, (*path, JSON_MARK))


def _str(segs: list[Segment], obj: dict[str, Any], key: str, role: str, kind: str, path: tuple) -> None:
    if isinstance(obj.get(key), str):
        segs.append(Segment(obj[key], role, kind, (*path, key)))


def _definition(segs: list[Segment], fn: dict[str, Any], kind: str, path: tuple, schema: str | None) -> None:
    """A tool, function or response-format definition: its name, description and JSON schema."""
    _str(segs, fn, "name", "system", kind, path)
    _str(segs, fn, "description", "system", kind, path)
    if schema and fn.get(schema) is not None:
        segs.append(json_segment(fn[schema], "system", kind, (*path, schema)))


_PLAIN_MESSAGE_KEYS = frozenset({"role", "content"})


def _message(segs: list[Segment], i: int, m: dict[str, Any]) -> None:
    role = m.get("role", "user")
    kind = _ROLE_KIND.get(role, "content")
    c = m.get("content")
    if isinstance(c, str) and m.keys() <= _PLAIN_MESSAGE_KEYS:  # the common message: one text, nothing else
        segs.append(Segment(c, role, kind, ("messages", i, "content")))
        return
    base = ("messages", i)
    if isinstance(c, str):
        segs.append(Segment(c, role, kind, (*base, "content")))
    elif isinstance(c, list):
        for j, part in enumerate(c):
            if isinstance(part, dict):
                _str(segs, part, "text", role, kind, (*base, "content", j))
                _str(segs, part, "refusal", role, kind, (*base, "content", j))
    _str(segs, m, "refusal", role, "content", base)
    _str(segs, m, "name", role, "name", base)
    for j, tc in enumerate(_list(m.get("tool_calls"))):
        for key, args in (("function", "arguments"), ("custom", "input")):
            call = _dict(_dict(tc).get(key))
            _str(segs, call, "name", role, "name", (*base, "tool_calls", j, key))
            _str(segs, call, args, role, "tool_arguments", (*base, "tool_calls", j, key))
    fc = _dict(m.get("function_call"))
    _str(segs, fc, "name", role, "name", (*base, "function_call"))
    _str(segs, fc, "arguments", role, "tool_arguments", (*base, "function_call"))


def prompt_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    """Every text of the request that reaches the model's context (guard.apis.fields.CONTEXT_FIELDS)."""
    segs: list[Segment] = []
    if operation == "chat":
        for i, m in enumerate(_list(body.get("messages"))):
            if isinstance(m, dict):
                _message(segs, i, m)
        for i, t in enumerate(_list(body.get("tools"))):
            _definition(
                segs, _dict(_dict(t).get("function")), "tool_definition", ("tools", i, "function"), "parameters"
            )
            custom = _dict(_dict(t).get("custom"))
            _definition(segs, custom, "tool_definition", ("tools", i, "custom"), None)
            grammar = _dict(_dict(custom.get("format")).get("grammar"))
            _str(segs, grammar, "definition", "system", "tool_definition", ("tools", i, "custom", "format", "grammar"))
        for i, f in enumerate(_list(body.get("functions"))):
            _definition(segs, _dict(f), "tool_definition", ("functions", i), "parameters")
        js = _dict(_dict(body.get("response_format")).get("json_schema"))
        _definition(segs, js, "response_schema", ("response_format", "json_schema"), "schema")
        pred = _dict(body.get("prediction"))
        c = pred.get("content")
        if isinstance(c, str):
            segs.append(Segment(c, "user", "prediction", ("prediction", "content")))
        for j, part in enumerate(_list(c)):
            _str(segs, _dict(part), "text", "user", "prediction", ("prediction", "content", j))
    elif operation == "completion":
        _strings(segs, body, "prompt", "prompt")
        _str(segs, body, "suffix", "user", "suffix", ())
    elif operation == "embeddings":
        _strings(segs, body, "input", "input")
    return segs + parameter_segments("openai", operation, body)


def parameter_segments(api: str, operation: str, body: dict[str, Any]) -> list[Segment]:
    """Text parameters the upstream receives though the model does not read them (fields.SENT_PARAMETERS)."""
    return [Segment(t, "user", "parameter", p) for p, t in parameter_texts(api, operation, body)]


def _strings(segs: list[Segment], body: dict[str, Any], key: str, kind: str) -> None:
    x = body.get(key)
    if isinstance(x, str):
        segs.append(Segment(x, "user", kind, (key,)))
    elif isinstance(x, list):
        segs += [Segment(s, "user", kind, (key, i)) for i, s in enumerate(x) if isinstance(s, str)]


def unscreened(operation: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """Inputs that reach the model but cannot be screened as text: (kind, JSON path). Refused unless the
    upstream allows the kind (``allow_unscreened``)."""
    out: list[tuple[str, str]] = []
    if operation == "chat":
        if "audio" in _list(body.get("modalities")) or body.get("audio") is not None:
            # a spoken answer: its transcript is screened, the speech itself cannot be
            out.append(("audio", "$.modalities" if body.get("audio") is None else "$.audio"))
        for i, m in enumerate(_list(body.get("messages"))):
            m = _dict(m)
            if m.get("audio") is not None:
                out.append(("audio", f"$.messages[{i}].audio"))
            for j, part in enumerate(_list(m.get("content"))):
                for key, kind in (("image_url", "image"), ("input_audio", "audio"), ("file", "file")):
                    if isinstance(part, dict) and (key in part or part.get("type") == key):
                        out.append((kind, f"$.messages[{i}].content[{j}]"))
                        break
    else:
        key = "prompt" if operation == "completion" else "input"
        for i, x in enumerate(_list(body.get(key))):
            if isinstance(x, str):
                continue
            if not (_token(x) or (isinstance(x, list) and all(_token(t) for t in x))):
                raise bad_request(
                    f"{key}[{i}] must be a string, a token id or an array of token ids",
                    f"invalid_{key}",
                    param=f"$.{key}[{i}]",
                )
            if not out:
                out.append(("token_ids", f"$.{key}[{i}]"))
    return out


def _token(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def response_segments(operation: str, body: dict[str, Any]) -> list[Segment]:
    segs: list[Segment] = []
    for i, ch in enumerate(_list(body.get("choices"))):
        if not isinstance(ch, dict):
            continue
        if operation == "completion":
            if isinstance(ch.get("text"), str):
                segs.append(Segment(ch["text"], "assistant", "content", ("choices", i, "text")))
            continue
        msg = _dict(ch.get("message"))
        if isinstance(msg.get("content"), str):
            segs.append(Segment(msg["content"], "assistant", "content", ("choices", i, "message", "content")))
        for j, tc in enumerate(_list(msg.get("tool_calls"))):
            args = _tool_args(tc)
            if isinstance(args, str):
                segs.append(
                    Segment(
                        args,
                        "assistant",
                        "tool_arguments",
                        ("choices", i, "message", "tool_calls", j, "function", "arguments"),
                    )
                )
    return segs + answer_segments(body, segs)  # refusal, reasoning, parts, fields no reference lists


def usage(body: dict[str, Any]) -> dict[str, int] | None:
    u = body.get("usage")
    if isinstance(u, dict):
        return {"input_tokens": _int(u.get("prompt_tokens")), "output_tokens": _int(u.get("completion_tokens"))}
    return None


def finish_reasons(body: dict[str, Any]) -> list[str]:
    return [
        c["finish_reason"]
        for c in _list(body.get("choices"))
        if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
    ]


# --- what guard.pipeline and guard.relay ask every wire API module -----------------------------------------
SEP = b"\n\n"
END = DONE
PATH = ""  # the client's path is the upstream's
split = split_events
flush = flush_chunk
payload = event_data
encode = encode_event
stop_bytes = stop_events


def is_end(data: bytes) -> bool:
    return data.strip() == b"[DONE]"


def completion_limit(body: dict[str, Any]) -> int | None:
    """The most answer tokens the request allows (what a quota reserves for the answer), if it says."""
    v = body.get("max_completion_tokens", body.get("max_tokens"))
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def ask_stream_usage(operation: str, body: dict[str, Any]) -> bool:
    """Ask for the stream's usage chunk (``stream_options.include_usage``); True when Guard added the ask,
    so that the chunk is Guard's to take out of the client's stream (``usage_only``)."""
    if operation not in ("chat", "completion"):
        return False
    opts = body.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage") is True:
        return False
    body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    return True


def usage_only(chunk: dict[str, Any]) -> bool:
    """The usage-only chunk sent last when ``include_usage`` is asked (no choices, a usage object)."""
    return not chunk.get("choices") and isinstance(chunk.get("usage"), dict)


def error_body(err: GuardError) -> bytes:
    return err.body()


def stream_error(err: GuardError) -> bytes:
    """An error event in the OpenAI error shape, then [DONE] (the OpenAI SDKs raise an APIError on it)."""
    return b"data: " + err.body() + b"\n\ndata: [DONE]\n\n"


def filter_whole(operation: str, body: dict[str, Any]) -> None:
    """A blocked whole answer: only its structure kept, empty content and finish_reason content_filter."""
    top: dict[str, Any] = {k: body[k] for k in ("id", "object", "created", "model", "choices", "usage") if k in body}
    body.clear()
    body.update(top)
    for ch in body.get("choices") or []:
        if isinstance(ch, dict):
            kept = {k: ch[k] for k in ("index", "message", "text") if k in ch}
            ch.clear()
            ch.update(kept, finish_reason="content_filter", logprobs=None)
            if "message" in ch:
                ch["message"] = {"role": "assistant", "content": ""}
            if "text" in ch:
                ch["text"] = ""


# --- what guard.upstream, guard.upstream_errors and the audit recorder ask (through guard.apis.wire) ------

CAPTURED_KINDS = ("content", "system", "prompt", "input", "tool_result")  # segment kinds content capture keeps


def prompt_text(operation: str, body: dict[str, Any]) -> str | None:
    """The prompt as forwarded (after screens rewrote it), for audit content capture; None when there is
    none. Read from the body's messages, ``prompt``, ``input`` and ``system``: the body may be the invalid
    one being refused."""
    parts: list[str] = []
    msgs = body.get("messages")
    for m in msgs if isinstance(msgs, list) else []:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
    for key in ("prompt", "input", "system"):
        v = body.get(key)
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            parts += [x for x in v if isinstance(x, str)]
    return "\n".join(parts) if parts else None


def segments_text(segments: Any, operation: str, body: dict[str, Any]) -> str | None:
    """``prompt_text`` for APIs whose module lists the prompt's texts (``prompt_segments``)."""
    try:
        segs = segments(operation, body)
    except Exception:
        return None
    texts = [sg.text for sg in segs if sg.kind in CAPTURED_KINDS]
    return "\n".join(texts) if texts else None


def upstream_error_body(message: str, code: str) -> bytes:
    """What stands for an upstream's error answer Guard withheld (guard.upstream_errors)."""
    return GuardError(502, message, "upstream_error", code).body()


def upstream_target(base: str, path: str, model: str, version: str | None, key: str) -> tuple[str, list[bytes]]:
    """The request target on an OpenAI-compatible upstream (``base`` its URL's path) and its credential: a
    bearer key."""
    if base.endswith("/v1") and path.startswith("/v1/"):
        base = base[:-3]
    return base + path, [f"authorization: Bearer {key}\r\n".encode("latin-1")] if key else []


def azure_target(base: str, path: str, model: str, version: str | None, key: str) -> tuple[str, list[bytes]]:
    """Azure OpenAI: the deployment (the model) in the path, ``api-version`` in the query, an ``api-key``."""
    sub = path.removeprefix("/v1")
    target = (
        f"{base}/openai/deployments/{quote(model, safe='')}{sub}?api-version={quote(version or '2024-10-21', safe='')}"
    )
    return target, [f"api-key: {key}\r\n".encode("latin-1")] if key else []


def model_list(names: list[str], now: int) -> dict[str, Any]:
    """``GET /v1/models``: the models a client may name."""
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": now, "owned_by": "guard"} for n in names],
    }
