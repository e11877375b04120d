"""AuditEvent: the versioned record of what Guard did, built as a plain dict the journal seals.

The pipeline calls the builders below; they never see certificates, headers or secrets, and screens
contribute only their ``Verdict.to_audit()`` summaries (types and counts, never values).
Schema: ``audit/event.schema.json`` (keep ``SCHEMA_VERSION`` in step with it).
"""

from __future__ import annotations

import os
import time
from typing import Any

from guard.audit.capture import CAPTURE_LEVELS as CAPTURE_LEVELS
from guard.audit.capture import ContentCapture as ContentCapture
from guard.audit.capture import _hmac_key as _hmac_key
from guard.audit.capture import _hmac_sha256 as _hmac_sha256
from guard.policy.decision import Decision

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
_PRINCIPAL_KEYS = ("subject", "cn", "ou", "spiffe_id", "fingerprint")


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


def principal_summary(principal: Any) -> dict[str, Any] | None:
    """Principal fields the journal keeps (never the certificate itself). Kept on the Principal (they are
    cached per certificate), so every event of a client shares one dict: nothing may mutate it."""
    if principal is None:
        return None
    cache = getattr(principal, "__dict__", None)
    out = cache.get("_audit_summary") if cache is not None else None
    if out is None:
        attrs = principal.attrs() if hasattr(principal, "attrs") else dict(principal)
        out = {k: attrs.get(k, "" if k != "ou" else []) for k in _PRINCIPAL_KEYS}
        out["ou"] = list(out["ou"] or [])
        if cache is not None and hasattr(principal, "attrs"):
            cache["_audit_summary"] = out
    return out


def decision_summary(decision: Any) -> dict[str, Any] | None:
    """Accepts a policy Decision object or a dict with effect, rule, policy_version (and optional extras)."""
    if decision is None:
        return None
    if type(decision) is Decision:
        return decision.audit_summary()  # has rule and policy_version; shared, see Decision.audit_summary
    if isinstance(decision, dict):
        d = dict(decision)
    elif hasattr(decision, "to_audit"):
        d = decision.to_audit()
    else:
        d = {
            k: getattr(decision, k)
            for k in ("effect", "rule", "policy_version", "reason", "profile")
            if getattr(decision, k, None) is not None
        }
    d.setdefault("rule", "")
    d.setdefault("policy_version", "")
    return d


# An exchange's record is taken in two steps: its facts, a plain tuple read off the Exchange on the request
# path (``*_facts``), and the event, assembled from them where the chain is sealed (``from_facts``: in the
# sealer process, guard.audit.sealer, or by the thread journal). Ids, timestamps, rounding and the event's
# dicts then cost the worker's event loop nothing: built there, they take ~45 us of a worker's ~180 us per
# request under load (tests/bench/run.py auditcost). The facts are a snapshot: a journal encodes
# or assembles them before ``append_facts`` returns, so the pipeline may go on changing the Exchange.
# Layout: (type, time_ns, head, decisions, screens, stage_ms, extra_latency_ms, content, per-type tuple).


def _head(ex: Any) -> tuple[Any, ...]:
    return (
        ex.request_id,
        ex.trace_id,
        principal_summary(ex.principal),
        ex.client_ip,
        ex.api,
        ex.operation,
        ex.model,
        ex.upstream,
        bool(ex.stream),
    )


QUOTA = "guard.quota.audit"  # Exchange.context: the quota decision (guard.quota.hook.AUDIT)


