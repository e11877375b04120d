"""Helpers for the hardening tests: metrics deltas, raw TLS sockets, the audit journal."""
from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx


def metric(admin_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(admin_url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def wait_metric(admin_url: str, name: str, at_least: float, timeout: float = 3.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = metric(admin_url, name, **labels)
        if v >= at_least or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def tls_socket(url: str, ctx: ssl.SSLContext, timeout: float = 5.0) -> ssl.SSLSocket:
    host, port = url.split("//")[1].split(":")
    raw = socket.create_connection(("127.0.0.1", int(port)), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=host)


def events(audit_dir: Path) -> list[dict[str, Any]]:
    from guard.audit.layout import iter_events

    return [e for _, _, e in iter_events(audit_dir)]
