"""Every text an answer carries, for the response screens: not only the fields Guard knows by name.

An upstream answer may carry model text in many places besides ``message.content``: ``refusal``,
``reasoning_content`` / ``reasoning`` (OpenAI-compatible servers), ``audio.transcript``, content given as
an array of parts, ``function_call.arguments``, Ollama's ``thinking``, or fields no reference lists yet.
``other_strings`` yields every string of an answer (or of one stream chunk) except the known structural
ones (ids, roles, model name, finish reason...) and the paths already screened by name, so each is
screened as answer text (written back, or the answer blocked) rather than relayed unjudged.

Token-level detail cannot be judged: ``logprobs`` repeats the answer token by token (a secret the screens
redact in ``content`` would still be spelt out there, split across tokens), and Ollama's ``context`` is
the conversation as token ids. Each wire module's ``drop_unscreenable`` (OpenAI's through
``drop_choice_logprobs``, Ollama's through ``drop_keys``) removes both from an answer or chunk that response
screens judge (docs/threat-model.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson

from guard.apis import JSON_MARK
from guard.screens.base import Segment

# Keys whose string values are structure, not model text (at any depth of an answer).
STRUCTURAL = frozenset(
    {
        "id",
        "object",
        "model",
        "role",
        "finish_reason",
        "type",
        "system_fingerprint",
        "service_tier",
        "created_at",
        "done_reason",
        "tool_call_id",
        "index",
        "obfuscation",  # random padding some servers add to each stream event (its length hides the text's)
    }
)
UNSCREENABLE_KEYS = ("logprobs", "context")  # token-level detail and token ids
# Opaque values a client sends back and the upstream checks (reasoning state, thinking signatures, base64
# images): no model text, and a rewrite would break them
OPAQUE = frozenset(
    {"encrypted_content", "encrypted_index", "signature", "data", "partial_image_b64", "b64_json", "result"}
)


def drop_choice_logprobs(obj: dict[str, Any]) -> bool:
    """Every choice's ``logprobs`` of an OpenAI answer or chunk left as null. True if any held something."""
    dropped = False
    for ch in _choices(obj):
        if "logprobs" in ch:
            dropped = ch["logprobs"] is not None or dropped
            ch["logprobs"] = None
    return dropped


def drop_keys(obj: dict[str, Any], keys: tuple[str, ...] = UNSCREENABLE_KEYS) -> bool:
    """Top-level ``keys`` removed (Ollama's ``logprobs`` and ``context``). True if any held something."""
    dropped = False
    for k in keys:
        dropped = obj.pop(k, None) is not None or dropped
    return dropped


def _choices(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The choice objects of an OpenAI answer or chunk (whatever else an untrusted body put there left out)."""
    c = obj.get("choices")
    return [x for x in c if isinstance(x, dict)] if isinstance(c, list) else []


def _index(v: Any, default: int) -> Any:
    """A choice's index as guard.apis.openai reads it (its channel key)."""
    return v if isinstance(v, (int, str)) and not isinstance(v, bool) else default


def other_strings(
    obj: Any, path: tuple = (), known: frozenset[tuple] = frozenset(), skip: frozenset[str] = STRUCTURAL
) -> Iterator[tuple[tuple, str]]:
    """(path, text) for each string in ``obj`` not under a ``skip`` key and not at a ``known`` path."""
    stack: list[tuple[tuple, Any]] = [(path, obj)]
    while stack:
        p, o = stack.pop()
        if isinstance(o, str):
            if o and not any(p[:n] in known for n in range(1, len(p) + 1)):
                yield p, o
        elif isinstance(o, dict):
            for k, v in o.items():
                if k not in skip and (isinstance(v, (str, dict, list))):
                    stack.append(((*p, k), v))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                stack.append(((*p, i), v))


def answer_segments(body: dict[str, Any], known: list[Segment]) -> list[Segment]:
    """Segments for the strings of a whole answer that no named field covered (``known``: the named ones)."""
    paths = frozenset(s.path[:-1] if s.path and s.path[-1] == JSON_MARK else s.path for s in known)
    return [Segment(t, "assistant", "content", p) for p, t in other_strings(body, (), paths)]


def stream_strings(
    api: str, chunk: dict[str, Any], known: frozenset[tuple]
) -> tuple[list[tuple[tuple, tuple, str]], list[tuple[tuple, str]]]:
    """The strings of one stream chunk that no named channel covered: (channel key, path, text) for text
    that streams piece by piece (``reasoning_content``, ``refusal``, ``thinking``...: screened as a channel
    of its own), and (path, text) for what a chunk carries whole (tool-call names: screened on their own;
    tool-call arguments given as a JSON value, Ollama's object: its JSON text, at a path ending
    ``__json__``, screened as tool-call arguments are and written back parsed)."""
    channels: list[tuple[tuple, tuple, str]] = []
    whole: list[tuple[tuple, str]] = []
    roots: list[tuple[tuple[Any, ...], dict[str, Any], Any]]
    if api == "openai":
        choices = chunk.get("choices")
        roots = [
            (("choices", ci), ch, _index(ch.get("index"), ci))
            for ci, ch in enumerate(choices if isinstance(choices, list) else [])
            if isinstance(ch, dict)
        ]
        rest = {k: v for k, v in chunk.items() if k != "choices"}
        roots.append(((), rest, 0))
    else:
        roots = [((), chunk, 0)]
    for base, obj, idx in roots:
        for path, value in _json_arguments(obj, base):  # as one JSON text, as a whole answer's are
            whole.append(((*path, JSON_MARK), json_text(value)))
            known = known | {path}
        for path, text in other_strings(obj, base, known):
            if "tool_calls" in path or (api == "openai" and not base):
                whole.append((path, text))
            else:
                channels.append(((idx, "extra", *path[len(base) :]), path, text))
    return channels, whole


def nest(path: tuple, text: str) -> Any:
    """A JSON value holding ``text`` at ``path`` (an index becomes a one-element array)."""
    value: Any = text
    for p in reversed(path):
        value = [value] if isinstance(p, int) else {p: value}
    return value


def json_text(value: Any) -> str:
    """A JSON value (a schema, Ollama tool-call arguments) as the JSON text screens read."""
    try:  # orjson: a megabyte of tool schemas in a few milliseconds (the json module takes ten times that)
        return orjson.dumps(value).decode()
    except TypeError:  # an integer past 64 bits, which orjson does not write
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_arguments(obj: dict[str, Any], base: tuple) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of each tool call's arguments given as a JSON object or array (not as JSON text)."""
    for key in ("message", "delta"):
        holder = obj.get(key)
        calls = holder.get("tool_calls") if isinstance(holder, dict) else None
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            fn = call.get("function") if isinstance(call, dict) else None
            args = fn.get("arguments") if isinstance(fn, dict) else None
            if isinstance(args, (dict, list)):
                yield (*base, key, "tool_calls", j, "function", "arguments"), args
