"""Which client headers may reach an upstream: ``accept`` and what an operator lists per upstream
(``upstreams.<name>.forward_headers``). Credentials, billing/organisation headers, hop-by-hop headers and
the headers Guard sets itself never pass from the client; the credential-like ones cannot even be listed."""

from __future__ import annotations

import re

ALWAYS = frozenset({b"accept"})  # besides these, only what the operator lists

# Guard writes these itself (framing, identity, tracing, the upstream's own key): never the client's.
GUARD_SET = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "x-forwarded-client-cert",
        "x-guard-request-id",
        "x-guard-audit-leaf",
        "traceparent",
        "tracestate",
    }
)

# Credentials: exact names, and name parts that mark one (x-goog-api-key, x-amz-security-token, ...).
CREDENTIALS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "cookie2", "set-cookie"}
)
_CREDENTIAL_PART = re.compile(
    r"auth|api[-_]?key|access[-_]?key|secret|token|cookie|session|password|"
    r"credential|signature|bearer"
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name


def refuse_reason(name: str) -> str | None:
    """Why ``name`` may not be listed in ``forward_headers`` (None: it may)."""
    low = name.lower()
    if not _TOKEN.fullmatch(name):
        return "not a header name"
    if low in CREDENTIALS or _CREDENTIAL_PART.search(low):
        return "a credential; Guard sends the upstream's own key (api_key_env)"
    if low in GUARD_SET:
        return "Guard sets this header itself"
    return None


def allowed(forward: list[str]) -> frozenset[bytes]:
    return ALWAYS | frozenset(n.encode("latin-1") for n in forward)
