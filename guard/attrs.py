"""Attrs: the attribute bag a policy decision reads (``r.sub.ou``, ``r.env.hour``).

Values live in the instance ``__dict__`` so that attribute access is native Python (fast in compiled rules)
and is also what casbin's evaluator (simpleeval: ``getattr``) expects, so both engines see the very same
objects. A data type with no imports of Guard's own: the Principal (guard.identity) builds its policy view
with it, and guard.policy.attributes re-exports it with the attribute contract.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Attrs:
    """A read-only-by-convention attribute bag built from a mapping (nested mappings become Attrs)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        if not data:
            return
        d = self.__dict__
        d.update(data)
        for k, v in d.items():
            t = type(v)
            if t is str or t is list or t is bool or t is int or t is float or v is None or t is Attrs:
                continue  # the common cases, without the slow ABC check below
            if isinstance(v, Mapping):
                d[k] = Attrs(v)

    def __getitem__(self, key: str) -> Any:
        return self.__dict__[key]

    def __contains__(self, key: object) -> bool:
        return key in self.__dict__

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __len__(self) -> int:
        return len(self.__dict__)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Attrs):
            return self.__dict__ == other.__dict__
        return NotImplemented

    def __repr__(self) -> str:
        return f"Attrs({self.__dict__!r})"
