"""Lenient readers of JSON values the wire modules share (a list, a dict, an int, tool-call arguments)."""

from __future__ import annotations

from typing import Any


def _list(v: Any) -> list[Any]:
    """``v`` when it is a JSON array, else empty: untrusted bodies may put any type anywhere."""
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _tool_args(tc: Any) -> Any:
    return _dict(_dict(tc).get("function")).get("arguments")


def _int(v: Any) -> int:
    """A token count from an untrusted body: non-negative int, 0 when it is not a finite number."""
    if type(v) is int:  # the usual case, first
        return v if v > 0 else 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        return 0
    return max(int(v), 0)


def _index(v: Any, default: int) -> Any:
    return v if isinstance(v, (int, str)) and not isinstance(v, bool) else default