def decisions_of(ex: Any, shadow: dict[str, Any] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if ex.access is not None:
        d["access"] = decision_summary(ex.access)
    if ex.content is not None:
        d["content"] = decision_summary(ex.content)
    q = (getattr(ex, "context", None) or {}).get(QUOTA)
    if q is not None:
        d["quota"] = q
    if shadow:
        d["shadow"] = shadow
    return d


def started_facts(
    ex: Any, content: dict[str, Any] | None = None, shadow: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """Decision made, before anything goes upstream. ``ex`` is a guard.exchange.Exchange; ``content`` is
    ``ContentCapture.record(...)``."""
    return (
        "exchange.started",
        time.time_ns(),
        _head(ex),
        decisions_of(ex, shadow),
        [v.to_audit() for v in ex.verdicts if v.direction == "prompt"],
        ex.stage_ms,
        None,
        content,
        (ex.body_bytes,),
    )


def completed_facts(
    ex: Any,
    status: int,
    finish_reason: str | None = None,
    bytes_out: int = 0,
    usage: dict[str, int] | None = None,
    content: dict[str, Any] | None = None,
    latency_ms: dict[str, float] | None = None,
    error: str | None = None,
) -> tuple[Any, ...]:
    return (
        "exchange.completed",
        time.time_ns(),
        _head(ex),
        decisions_of(ex),
        [v.to_audit() for v in ex.verdicts],
        ex.stage_ms,
        latency_ms,
        content,
        (int(status), finish_reason, int(bytes_out), error, usage),
    )


def denied_facts(
    ex: Any,
    status: int,
    code: str,
    stage: str,
    content: dict[str, Any] | None = None,
    shadow: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """Refused by policy (stage access|content) or by a blocking screen (stage screen) or fail-closed."""
    return (
        "exchange.denied",
        time.time_ns(),
        _head(ex),
        decisions_of(ex, shadow),
        [v.to_audit() for v in ex.verdicts],
        ex.stage_ms,
        None,
        content,
        (int(status), code, stage),
    )


def from_facts(facts: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """The event an exchange's facts stand for (members absent rather than null, as new_event does)."""
    type_, ns, head, decisions, screens, stages, extra, content, more = facts
    if type_ not in _EXCHANGE_TYPES:
        raise ValueError(f"not an exchange event: {type_!r}")
    request_id, trace_id, principal, client_ip, api, operation, model, upstream, stream = head
    ev: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": uuid7(ns),
        "time": utc_now(ns),
        "type": type_,
        "request_id": request_id,
    }
    if trace_id:
        ev["trace_id"] = trace_id
    if principal is not None:
        ev["principal"] = principal
    if client_ip:
        ev["client_ip"] = client_ip
    for k, v in (("api", api), ("operation", operation), ("model", model)):
        if v is not None:
            ev[k] = v
    if upstream:
        ev["upstream"] = upstream
    ev["stream"] = stream
    ev["decisions"] = decisions
    ev["screens"] = screens
    if type_ == "exchange.started":
        ev["request"] = {"bytes": more[0]}
    elif type_ == "exchange.completed":
        status, finish_reason, bytes_out, error, usage = more
        u = _usage(usage)
        if u is not None:
            ev["usage"] = u
        outcome: dict[str, Any] = {"status": status, "bytes": bytes_out}
        if finish_reason:
            outcome["finish_reason"] = finish_reason
        if error:
            outcome["error"] = error
        ev["outcome"] = outcome
    else:
        status, code, stage = more
        ev["outcome"] = {"status": status, "bytes": 0}
        ev["denial"] = {"stage": stage, "code": code}
    st = {k: round(v, 3) for k, v in (stages or {}).items()}
    if extra:
        st.update({k: round(float(v), 3) for k, v in extra.items()})
    ev["latency_ms"] = st
    if content is not None:
        ev["content"] = content
    return ev


_EXCHANGE_TYPES = ("exchange.started", "exchange.completed", "exchange.denied")


def exchange_started(
    ex: Any, capture: ContentCapture | None = None, prompt: str | None = None, shadow: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Decision made, before anything goes upstream. ``ex`` is a guard.exchange.Exchange."""
    content = capture.record(prompt=prompt, memo=getattr(ex, "context", None)) if capture else None
    return from_facts(started_facts(ex, content, shadow))


def exchange_completed(
    ex: Any,
    status: int,
    finish_reason: str | None = None,
    bytes_out: int = 0,
    usage: dict[str, int] | None = None,
    capture: ContentCapture | None = None,
    prompt: str | None = None,
    answer: str | None = None,
    latency_ms: dict[str, float] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    content = capture.record(prompt=prompt, answer=answer, memo=getattr(ex, "context", None)) if capture else None
    return from_facts(completed_facts(ex, status, finish_reason, bytes_out, usage, content, latency_ms, error))


def exchange_denied(
    ex: Any,
    status: int,
    code: str,
    stage: str,
    capture: ContentCapture | None = None,
    prompt: str | None = None,
    shadow: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Refused by policy (stage access|content) or by a blocking screen (stage screen) or fail-closed."""
    content = capture.record(prompt=prompt) if capture else None  # an exchange's only record: nothing to keep
    return from_facts(denied_facts(ex, status, code, stage, content, shadow))


_USAGE_ALIASES = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}


def _usage(u: dict[str, int] | None) -> dict[str, int] | None:
    """Token usage as the schema names it. The API adapters report GenAI names (input_tokens, output_tokens);
    OpenAI-style names (prompt_tokens, completion_tokens, total_tokens) are taken as they are."""
    if not u:
        return None
    out: dict[str, int] = {}
    for k, v in u.items():
        name = _USAGE_ALIASES.get(k, k)
        if name in ("prompt_tokens", "completion_tokens", "total_tokens") and v is not None:
            out.setdefault(name, int(v))
    if "total_tokens" not in out and ("prompt_tokens" in out or "completion_tokens" in out):
        out["total_tokens"] = out.get("prompt_tokens", 0) + out.get("completion_tokens", 0)
    return out or None


def policy_reloaded(
    policy_version: str, rules: int, source: str = "", shadow_version: str | None = None
) -> dict[str, Any]:
    return new_event(
        "policy.reloaded",
        policy={
            "version": policy_version,
            "rules": int(rules),
            "source": source,
            **({"shadow_version": shadow_version} if shadow_version else {}),
        },
    )


def policy_reload_failed(error: str, kept_version: str, source: str = "") -> dict[str, Any]:
    return new_event(
        "policy.reload_failed", policy={"error": error[:2000], "kept_version": kept_version, "source": source}
    )


def config_reload(
    component: str,
    ok: bool,
    version: str,
    files: list[str],
    trigger: str = "",
    reason: str = "",
    file: str = "",
    line: int | None = None,
) -> dict[str, Any]:
    """One part's reload (policy, filters, tls): ``version`` is the one now in force, the new one when ``ok``,
    else the one kept (``kept_version``), with the failing ``file``, ``line`` where it has one, and ``reason``."""
    r: dict[str, Any] = {"component": component, "result": "ok" if ok else "failed", "files": files, "trigger": trigger}
    if ok:
        r["version"] = version
    else:
        r.update(kept_version=version, reason=reason[:2000], file=file)
        if line:
            r["line"] = int(line)
    return new_event("config.reload", reload=r)


def config_loaded(path: str, digest: str, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """``digest``: SHA-256 of the config file; ``summary``: non-secret facts (upstream names, routes...)."""
    return new_event(
        "config.loaded", config={"path": path, "sha256": digest, **({"summary": summary} if summary else {})}
    )


def guard_started(version: str, worker: int = 0, pid: int | None = None) -> dict[str, Any]:
    return new_event("guard.started", guard={"version": version, "worker": worker, "pid": pid or os.getpid()})


def guard_stopped(reason: str = "shutdown", worker: int = 0, pid: int | None = None) -> dict[str, Any]:
    return new_event("guard.stopped", guard={"reason": reason, "worker": worker, "pid": pid or os.getpid()})


def console_access(
    kind: str,
    who: str,
    auth: str,
    path: str,
    status: int = 200,
    fingerprint: str = "",
    query: dict[str, Any] | None = None,
    results: int | None = None,
    formats: list[str] | None = None,
    pack_sha256: str | None = None,
) -> dict[str, Any]:
    """``console.view`` / ``console.export``: who looked at (or exported) what in the compliance console."""
    c: dict[str, Any] = {"who": who, "auth": auth, "path": path, "status": int(status)}
    if fingerprint:
        c["fingerprint"] = fingerprint
    if query:
        c["query"] = plain(query)
    if results is not None:
        c["results"] = int(results)
    if formats:
        c["formats"] = list(formats)
    if pack_sha256:
        c["pack_sha256"] = pack_sha256
    return new_event(kind, console=c)


def checkpoint(
    chain: str,
    seq: int,
    head: str,
    count: int,
    prev_checkpoint: str | None,
    reason: str,
    final: bool = False,
    recovery: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Signed statement: chain ``chain`` holds events 1..``seq``, the last one hashing to ``head``."""
    cp: dict[str, Any] = {
        "seq": seq,
        "head": head,
        "count": count,
        "reason": reason,
        "final": final,
        "prev_checkpoint": prev_checkpoint or "",
    }
    if recovery:
        cp["recovery"] = recovery
    return new_event("audit.checkpoint", checkpoint=cp)


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
