"""AuditEvent: the versioned record of what Guard did, built as a plain dict the journal seals.

The pipeline calls the builders below; they never see certificates, headers or secrets, and screens
contribute only their ``Verdict.to_audit()`` summaries (types and counts, never values).
Schema: ``audit/event.schema.json`` (keep ``SCHEMA_VERSION`` in step with it).
"""

from __future__ import annotations

import time
from typing import Any

from guard.audit.capture import CAPTURE_LEVELS as CAPTURE_LEVELS
from guard.audit.capture import ContentCapture as ContentCapture
from guard.audit.capture import _hmac_key as _hmac_key
from guard.audit.capture import _hmac_sha256 as _hmac_sha256
from guard.audit.event_base import EVENT_TYPES as EVENT_TYPES
from guard.audit.event_base import SCHEMA_VERSION as SCHEMA_VERSION
from guard.audit.event_base import new_event as new_event
from guard.audit.event_base import plain as plain
from guard.audit.event_base import utc_now as utc_now
from guard.audit.event_base import uuid7 as uuid7
from guard.audit.ops_events import checkpoint as checkpoint
from guard.audit.ops_events import config_loaded as config_loaded
from guard.audit.ops_events import config_reload as config_reload
from guard.audit.ops_events import console_access as console_access
from guard.audit.ops_events import guard_started as guard_started
from guard.audit.ops_events import guard_stopped as guard_stopped
from guard.audit.ops_events import policy_reload_failed as policy_reload_failed
from guard.audit.ops_events import policy_reloaded as policy_reloaded
from guard.policy.decision import Decision

_PRINCIPAL_KEYS = ("subject", "cn", "ou", "spiffe_id", "fingerprint")


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
