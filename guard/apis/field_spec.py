"""The vocabulary of the field tables (guard.apis.fields): ``F`` (a known field and what it does to the
model), ``P`` (a parameter that does not reach the context), ``T`` (a text field) and ``UNSCREENABLE``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
