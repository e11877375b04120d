"""Audit events about Guard itself rather than an exchange: policy and config reloads, start and stop,
console access, checkpoints. Re-exported by guard.audit.event."""

from __future__ import annotations

import os
from typing import Any

from guard.audit.capture import CAPTURE_LEVELS as CAPTURE_LEVELS
from guard.audit.capture import ContentCapture as ContentCapture
from guard.audit.capture import _hmac_key as _hmac_key
from guard.audit.capture import _hmac_sha256 as _hmac_sha256
from guard.audit.event_base import new_event, plain


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
