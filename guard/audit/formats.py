"""SIEM formats of an audit event: native JSON, OCSF API Activity (6003), CEF, ECS, and CSV rows.

The field mappings are documented in audit/MAPPINGS.md; keep the two in step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from guard.audit.event import SCHEMA_VERSION

PRODUCT, VENDOR, VERSION = "Guard", "Guard", "0.1.0"
OCSF_VERSION = "1.5.0"
_OCSF_ACTIVITY = {"chat": 1, "completion": 1, "embeddings": 1, "models": 2}  # Create | Read; else 99 Other
_CEF_SEVERITY = {
    "exchange.denied": 7,
    "policy.reload_failed": 6,
    "exchange.completed": 3,
    "exchange.started": 3,
    "audit.checkpoint": 1,
}


def epoch_ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def effect(e: dict[str, Any]) -> str:
    """allow | deny for exchanges; '' for other events."""
    if e.get("type") == "exchange.denied":
        return "deny"
    if e.get("type", "").startswith("exchange."):
        return "allow"
    return ""


def to_json(e: dict[str, Any]) -> dict[str, Any]:
    return e


# --- OCSF ----------------------------------------------------------------------------------------------


def to_ocsf(e: dict[str, Any]) -> dict[str, Any]:
    """OCSF API Activity (category 6, class 6003) with the ai_operation profile."""
    op = e.get("operation") or e.get("type", "")
    activity = _OCSF_ACTIVITY.get(op, 99) if e.get("type", "").startswith("exchange.") else 99
    p = e.get("principal") or {}
    outcome = e.get("outcome") or {}
    denied = e.get("type") == "exchange.denied"
    status = outcome.get("status")
    failed = denied or (isinstance(status, int) and status >= 400)
    out: dict[str, Any] = {
        "category_uid": 6,
        "category_name": "Application Activity",
        "class_uid": 6003,
        "class_name": "API Activity",
        "activity_id": activity,
        "type_uid": 6003 * 100 + activity,
        "severity_id": 3 if denied else 1,
        "time": epoch_ms(e["time"]),
        "status_id": 2 if failed else 1,
        "status": "Failure" if failed else "Success",
        "message": e.get("type", ""),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": e.get("id"),
            "correlation_uid": e.get("request_id"),
            "event_code": e.get("type"),
            "profiles": ["ai_operation"],
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": VERSION},
            "log_name": e.get("chain"),
            "sequence": e.get("seq"),
        },
        "actor": {
            "user": {
                "uid": p.get("fingerprint") or p.get("spiffe_id") or "anonymous",
                "name": p.get("cn", ""),
                "groups": [{"name": g} for g in p.get("ou", [])],
            },
            "app_name": PRODUCT,
        },
        "api": {
            "operation": op,
            "service": {"name": e.get("api") or PRODUCT},
            "request": {"uid": e.get("request_id", "")},
        },
        "src_endpoint": {"ip": e.get("client_ip")} if e.get("client_ip") else {"name": "guard"},
        "cloud": {"provider": e.get("upstream") or "self-hosted"},
        "unmapped": {
            "guard": {
                k: e[k]
                for k in (
                    "decisions",
                    "screens",
                    "latency_ms",
                    "hash",
                    "prev",
                    "sig",
                    "key_id",
                    "checkpoint",
                    "policy",
                    "config",
                    "guard",
                    "denial",
                )
                if k in e
            }
        },
    }
    if status is not None:
        out["http_response"] = {"code": status}
    if e.get("trace_id"):
        out["metadata"]["trace_uid"] = e["trace_id"]
    if e.get("model"):
        out["ai_model"] = {"name": e["model"], "ai_provider": e.get("upstream") or ""}
        usage = e.get("usage") or {}
        out["message_context"] = {
            "uid": e.get("request_id"),
            "ai_role": "assistant",
            **{k: v for k, v in usage.items() if k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        }
    return _drop_none(out)


def _drop_none(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _drop_none(v) for k, v in o.items() if v is not None}
    return o


# --- CEF -----------------------------------------------------------------------------------------------


def cef_header(s: Any) -> str:
    """Header fields: backslash and pipe escaped; newlines are not allowed there, so they become spaces."""
    return str(s).replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def cef_value(s: Any) -> str:
    """Extension values: backslash, equals escaped; CR and LF written as \\r and \\n."""
    return str(s).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def to_cef(e: dict[str, Any]) -> str:
    p = e.get("principal") or {}
    outcome = e.get("outcome") or {}
    dec = e.get("decisions") or {}
    rule = (dec.get("content") or dec.get("access") or {}).get("rule", "")
    ext: list[tuple[str, Any]] = [
        ("rt", epoch_ms(e["time"])),
        ("externalId", e.get("id")),
        ("suser", p.get("cn")),
        ("suid", p.get("fingerprint")),
        ("src", e.get("client_ip")),
        ("requestMethod", e.get("operation")),
        ("app", e.get("api")),
        ("act", effect(e)),
        ("outcome", outcome.get("status")),
    ]
    custom = [
        ("cs1", "model", e.get("model")),
        ("cs2", "rule", rule),
        ("cs3", "request_id", e.get("request_id")),
        ("cs4", "chain", e.get("chain")),
        ("cs5", "hash", e.get("hash")),
        ("cs6", "upstream", e.get("upstream")),
        ("cn1", "seq", e.get("seq")),
        ("cn2", "total_tokens", (e.get("usage") or {}).get("total_tokens")),
    ]
    for key, label, value in custom:
        if value not in (None, ""):
            ext += [(key + "Label", label), (key, value)]
    screens = [s["name"] for s in e.get("screens") or [] if s.get("blocked")]
    if screens:
        ext.append(("reason", "blocked by " + ",".join(screens)))
    body = " ".join(f"{k}={cef_value(v)}" for k, v in ext if v not in (None, ""))
    failed_reload = (e.get("reload") or {}).get("result") == "failed"
    sev = 6 if failed_reload else _CEF_SEVERITY.get(e.get("type", ""), 3)
    head = [PRODUCT, PRODUCT, VERSION, e.get("type", ""), e.get("type", ""), sev]
    return "CEF:0|" + "|".join(cef_header(h) for h in head) + "|" + body


# --- ECS -----------------------------------------------------------------------------------------------


def to_ecs(e: dict[str, Any]) -> dict[str, Any]:
    p = e.get("principal") or {}
    outcome = e.get("outcome") or {}
    eff = effect(e)
    ecs: dict[str, Any] = {
        "@timestamp": e["time"],
        "ecs": {"version": "8.11.0"},
        "event": {
            "id": e.get("id"),
            "kind": "event",
            "category": ["web"],
            "type": ["access"],
            "action": e.get("type"),
            "dataset": "guard.audit",
            "module": "guard",
            "sequence": e.get("seq"),
            "outcome": ("failure" if eff == "deny" or (outcome.get("status") or 0) >= 400 else "success"),
        },
        "user": {"name": p.get("cn"), "id": p.get("fingerprint"), "group": {"name": p.get("ou")}},
        "source": {"ip": e.get("client_ip")},
        "http": {"response": {"status_code": outcome.get("status")}} if outcome.get("status") else None,
        "trace": {"id": e.get("trace_id")} if e.get("trace_id") else None,
        "transaction": {"id": e.get("request_id")} if e.get("request_id") else None,
        "gen_ai": {
            "request": {"model": e.get("model")},
            "usage": e.get("usage"),
            "operation": {"name": e.get("operation")},
            "system": e.get("api"),
        }
        if e.get("model")
        else None,
        "rule": {"name": ((e.get("decisions") or {}).get("access") or {}).get("rule")},
        "guard": {
            k: e[k]
            for k in (
                "decisions",
                "screens",
                "latency_ms",
                "chain",
                "seq",
                "hash",
                "prev",
                "sig",
                "key_id",
                "checkpoint",
                "policy",
                "config",
                "upstream",
                "denial",
            )
            if k in e
        },
        "labels": {"schema_version": e.get("schema_version", SCHEMA_VERSION)},
    }
    return _drop_none(ecs)


# --- CSV (export only) --------------------------------------------------------------------------------

CSV_COLUMNS = (
    "time",
    "id",
    "type",
    "chain",
    "seq",
    "request_id",
    "subject",
    "cn",
    "client_ip",
    "api",
    "operation",
    "model",
    "upstream",
    "decision",
    "rule",
    "status",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "hash",
)


# A cell a spreadsheet would run as a formula (OWASP "CSV Injection"): it starts with = + - @, a tab or a
# carriage return, also after leading spaces or newlines, or with the full-width = + - @ some input methods
# turn into formulas. Such a cell gets a leading single quote, so it is shown as the text it is.
_FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def csv_cell(v: Any) -> Any:
    """``=HYPERLINK(...)`` -> ``'=HYPERLINK(...)``; every other value unchanged."""
    if isinstance(v, str) and v and (v[0] in _FORMULA_START or v.lstrip(" \n")[:1] in _FORMULA_START):
        return "'" + v
    return v


def to_csv_row(e: dict[str, Any]) -> list[Any]:
    p = e.get("principal") or {}
    o = e.get("outcome") or {}
    u = e.get("usage") or {}
    dec = e.get("decisions") or {}
    rule = (dec.get("content") or dec.get("access") or {}).get("rule", "")
    vals = {
        "subject": p.get("subject"),
        "cn": p.get("cn"),
        "decision": effect(e),
        "rule": rule,
        "status": o.get("status"),
        "finish_reason": o.get("finish_reason"),
        "prompt_tokens": u.get("prompt_tokens"),
        "completion_tokens": u.get("completion_tokens"),
    }
    return [csv_cell(vals[c] if c in vals else e.get(c)) for c in CSV_COLUMNS]


FORMATTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "json": to_json,
    "ocsf": to_ocsf,
    "cef": to_cef,
    "ecs": to_ecs,
}


def as_text(formatted: Any) -> str:
    """One line of text for syslog and files."""
    return formatted if isinstance(formatted, str) else json.dumps(formatted, separators=(",", ":"), ensure_ascii=False)
