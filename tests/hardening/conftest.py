"""Helpers for the hardening tests: metrics deltas, raw TLS sockets, the audit journal."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from tests.audit.proxy_helpers import metric as sample_sum


def metric(admin_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``, scraped from ``admin_url``."""
    return sample_sum(httpx.get(admin_url + "/metrics", timeout=5).text, name, **labels)


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
    """The journal's events, captured texts opened with its default content keys (guard.audit.content_keys)."""
    from guard.audit.content_keys import ContentKeys, reveal
    from guard.audit.layout import iter_events

    keys = ContentKeys(audit_dir / "keys" / "content")
    return [reveal(e, keys) for _, _, e in iter_events(audit_dir)]


def fuzz_settings(default_examples: int) -> Any:
    """Hypothesis settings for the fuzz tests: GUARD_FUZZ_EXAMPLES examples (``default_examples`` unless set),
    derandomized so CI is repeatable unless GUARD_FUZZ_RANDOM=1, no example database, no deadline."""
    import os

    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=int(os.environ.get("GUARD_FUZZ_EXAMPLES", str(default_examples))),
        deadline=None,
        database=None,
        derandomize=os.environ.get("GUARD_FUZZ_RANDOM") != "1",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def error_field(r: Any, key: str = "code") -> Any:
    """A field of Guard's error answer in either shape: OpenAI/Anthropic ``{"error": {key: ...}}`` or
    Ollama's ``{"error": "text", "code": ..., "param": ...}`` (``message`` is the text there)."""
    body = r.json()
    err = body.get("error")
    if isinstance(err, dict):
        return err.get(key)
    return err if key == "message" else body.get(key)
