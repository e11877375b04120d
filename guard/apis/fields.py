"""Every request field Guard knows, per wire API and operation, and what each one does to the model.

The tables follow the public API references (OpenAI chat completions, completions and embeddings as the
official ``openai`` SDK sends them; Ollama /api/chat, /api/generate and /api/embed as its server reads
them). A field marked ``F(kind)`` reaches the model's context: it is screened as text of that Segment kind,
or, for a kind in ``UNSCREENABLE``, refused unless the upstream allows it (``allow_unscreened``). ``P`` is a
parameter that does not reach the context (sampling, output shape, ids, metadata); Guard forwards it as
parsed. ``CONTEXT_FIELDS`` is the list made from these tables: docs/threat-model.md shows it and
tests/hardening/test_field_coverage.py puts a secret in each of its fields.

``check`` refuses a key that equals a known field ignoring case but is not spelt exactly like it (Go's
encoding/json would read it as that field) and returns the keys it does not know, for ``admit`` to refuse
unless the upstream lists them in ``extra_fields`` (dotted, list levels left out: ``messages.cache_control``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guard.apis.field_spec import UNSCREENABLE, F, P, T, _fold
from guard.apis.field_tables import SPECS
from guard.errors import bad_request

__all__ = ["CONTEXT_FIELDS", "SPECS", "UNSCREENABLE", "ContextField", "F", "P", "T", "check"]

_FOLDED: dict[int, dict[str, str]] = {}  # id of a table -> its keys case-folded


# --- the list of fields that reach the model ----------------------------------------------------------------


@dataclass(frozen=True)
class ContextField:
    api: str
    operation: str
    path: str  # e.g. messages[].content[].text
    kind: str  # Segment kind when screened; an UNSCREENABLE kind when refused by default

    @property
    def screened(self) -> bool:
        return self.kind not in UNSCREENABLE

    @property
    def id(self) -> str:
        return f"{self.api} {self.operation} {self.path}" + (" (token ids)" if self.kind == "token_ids" else "")


def _rows(api: str, op: str, spec: Mapping[str, F], prefix: str, out: list[ContextField]) -> None:
    for k, f in spec.items():
        path = prefix + k
        if f.reaches:
            out.append(ContextField(api, op, path, f.reaches))
        if f.tokens:
            out.append(ContextField(api, op, path, "token_ids"))
        if f.sub is not None:
            _rows(api, op, f.sub, path + ("[]." if _is_array(api, op, path) else "."), out)


_ARRAYS = {
    "messages",
    "messages[].content",
    "messages[].tool_calls",
    "tools",
    "functions",
    "prediction.content",
    "system",
    "messages[].content[].content",
    "input",
    "input[].content",
    "input[].output",
}


def _is_array(api: str, op: str, path: str) -> bool:
    return path in _ARRAYS


def context_fields() -> tuple[ContextField, ...]:
    out: list[ContextField] = []
    for (api, op), spec in SPECS.items():
        _rows(api, op, spec, "", out)
    return tuple(out)


CONTEXT_FIELDS = context_fields()


# --- checking a body ---------------------------------------------------------------------------------------


def check(api: str, operation: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """Refuse (400 ``ambiguous_key``) a key equal to a known field ignoring case but spelt otherwise; return
    the unknown keys as (dotted spec path, JSON path)."""
    unknown: list[tuple[tuple[Any, ...], str]] = []
    _walk(SPECS[(api, operation)], body, (), unknown)
    return [(".".join(str(p) for p in path if isinstance(p, str)), _json_path(path)) for path, _ in unknown]


def _walk(spec: Mapping[str, F], obj: Any, path: tuple[Any, ...], unknown: list[tuple[tuple[Any, ...], str]]) -> None:
    if type(obj) is list:
        for i, x in enumerate(obj):
            if type(x) is dict:
                _walk_obj(spec, x, (*path, i), unknown)
    elif type(obj) is dict:
        _walk_obj(spec, obj, path, unknown)


def _walk_obj(
    spec: Mapping[str, F], obj: dict[str, Any], path: tuple[Any, ...], unknown: list[tuple[tuple[Any, ...], str]]
) -> None:
    for k, v in obj.items():
        f = spec.get(k)
        if f is None:
            _unknown(spec, (*path, k), unknown)
            continue
        if f.types is not None and v is not None and type(v) not in f.types:
            kp = _json_path((*path, k))
            what = " or ".join(_TYPE_NAMES[t] for t in f.types)
            raise bad_request(f"{kp} must be {what}", "invalid_type", param=kp)
        if f.sub is not None and (type(v) is dict or type(v) is list):
            _walk(f.sub, v, (*path, k), unknown)


def _unknown(spec: Mapping[str, F], path: tuple[Any, ...], unknown: list[tuple[tuple[Any, ...], str]]) -> None:
    folded = _FOLDED.get(id(spec))
    if folded is None:
        folded = _FOLDED[id(spec)] = _fold(spec)
    known = folded.get(path[-1].casefold())
    if known is not None:
        kp = _json_path(path)
        raise bad_request(
            f"field {kp} is not spelt like the known field {known!r} (keys are case-sensitive)",
            "ambiguous_key",
            param=kp,
        )
    unknown.append((path, path[-1]))


_TYPE_NAMES: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}


def _json_path(path: tuple[Any, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else _member(p) for p in path)


def _member(key: str) -> str:
    return f".{key}" if key.isidentifier() and key.isascii() else f"[{json.dumps(key, ensure_ascii=False)}]"


def refuse_unknown(unknown: list[tuple[str, str]], allowed: set[str]) -> None:
    for dotted, path in unknown:
        if dotted not in allowed:
            raise bad_request(
                f"unknown field {path}: Guard forwards only the fields of the API reference "
                "(an operator may allow others per upstream: extra_fields)",
                "unknown_field",
                param=path,
            )


# --- parameters that carry client text to the upstream -------------------------------------------------------
# Not model context, but text the upstream receives and may keep (OpenAI stores ``metadata`` and ``user`` with
# stored completions; a stop sequence is free text; a user location is personal data; some chat templates
# print tool-call ids into the prompt): a secret or personal data put there would leave unscreened. They are screened as
# kind ``parameter`` (docs/threat-model.md). "*" is every key or index.
_STOP = (("stop",), ("stop", "*"))
SENT_PARAMETERS: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("openai", "chat"): (
        *_STOP,
        ("user",),
        ("safety_identifier",),
        ("prompt_cache_key",),
        ("metadata", "*"),
        ("tool_choice", "function", "name"),
        ("tool_choice", "custom", "name"),
        ("web_search_options", "user_location", "approximate", "*"),
        ("messages", "*", "tool_call_id"),
        ("messages", "*", "tool_calls", "*", "id"),
    ),
    ("openai", "completion"): (*_STOP, ("user",)),
    ("openai", "embeddings"): (("user",),),
    ("ollama", "chat"): (
        ("options", "stop"),
        ("options", "stop", "*"),
        ("messages", "*", "tool_call_id"),
        ("messages", "*", "tool_calls", "*", "id"),
    ),
    ("ollama", "completion"): (("options", "stop"), ("options", "stop", "*")),
    ("ollama", "embeddings"): (),
}


def parameter_texts(api: str, operation: str, body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """(path, text) for each string at a ``SENT_PARAMETERS`` path of ``body``, pattern by pattern, each
    pattern's strings in document order. A pattern whose first key the body lacks costs one lookup: the
    common request sets none of these parameters."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for pattern in SENT_PARAMETERS[(api, operation)]:
        head = pattern[0]
        if head == "*":
            _texts_at(body, pattern, 0, (), out)
        else:
            v = body.get(head, _ABSENT)
            if v is not _ABSENT:
                _texts_at(v, pattern, 1, (head,), out)
    return out


