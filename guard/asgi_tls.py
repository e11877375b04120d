"""The ASGI ``tls`` extension of a connection: the client certificate (PEM), TLS version and cipher, and the
Principal parsed from the certificate (cached per certificate). uvicorn does not fill the extension;
guard.server's protocols put it in each request's scope."""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache
from typing import Any

from guard.identity import Principal, principal_from_der


@lru_cache(maxsize=4096)
def _principal(der: bytes) -> Principal:
    return principal_from_der(der)


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """ASGI TLS extension for a connection (client_cert_chain as PEM, plus the parsed Principal)."""
    obj = transport.get_extra_info("ssl_object")
    if obj is None:
        return None
    der = obj.getpeercert(binary_form=True)
    principal = _principal(der) if der else None
    cipher = obj.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": principal.subject if principal else None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(obj.version() or ""),
        "cipher_suite": None,
        "cipher_name": cipher[0] if cipher else None,
        "guard.principal": principal,
    }
