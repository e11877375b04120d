"""Strict JSON for request bodies: one reading that every parser downstream agrees with.

Model servers do not parse JSON alike. Go's encoding/json (Ollama, many gateways) matches object keys to
fields ignoring case (with Unicode simple folding: ``"meſſages"`` is ``messages``) and keeps the last of
two equal keys; other parsers keep the first. A body Guard read one way could reach the model read another
way. So a request body is refused unless every reader must see the same thing (RFC 8259, plus):

- UTF-8 only (no BOM, no UTF-16/32 that Python's ``json.loads(bytes)`` would guess);
- no object, at any depth, with two equal keys, or two keys equal ignoring case (``str.casefold``, which
  folds at least what Go folds);
- no ``NaN`` / ``Infinity`` / ``-Infinity``; no number that overflows a double (``1e999``);
- no integer outside the signed 64-bit range: Go and most servers read integer fields as int64 (or the
  double nearest, for untyped values); beyond it parsers overflow, clamp or round differently. Integers
  between 2**53 and 2**63 are kept exactly as written (Guard forwards the same digits);
- no lone UTF-16 surrogate escape (``"\\ud800"``): Python keeps it, Go replaces it with U+FFFD, others fail.

The fast path is ``json.loads`` with hooks that raise; only a refused body is read a second time, with
marking hooks, to find the JSON path of what was refused (``$.messages[0].content``) for the error.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class StrictJSONError(ValueError):
    """Why a body was refused: ``code`` (invalid_json | duplicate_key | ambiguous_key), ``path`` (JSON path)."""

    def __init__(self, code: str, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


_Obj = dict[str, Any]


class _Bad(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message


def _pairs(
    pairs: list[tuple[str, Any]],
    dict: Any = dict,
    len: Any = len,
    set: Any = set,
    map: Any = map,
    fold: Any = str.casefold,
) -> dict[str, Any]:  # builtins bound as defaults: called once per object
    d: _Obj = dict(pairs)  # (``dict`` here is the parameter; _Obj names the builtin type)
    # Fewer case-folded keys than pairs: two keys equal, or equal ignoring case (_locate says which).
    if len(pairs) > 1 and len(set(map(fold, d))) != len(pairs):
        raise _Bad("duplicate_key", "duplicate key")
    return d


def _int(s: str) -> int:
    if len(s) > 18 and not INT_MIN <= int(s) <= INT_MAX:
        raise _Bad("invalid_json", "integer outside the signed 64-bit range")
    return int(s)


def _float(s: str) -> float:
    f = float(s)
    if f - f != 0:  # inf - inf is nan
        raise _Bad("invalid_json", "number overflows a double")
    return f


def _constant(s: str) -> Any:
    raise _Bad("invalid_json", f"{s} is not JSON")


try:  # the same hook in C (guard/apis/_strictjson.c): a Python call per JSON object was most of the cost
    from guard.apis._strictjson import Duplicate as _Duplicate
    from guard.apis._strictjson import pairs as _pairs_c
except ImportError:  # built without a C compiler
    _pairs_c, _Duplicate = _pairs, _Bad

_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_c, parse_float=_float, parse_int=_int, parse_constant=_constant)


def loads(raw: bytes) -> Any:
    """Parse a request body strictly; raise StrictJSONError (with a JSON path) when refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StrictJSONError("invalid_json", f"request body is not UTF-8 (byte {e.start})") from None
    try:
        obj = _DECODER.decode(text)
    except _Bad as b:
        raise _locate(text, b) from None
    except _Duplicate:
        raise _locate(text, _Bad("duplicate_key", "duplicate key")) from None
    except RecursionError:
        raise StrictJSONError("invalid_json", "request body is nested deeper than JSON can be parsed") from None
    except ValueError as e:  # json.JSONDecodeError, int beyond Python's digit limit
        raise StrictJSONError("invalid_json", f"request body is not valid JSON ({_short(e)})") from None
    if _SURROGATE_ESCAPE.search(raw):
        path = _find(obj, _lone_surrogate, keys=True)
        if path is not None:
            raise StrictJSONError("invalid_json", "string contains a lone UTF-16 surrogate", path)
    return obj


