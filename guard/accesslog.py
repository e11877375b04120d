"""The optional access log: one JSON line per exchange (config ``access_log``), to stderr or to
``access_log_file``. It names who called which model and what became of it; it never holds prompt or answer
text, headers, certificates or keys (the audit journal is the evidence; this is for operators' eyes)."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from guard.exchange import Exchange


def principal_name(ex: Exchange) -> str:
    """The caller as one short string: the SPIFFE ID, else the certificate's CN, else its subject."""
    p = ex.principal
    if p is None:
        return ""
    return p.spiffe_id or p.cn or p.subject


class AccessLog:
    """Appends whole lines with one ``write`` each (O_APPEND), so lines of several workers never interleave."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            self._fd, self._own = sys.stderr.fileno(), False
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._own = True

    def record(self, ex: Exchange, outcome: dict[str, Any], decision: str) -> dict[str, Any]:
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": ex.request_id,
            "principal": principal_name(ex),
            "model": ex.model,
            "api": ex.api,
            "operation": ex.operation,
            "status": outcome.get("status", 0),
            "code": outcome.get("reason") if outcome.get("status", 200) >= 400 else None,
            "latency_ms": round((time.perf_counter() - ex.started) * 1000, 3),
            "decision": decision,
        }
        try:  # noqa: SIM105 - runs per request: try/except costs less than contextlib.suppress
            os.write(self._fd, orjson.dumps(line) + b"\n")
        except OSError:
            pass  # an access log that cannot be written never fails a request (the audit journal decides that)
        return line

    def close(self) -> None:
        if self._own:
            os.close(self._fd)
            self._own = False


_open: dict[Path | None, AccessLog] = {}


def open_log(path: Path | None) -> AccessLog:
    """One AccessLog per destination and process (every listener of a process shares it)."""
    log = _open.get(path)
    if log is None:
        log = _open[path] = AccessLog(path)
    return log
