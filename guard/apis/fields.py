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

from guard.errors import bad_request

UNSCREENABLE = ("image", "audio", "file", "token_ids", "context")  # cannot be screened as text


@dataclass(frozen=True)
class F:
    """A known field. ``reaches``: the Segment kind it is screened as ("" for a plain parameter);
    ``sub``: the known fields of the object it holds (or of each object in the array it holds); None:
    Guard does not look inside. ``tokens``: an array of token ids is also accepted here (``token_ids``).
    ``types``: the JSON types a context field may hold, checked by ``check``."""

    reaches: str = ""
    sub: Mapping[str, F] | None = None
    tokens: bool = False
    types: tuple[type, ...] | None = None  # JSON types it may hold (null aside); None: any (a schema, say)


P = F()


def T(kind: str) -> F:
    """A text field: a string (or null), screened as ``kind``; any other type is refused (a server might
    still read it as text that was never screened)."""
    return F(kind, types=(str,))


def _fold(spec: Mapping[str, F]) -> dict[str, str]:
    return {k.casefold(): k for k in spec}


# --- OpenAI ------------------------------------------------------------------------------------------------
_CACHE = {"prompt_cache_breakpoint": P}
_PART = {
    "type": P,
    "text": T("content"),
    "refusal": T("content"),
    "image_url": F("image", {"url": P, "detail": P}),
    "input_audio": F("audio", {"data": P, "format": P}),
    "file": F("file", {"file_data": P, "file_id": P, "filename": P}),
    **_CACHE,
}
_CALL_FN = {"name": T("name"), "arguments": T("tool_arguments")}
_TOOL_CALL = {
    "id": P,
    "type": P,
    "function": F(sub=_CALL_FN),
    "custom": F(sub={"name": T("name"), "input": T("tool_arguments")}),
}
_MESSAGE = {
    "role": P,
    "content": F("content", _PART, types=(str, list)),
    "name": T("name"),
    "tool_call_id": P,
    "tool_calls": F(sub=_TOOL_CALL),
    "function_call": F(sub=_CALL_FN),
    "refusal": T("content"),
    "audio": F("audio", {"id": P}),
}
_FUNCTION_DEF = {
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "parameters": F("tool_definition"),
    "strict": P,
}
_CUSTOM_DEF = {
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "format": F(sub={"type": P, "grammar": F(sub={"definition": T("tool_definition"), "syntax": P})}),
}
_TOOL = {"type": P, "function": F(sub=_FUNCTION_DEF), "custom": F(sub=_CUSTOM_DEF)}
_RESPONSE_FORMAT = {
    "type": P,
    "json_schema": F(
        sub={
            "name": T("response_schema"),
            "description": T("response_schema"),
            "schema": F("response_schema"),
            "strict": P,
        }
    ),
}
_PREDICTION = {"type": P, "content": F("prediction", {"type": P, "text": T("prediction"), **_CACHE}, types=(str, list))}

OPENAI_CHAT: dict[str, F] = {
    "model": P,
    "messages": F(sub=_MESSAGE),
    "audio": P,
    "frequency_penalty": P,
    "function_call": P,
    "functions": F(sub=_FUNCTION_DEF),
    "logit_bias": P,
    "logprobs": P,
    "max_completion_tokens": P,
    "max_tokens": P,
    "metadata": P,
    "modalities": P,
    "moderation": P,
    "n": P,
    "parallel_tool_calls": P,
    "prediction": F(sub=_PREDICTION),
    "presence_penalty": P,
    "prompt_cache_key": P,
    "prompt_cache_options": P,
    "prompt_cache_retention": P,
    "reasoning_effort": P,
    "response_format": F(sub=_RESPONSE_FORMAT),
    "safety_identifier": P,
    "seed": P,
    "service_tier": P,
    "stop": P,
    "store": P,
    "stream": P,
    "stream_options": P,
    "temperature": P,
    "tool_choice": P,
    "tools": F(sub=_TOOL),
    "top_logprobs": P,
    "top_p": P,
    "user": P,
    "verbosity": P,
    "web_search_options": P,
}
OPENAI_COMPLETION: dict[str, F] = {
    "model": P,
    "prompt": F("prompt", tokens=True),
    "best_of": P,
    "echo": P,
    "frequency_penalty": P,
    "logit_bias": P,
    "logprobs": P,
    "max_tokens": P,
    "n": P,
    "presence_penalty": P,
    "seed": P,
    "stop": P,
    "stream": P,
    "stream_options": P,
    "suffix": T("suffix"),
    "temperature": P,
    "top_p": P,
    "user": P,
}
OPENAI_EMBEDDINGS: dict[str, F] = {
    "model": P,
    "input": F("input", tokens=True),
    "dimensions": P,
    "encoding_format": P,
    "user": P,
}