def _short(e: ValueError) -> str:
    return e.msg if isinstance(e, json.JSONDecodeError) else str(e).split(";")[0][:80]


def _lone_surrogate(v: Any) -> bool:
    if type(v) is not str:
        return False
    try:
        v.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


# --- locating what was refused (refused bodies only) -----------------------------------------------------


class _Mark:
    def __init__(self, code: str, message: str, key: str = "") -> None:
        self.code, self.message, self.key = code, message, key


class _MarkedDict(dict):  # type: ignore[type-arg]
    mark: _Mark


def _marking_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, str] = {}
    for k, _ in pairs:
        f = k.casefold()
        if f in seen:
            d = _MarkedDict(pairs)
            if seen[f] == k:
                d.mark = _Mark("duplicate_key", f"duplicate key {k!r}", k)
            else:
                d.mark = _Mark("ambiguous_key", f"keys {seen[f]!r} and {k!r} are equal ignoring case", k)
            return d
        seen[f] = k
    return dict(pairs)


def _marking_float(s: str) -> Any:
    f = float(s)
    return _Mark("invalid_json", "number overflows a double") if f - f != 0 else f


def _marking_int(s: str) -> Any:
    i = int(s)
    return i if INT_MIN <= i <= INT_MAX else _Mark("invalid_json", "integer outside the signed 64-bit range")


def _locate(text: str, b: _Bad) -> StrictJSONError:
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_marking_pairs,
            parse_float=_marking_float,
            parse_int=_marking_int,
            parse_constant=lambda s: _Mark("invalid_json", f"{s} is not JSON"),
        )
    except (ValueError, RecursionError):
        return StrictJSONError(b.code, b.message)
    found: list[_Mark] = []

    def marked(v: Any) -> bool:
        m = v if isinstance(v, _Mark) else getattr(v, "mark", None) if isinstance(v, _MarkedDict) else None
        if m is not None:
            found.append(m)
        return m is not None

    path = _find(obj, marked)
    if path is None or not found:
        return StrictJSONError(b.code, b.message)
    m = found[0]
    return StrictJSONError(m.code, m.message, path + (_member(m.key) if m.key else ""))


def _member(key: str) -> str:
    return f".{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"[{json.dumps(key, ensure_ascii=False)}]"


def _find(obj: Any, pred: Any, keys: bool = False) -> str | None:
    """JSON path of the first value (or key, with ``keys``) for which ``pred`` is true, depth first."""
    stack: list[tuple[Any, str]] = [(obj, "$")]
    while stack:
        v, p = stack.pop()
        if pred(v):
            return p
        if isinstance(v, dict):
            items = list(v.items())
            for k, x in reversed(items):
                if keys and pred(k):
                    return p + "[key]"
                stack.append((x, p + _member(k)))
        elif isinstance(v, list):
            stack.extend((x, f"{p}[{i}]") for i, x in reversed(list(enumerate(v))))
    return None


def dumps(obj: Any) -> bytes:
    """The body Guard forwards: serialised from the parsed, judged object (UTF-8, compact; orjson: RFC 8259,
    no NaN, integers within 64 bits, which ``loads`` already guarantees). About 15x faster than the standard
    encoder, which matters for large bodies: the encoder holds the GIL for the whole body."""
    return orjson.dumps(obj)


def depth_ok(obj: Any, limit: int, raw: bytes = b"") -> bool:
    """Whether ``obj`` (read from ``raw``) nests at most ``limit`` deep."""
    if raw and raw.count(b"[") + raw.count(b"{") < limit:
        return True  # fewer brackets than the limit: it cannot nest that deep
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return True


def too_deep(limit: int) -> StrictJSONError:
    return StrictJSONError("invalid_json", f"JSON nested deeper than {limit}")
