"""What every audit event has: schema version and types, ids (UUIDv7), timestamps, ``new_event``, and
``plain`` (client strings made encodable). guard.audit.event builds the events from these."""

from __future__ import annotations

import os
import time
from typing import Any

from guard.audit.capture import CAPTURE_LEVELS as CAPTURE_LEVELS
from guard.audit.capture import ContentCapture as ContentCapture
from guard.audit.capture import _hmac_key as _hmac_key
from guard.audit.capture import _hmac_sha256 as _hmac_sha256

SCHEMA_VERSION = "1.0"
EVENT_TYPES = (
    "exchange.started",
    "exchange.completed",
    "exchange.denied",
    "policy.reloaded",
    "policy.reload_failed",
    "config.loaded",
    "guard.started",
    "guard.stopped",
    "audit.checkpoint",
    "config.reload",
    "console.view",
    "console.export",
)


def uuid7(ns: int | None = None) -> str:
    """RFC 9562 UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits (time-ordered ids)."""
    t = f"{((time.time_ns() if ns is None else ns) // 1_000_000) & 0xFFFFFFFFFFFF:012x}"
    r = os.urandom(10).hex()  # 80 random bits; 74 are kept: rand_a (12), rand_b (62: variant 10 + 2 + 60)
    return f"{t[:8]}-{t[8:]}-7{r[1:4]}-{_VARIANT[r[4]]}{r[5:8]}-{r[8:]}"


_VARIANT = {h: "89ab"[int(h, 16) & 3] for h in "0123456789abcdef"}


_second: list[Any] = [-1, ""]  # the last whole second formatted: one strftime per second, not per event


def utc_now(ns: int | None = None) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2026-11-25T01:20:27.123456Z."""
    s, us = divmod((time.time_ns() if ns is None else ns) // 1000, 1_000_000)
    cached = _second
    if cached[0] != s:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
        cached[0] = s
    return f"{cached[1]}.{us:06d}Z"


def new_event(type: str, **fields: Any) -> dict[str, Any]:
    """A bare event of ``type``; ``None`` fields are dropped so the schema sees absent, not null."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {type!r}")
    ns = time.time_ns()
    ev: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "id": uuid7(ns), "time": utc_now(ns), "type": type}
    ev.update({k: v for k, v in fields.items() if v is not None})
    return ev


def plain(o: Any) -> Any:
    """Make arbitrary client-supplied strings encodable (lone surrogates), containers and scalars plain
    (exact built-in types, subclasses become their base value), anything else its str()."""
    if isinstance(o, str):
        return o.encode("utf-8", "replace").decode("utf-8")
    if isinstance(o, dict):
        return {str(k): plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [plain(v) for v in o]
    if o is None or type(o) is bool or type(o) is int or type(o) is float:
        return o
    if isinstance(o, bool):
        return bool(o)
    if isinstance(o, int):
        return int(o)  # IntEnum and the like: their value, as the JSON encoder writes them
    if isinstance(o, float):
        return float(o)
    return str(o)
