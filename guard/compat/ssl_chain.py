"""The peer's certificate chain of a TLS connection, leaf first, as DER.

``SSLObject.get_verified_chain()`` / ``get_unverified_chain()`` are public from Python 3.13 (they return
DER bytes). On 3.11 and 3.12 the same methods exist only on the underlying ``_ssl._SSLSocket`` object
(``SSLObject._sslobj``) and return ``_ssl.Certificate`` objects. This module is the one place that reaches
for that private object; tests/core/test_compat_contracts.py checks it on the running interpreter.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable
from typing import Any

_PUBLIC = sys.version_info >= (3, 13)
_ENCODING_DER = 2  # _ssl.ENCODING_DER, the argument of _ssl.Certificate.public_bytes


def _method(sslobj: ssl.SSLObject | ssl.SSLSocket, name: str) -> Callable[[], Any] | None:
    if _PUBLIC:
        return getattr(sslobj, name, None)
    inner = getattr(sslobj, "_sslobj", None)  # Python 3.11-3.12 only, see the module docstring
    return getattr(inner, name, None)


def _der(cert: Any) -> bytes:
    if isinstance(cert, bytes):
        return cert
    return cert.public_bytes(_ENCODING_DER)  # type: ignore[no-any-return]


def _chain(sslobj: ssl.SSLObject | ssl.SSLSocket, name: str) -> tuple[bytes, ...] | None:
    fn = _method(sslobj, name)
    if fn is None:
        return None
    certs = fn()
    return tuple(_der(c) for c in certs) if certs else None


def verified_chain(sslobj: ssl.SSLObject | ssl.SSLSocket) -> tuple[bytes, ...] | None:
    """The chain OpenSSL verified (leaf first, up to the trust anchor), or None when there is none (a
    resumed TLS session keeps no chain)."""
    return _chain(sslobj, "get_verified_chain")


def unverified_chain(sslobj: ssl.SSLObject | ssl.SSLSocket) -> tuple[bytes, ...] | None:
    """The chain as the peer sent it (leaf first), or None."""
    return _chain(sslobj, "get_unverified_chain")
