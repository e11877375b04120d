"""The four objects every decision sees (sub, obj, act, env) and the attribute names policies may read.

Rules read attributes with dots (``r.sub.ou``, ``r.env.hour``) of ``Attrs`` objects (guard.attrs,
re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from guard.attrs import Attrs
from guard.identity import Principal

__all__ = [
    "ACCESS_ENV_ATTRS",
    "ACTS",
    "CONTENT_ENV_ONLY",
    "ENV_ATTRS",
    "KNOWN",
    "OBJ_ATTRS",
    "STAGES",
    "SUB_ATTRS",
    "WEEKDAYS",
    "Attrs",
    "access_env",
    "content_env",
    "freeze",
    "make_env",
    "plain",
    "principal",
    "resource",
    "wrap",
]

# The attribute contract: names a rule may read under each object (checked by `guard policy check`).
SUB_ATTRS = frozenset(
    {
        "cn",
        "o",
        "ou",
        "san_dns",
        "san_uri",
        "san_email",
        "spiffe_id",
        "serial",
        "fingerprint",
        "subject",
        "not_after",
        "source",
    }
)
OBJ_ATTRS = frozenset({"model", "upstream", "api", "wire", "external", "path"})
ACTS = ("chat", "completion", "embeddings", "models")
ACCESS_ENV_ATTRS = frozenset({"time", "hour", "weekday", "client_ip", "body_bytes", "stream"})
CONTENT_ENV_ONLY = frozenset({"pii", "safety", "safety_score"})
ENV_ATTRS = ACCESS_ENV_ATTRS | CONTENT_ENV_ONLY
KNOWN = {"sub": SUB_ATTRS, "obj": OBJ_ATTRS, "env": ENV_ATTRS}
STAGES = ("access", "content", "console")  # console: who may open the compliance console
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def principal(**given: Any) -> dict[str, Any]:
    """Every principal attribute, with ``given`` over the empty defaults (as a certificate lacking a
    field yields); policy tests and explain use it so a case lists only the attributes it is about."""
    return {**Principal(source="tls").attrs(), **given}


def resource(**given: Any) -> dict[str, Any]:
    """Every obj attribute, with ``given`` over the defaults."""
    return {"model": "", "upstream": "", "api": "openai", "wire": "openai", "external": False, "path": "", **given}


def wrap(data: Mapping[str, Any] | Attrs | None) -> Attrs:
    return data if isinstance(data, Attrs) else Attrs(data)


def plain(value: Any) -> Any:
    """Attrs back to plain JSON-able data (for explain output and audit)."""
    if isinstance(value, Attrs):
        return {k: plain(v) for k, v in value.__dict__.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def freeze(value: Any) -> Any:
    """A hashable stand-in for ``value`` that is equal only for values no rule can tell apart.

    Types are part of the key: ``1``, ``1.0`` and ``True`` compare equal in Python but can behave
    differently inside an expression.
    """
    t = type(value)
    if t is str:
        return value
    if t is list or t is tuple:
        for v in value:
            if type(v) is not str:
                return (t, tuple([freeze(v) for v in value]))
        return (t, tuple(value))
    if t is Attrs:
        return (t, tuple(sorted((k, freeze(v)) for k, v in value.__dict__.items())))
    if isinstance(value, (set, frozenset)):
        return (t, frozenset(freeze(v) for v in value))
    if isinstance(value, Mapping):
        return (dict, tuple(sorted((k, freeze(v)) for k, v in value.items())))
    hash(value)  # unhashable odd types raise here, and the caller evaluates without the cache
    return (t, value)


def _parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        t = value
    else:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def make_env(time: str | datetime | None = None, **extra: Any) -> dict[str, Any]:
    """The env object for a decision: ``time`` (RFC 3339, UTC), and ``hour``/``weekday`` derived from it.

    ``hour`` is 0-23 and ``weekday`` is ``mon``..``sun``, both in UTC. Explicit values in ``extra`` win,
    so a test can pin ``hour`` without a ``time``.
    """
    t = _parse_time(time) if time is not None else datetime.now(UTC)
    env: dict[str, Any] = {
        "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hour": t.hour,
        "weekday": WEEKDAYS[t.weekday()],
        "client_ip": "",
        "body_bytes": 0,
        "stream": False,
    }
    env.update(extra)
    return env


def content_env(
    env: Mapping[str, Any],
    pii: list[str] | None = None,
    safety: list[str] | None = None,
    safety_score: float | None = None,
) -> dict[str, Any]:
    """The access env plus the prompt screens' labels, as the content decision sees it."""
    out = dict(env)
    out["pii"] = list(pii if pii is not None else env.get("pii", []))
    out["safety"] = list(safety if safety is not None else env.get("safety", []))
    out["safety_score"] = float(safety_score if safety_score is not None else env.get("safety_score", 0.0))
    return out


def access_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """The env as the access decision sees it: without the content-only labels."""
    return {k: v for k, v in env.items() if k not in CONTENT_ENV_ONLY}