# --- Ollama ------------------------------------------------------------------------------------------------
_O_CALL = {
    "id": P,
    "type": P,
    "function": F(sub={"index": P, "name": T("name"), "arguments": F("tool_arguments", types=(str, dict))}),
}
_O_MESSAGE = {
    "role": P,
    "content": T("content"),
    "thinking": T("content"),
    "images": F("image"),
    "tool_calls": F(sub=_O_CALL),
    "tool_name": T("name"),
    "tool_call_id": P,
}
_O_TOOL = {
    "type": P,
    "function": F(
        sub={"name": T("tool_definition"), "description": T("tool_definition"), "parameters": F("tool_definition")}
    ),
}
_O_COMMON = {
    "model": P,
    "format": F("response_schema"),
    "options": P,
    "stream": P,
    "keep_alive": P,
    "think": P,
    "truncate": P,
    "shift": P,
    "logprobs": P,
    "top_logprobs": P,
}
OLLAMA_CHAT: dict[str, F] = {**_O_COMMON, "messages": F(sub=_O_MESSAGE), "tools": F(sub=_O_TOOL)}
OLLAMA_GENERATE: dict[str, F] = {
    **_O_COMMON,
    "prompt": T("prompt"),
    "suffix": T("suffix"),
    "system": T("system"),
    "template": T("template"),
    "context": F("context"),
    "raw": P,
    "images": F("image"),
    "width": P,
    "height": P,
    "steps": P,
}
OLLAMA_EMBED: dict[str, F] = {
    "model": P,
    "input": F("input"),
    "truncate": P,
    "options": P,
    "keep_alive": P,
    "dimensions": P,
}

# --- Anthropic Messages --------------------------------------------------------------------------------------
# One table for every content block type Guard reads (guard.apis.anthropic.BLOCK_TYPES; others are refused):
# text, image and document (source: not screenable), tool_use, tool_result (its content: a string or text and
# image blocks), thinking, redacted_thinking (data: opaque, refused as "context" unless allowed). A document's
# source is refused as "file"; its title and context are not in the table (refused unless extra_fields).
_A_INNER = {"type": P, "text": T("tool_result"), "source": F("image"), "cache_control": P}
_A_BLOCK = {
    "type": P,
    "text": T("content"),
    "source": F("image"),
    "id": P,
    "name": T("name"),
    "input": F("tool_arguments", types=(dict,)),
    "tool_use_id": P,
    "content": F("tool_result", _A_INNER, types=(str, list)),
    "is_error": P,
    "thinking": T("content"),
    "signature": P,
    "data": F("context"),
    "cache_control": P,
}
_A_TOOL = {
    "type": P,
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "input_schema": F("tool_definition"),
    "input_examples": F("tool_definition"),
    "cache_control": P,
    "strict": P,
}
ANTHROPIC_MESSAGES: dict[str, F] = {
    "model": P,
    "max_tokens": P,
    "messages": F(sub={"role": P, "content": F("content", _A_BLOCK, types=(str, list))}),
    "system": F("system", {"type": P, "text": T("system"), "cache_control": P}, types=(str, list)),
    "metadata": P,
    "stop_sequences": P,
    "stream": P,
    "temperature": P,
    "top_k": P,
    "top_p": P,
    "tool_choice": P,
    "tools": F(sub=_A_TOOL),
    "thinking": P,
    "service_tier": P,
    "cache_control": P,
    "inference_geo": P,
    "speed": P,
    "output_config": F(sub={"effort": P, "format": F(sub={"type": P, "schema": F("response_schema")})}),
}

