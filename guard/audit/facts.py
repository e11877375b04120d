"""The searchable facts of an audit event: who, which model and upstream, the verdict and why.

Shared by the console's index (guard/console/index.py) and export filters (guard/audit/export.py), so a
search in the console and an export or evidence pack with the same filters select the same events.
"""

from __future__ import annotations

from typing import Any

VERDICTS = ("allowed", "denied", "blocked")


def verdict(e: dict[str, Any]) -> str:
    """allowed | denied (by a policy rule, or refused before policy) | blocked (by a screen); '' for
    events that are not exchanges."""
    t = e.get("type", "")
    if t == "exchange.denied":
        stage = (e.get("denial") or {}).get("stage", "")
        return "blocked" if stage == "screen" else "denied"
    if t.startswith("exchange."):
        return "allowed"
    return ""


def rule(e: dict[str, Any]) -> str:
    """The policy rule that decided (content stage first: it is the later decision)."""
    dec = e.get("decisions") or {}
    if not isinstance(dec, dict):
        return ""
    for stage in ("content", "access"):
        d = dec.get(stage)
        if isinstance(d, dict) and d.get("rule"):
            return str(d["rule"])
    return ""


def blocked_screens(e: dict[str, Any]) -> list[str]:
    return sorted({str(s.get("name", "")) for s in _screens(e) if s.get("blocked")})


def findings(e: dict[str, Any]) -> list[str]:
    """Finding types the screens reported: entity types (PII) and categories (e.g. Llama Guard S1)."""
    out: set[str] = set()
    for s in _screens(e):
        ents = s.get("entities")
        if isinstance(ents, dict):
            out.update(str(k) for k in ents)
        cats = s.get("categories")
        if isinstance(cats, list):
            out.update(str(c) for c in cats)
    return sorted(out)


def _screens(e: dict[str, Any]) -> list[dict[str, Any]]:
    s = e.get("screens")
    return [x for x in s if isinstance(x, dict)] if isinstance(s, list) else []


def principal_names(e: dict[str, Any]) -> list[str]:
    p = e.get("principal") or {}
    if not isinstance(p, dict):
        return []
    return [str(p[k]) for k in ("cn", "subject", "spiffe_id", "fingerprint") if p.get(k)]


def groups(e: dict[str, Any]) -> list[str]:
    p = e.get("principal") or {}
    ou = p.get("ou") if isinstance(p, dict) else None
    return [str(g) for g in ou] if isinstance(ou, list) else []


def principal_label(e: dict[str, Any]) -> str:
    """One short name for a principal: CN, else SPIFFE ID, else subject."""
    p = e.get("principal") or {}
    if not isinstance(p, dict):
        return ""
    return str(p.get("cn") or p.get("spiffe_id") or p.get("subject") or "")