_ABSENT = object()


def _texts_at(
    obj: Any, pattern: tuple[str, ...], i: int, path: tuple[Any, ...], out: list[tuple[tuple[Any, ...], str]]
) -> None:
    """The strings at ``pattern[i:]`` below ``obj`` (at ``path``), appended to ``out`` in document order."""
    if i == len(pattern):
        if type(obj) is str:
            out.append((path, obj))
        return
    step = pattern[i]
    if step == "*":
        nxt = pattern[i + 1] if i + 1 < len(pattern) else "*"
        if nxt != "*":  # only the elements holding the next key lead anywhere (a megabyte of messages)
            items = obj.items() if type(obj) is dict else enumerate(obj) if type(obj) is list else ()
            for k, v in items:
                if type(v) is dict and nxt in v:
                    _texts_at(v, pattern, i + 1, (*path, k), out)
            return
        if type(obj) is dict:
            for k, v in obj.items():
                _texts_at(v, pattern, i + 1, (*path, k), out)
        elif type(obj) is list:
            for k, v in enumerate(obj):
                _texts_at(v, pattern, i + 1, (*path, k), out)
    elif type(obj) is dict:
        v = obj.get(step, _ABSENT)
        if v is not _ABSENT:
            _texts_at(v, pattern, i + 1, (*path, step), out)