# --- OpenAI Responses ---------------------------------------------------------------------------------------
# Items Guard reads (guard.apis.responses.ITEM_TYPES; others refused): messages with input_text / output_text /
# refusal / input_image / input_file parts, function_call, function_call_output (output: a string or parts).
_R_FILES = {
    "image_url": F("image"),
    "file_id": F("file"),
    "file_data": F("file"),
    "file_url": F("file"),
    "filename": P,
    "detail": P,
}
_R_PART = {"type": P, "text": T("content"), "refusal": T("content"), "annotations": P, "logprobs": P, **_R_FILES}
_R_OUT_PART = {"type": P, "text": T("tool_result"), **_R_FILES}
_R_ITEM = {
    "type": P,
    "role": P,
    "id": P,
    "status": P,
    "phase": P,
    "content": F("content", _R_PART, types=(str, list)),
    "call_id": P,
    "name": T("name"),
    "arguments": T("tool_arguments"),
    "output": F("tool_result", _R_OUT_PART, types=(str, list)),
}
_R_TOOL = {
    "type": P,
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "parameters": F("tool_definition"),
    "strict": P,
}
_R_FORMAT = {
    "type": P,
    "name": T("response_schema"),
    "description": T("response_schema"),
    "schema": F("response_schema"),
    "strict": P,
}
OPENAI_RESPONSES: dict[str, F] = {
    "model": P,
    "input": F("content", _R_ITEM, types=(str, list)),
    "instructions": T("system"),
    "tools": F(sub=_R_TOOL),
    "tool_choice": P,
    "stream": P,
    "stream_options": P,
    "max_output_tokens": P,
    "max_tool_calls": P,
    "temperature": P,
    "top_p": P,
    "top_logprobs": P,
    "metadata": P,
    "parallel_tool_calls": P,
    "reasoning": P,
    "service_tier": P,
    "store": P,
    "previous_response_id": P,
    "conversation": P,
    "background": P,
    "truncation": P,
    "user": P,
    "text": F(sub={"format": F(sub=_R_FORMAT), "verbosity": P}),
    "safety_identifier": P,
    "prompt_cache_key": P,
    "prompt_cache_retention": P,
    "prompt_cache_options": P,
    "include": P,
}

SPECS: dict[tuple[str, str], dict[str, F]] = {
    ("openai", "chat"): OPENAI_CHAT,
    ("openai", "completion"): OPENAI_COMPLETION,
    ("openai", "embeddings"): OPENAI_EMBEDDINGS,
    ("ollama", "chat"): OLLAMA_CHAT,
    ("ollama", "completion"): OLLAMA_GENERATE,
    ("ollama", "embeddings"): OLLAMA_EMBED,
    ("anthropic", "chat"): ANTHROPIC_MESSAGES,
    ("responses", "chat"): OPENAI_RESPONSES,
}
_FOLDED: dict[int, dict[str, str]] = {}


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
    """(path, text) for each string at a ``SENT_PARAMETERS`` path of ``body``."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for pattern in SENT_PARAMETERS[(api, operation)]:
        level: list[tuple[tuple[Any, ...], Any]] = [((), body)]
        for step in pattern:
            nxt: list[tuple[tuple[Any, ...], Any]] = []
            for path, obj in level:
                if step == "*":
                    items = obj.items() if type(obj) is dict else enumerate(obj) if type(obj) is list else ()
                    nxt.extend(((*path, k), v) for k, v in items)
                elif type(obj) is dict and step in obj:
                    nxt.append(((*path, step), obj[step]))
            level = nxt
        out.extend((path, v) for path, v in level if type(v) is str)
    return out
