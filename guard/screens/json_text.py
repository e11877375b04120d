"""Fields whose text is JSON (tool-call arguments, tool results), as screens read them: decoded.

A model reading ``{"token": "\\u0067hp_..."}`` reads ``ghp_...``: JSON escapes hide nothing from it, so a
screen must not be fooled by them either. ``parse`` reads such text keeping each number's own spelling
(``JsonNumber``), ``map_json`` rewrites every string value, every key and (optionally) every number, and
``dump`` writes the value back as valid JSON text: a rewritten number becomes a JSON string (a placeholder
such as ``<CREDIT_CARD>`` is no number), an untouched one keeps its spelling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

JSON_KINDS = ("tool_arguments", "tool_result")  # Segment kinds whose text is (usually) JSON text
SCHEMA_KINDS = ("tool_definition", "response_schema")  # JSON schemas (guard.apis.fields), when JSON text
_MAX_DEPTH = 200


class JsonNumber(str):
    """A JSON number as it was written (``4111111111111111``, ``1e3``)."""


def parse(text: str) -> Any:
    """The value of ``text`` when it is JSON (numbers as ``JsonNumber``), else None."""
    if not text or text.lstrip()[:1] not in ("{", "[", '"'):
        return None
    try:
        return json.loads(text, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None


def _refuse(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)", re.S)
_KEEP = frozenset('"\\') | frozenset(chr(c) for c in range(0x20))


def decoded_view(text: str) -> str:
    """``text`` with the JSON escapes it does not need decoded (``\\u0067`` is ``g``, ``\\/`` is ``/``): what
    a reader of its strings sees, for screens to search. Escapes of quotes, backslashes, control characters
    and surrogates stay as they are, so the view of JSON text is still JSON text with the same value."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(_decode_one, text)


def readable(kind: str, text: str) -> str:
    """A segment's text as a model reads it: JSON-text kinds through ``decoded_view``, others as they are
    (for screens that judge meaning, such as Llama Guard and the injection classifier)."""
    return decoded_view(text) if kind in JSON_KINDS else text


def _decode_one(m: re.Match[str]) -> str:
    esc = m.group()
    if esc == "\\/":
        return "/"
    if len(esc) == 6:
        c = chr(int(esc[2:], 16))
        if c not in _KEEP and not "\ud800" <= c <= "\udfff":
            return c
    return esc


def map_json(
    obj: Any,
    fn: Callable[[str], str],
    keys: bool = True,
    numbers: bool = False,
    depth: int = 0,
) -> Any:
    """``fn`` applied to every string value, to every key (``keys``) and to every number's spelling
    (``numbers``; a number ``fn`` changes becomes a string)."""
    if depth > _MAX_DEPTH:
        raise ValueError("JSON nested too deeply")
    if type(obj) is JsonNumber:
        if not numbers:
            return obj
        new = fn(str(obj))
        return obj if new == obj else new
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, list):
        return [map_json(v, fn, keys, numbers, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {(fn(k) if keys else k): map_json(v, fn, keys, numbers, depth + 1) for k, v in obj.items()}
    return obj


def dump(obj: Any) -> str:
    """``obj`` (as ``parse`` or ``map_json`` made it) as JSON text, escapes decoded where JSON allows."""
    out: list[str] = []
    _dump(obj, out, 0)
    return "".join(out)


def _dump(obj: Any, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("JSON nested too deeply")
    if type(obj) is JsonNumber:
        out.append(str(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (k, v) in enumerate(obj.items()):
            if i:
                out.append(", ")
            out.append(_string(k))
            out.append(": ")
            _dump(v, out, depth + 1)
        out.append("}")
    elif isinstance(obj, list):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(", ")
            _dump(v, out, depth + 1)
        out.append("]")
    elif isinstance(obj, str):
        out.append(_string(obj))
    else:
        out.append(json.dumps(obj, ensure_ascii=False))


def _string(value: str) -> str:
    """A JSON string; a lone surrogate (half of a pair, which UTF-8 cannot carry) stays an escape."""
    out = json.dumps(value, ensure_ascii=False)
    if any("\ud800" <= c <= "\udfff" for c in out):
        out = "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in out)
    return out
