"""What every reload leaves behind, for each part that reloads (policy, filters, tls): a log line, a count in
``guard_reload_total{component,result}`` and a ``config.reload`` audit event. A failed one names the file,
the line where the file has lines, and the reason, and the version kept in force."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from guard import telemetry

log = logging.getLogger("guard.reload")

# "<path>:<line>: reason" as ConfigError messages of YAML, CSV and model files begin
_WHERE = re.compile(r"(?P<file>[^\s:]+\.(?:ya?ml|csv|conf|pem|crt|key)):(?P<line>\d+)")


def version_of(files: list[Path]) -> str:
    """SHA-256 over the files' names and contents (a file that cannot be read counts as missing)."""
    h = hashlib.sha256()
    for p in files:
        h.update(str(p).encode() + b"\0")
        try:
            h.update(p.read_bytes())
        except OSError:
            h.update(b"\1missing")
        h.update(b"\0")
    return h.hexdigest()


def locate(reason: str, files: list[str]) -> tuple[str, int | None]:
    """The failing file (and line) named in an error message; else the first file that is missing or, with
    one file, that file; else ''."""
    m = _WHERE.search(reason)
    if m:
        return m.group("file"), int(m.group("line"))
    for f in files:
        if f and f in reason:
            return f, None
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        return missing[0], None
    return (files[0], None) if len(files) == 1 else ("", None)


def record(
    component: str,
    ok: bool,
    version: str,
    files: list[Path],
    trigger: str,
    reason: str = "",
    file: str = "",
    line: int | None = None,
) -> dict[str, Any]:
    """Log and count one reload; returns its ``config.reload`` event for the caller to append."""
    from guard.audit import event as ev

    names = [str(f) for f in files]
    if not ok and not file:
        file, line = locate(reason, names)
    telemetry.RELOADS.labels(component, "ok" if ok else "failed").inc()
    if ok:
        log.info("reload %s: %s ok, version %s", trigger or "-", component, version[:16])
    else:
        log.error(
            "reload %s: %s failed, keeping version %s: file %s%s: %s",
            trigger or "-",
            component,
            version[:16],
            file or "?",
            f" line {line}" if line else "",
            reason,
        )
    return ev.config_reload(component, ok, version, names, trigger, reason, file, line)
