"""TLS of the public listener: the server context, why a handshake was refused (counted by reason), and the
holder that gives every reload a context of its own, session cache and session ticket keys included."""

from __future__ import annotations

import asyncio
import logging
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

from guard import telemetry
from guard.revocation import (
    Intermediates,
    Revocations,
    TLSFileError,
    load_cas,
    load_crls,
)

log = logging.getLogger("guard.server")

# OpenSSL reasons for refused handshakes, folded into a few stable metric labels.
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_certificate",
    "CERTIFICATE_VERIFY_FAILED": "verify_failed",
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "WRONG_VERSION_NUMBER": "not_tls",
    "HTTP_REQUEST": "not_tls",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_CIPHERS_AVAILABLE": "no_shared_cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no_shared_cipher",
    "UNSUPPORTED_CERTIFICATE_PURPOSE": "bad_certificate_purpose",
}

# X509_V_ERR_* codes (stable across OpenSSL versions; their messages are not: "unsuitable certificate purpose").
_VERIFY_CODES = {
    2: "unknown_ca",
    18: "unknown_ca",
    19: "unknown_ca",
    20: "unknown_ca",
    21: "unknown_ca",
    9: "certificate_not_yet_valid",
    10: "certificate_expired",
    13: "certificate_expired",
    14: "certificate_not_yet_valid",
    23: "certificate_revoked",
    24: "ca_certificate",
    26: "bad_certificate_purpose",
    28: "bad_certificate_purpose",
    3: "crl_error",
    8: "crl_error",
    11: "crl_error",
    12: "crl_error",
    15: "crl_error",
    16: "crl_error",
}


class ClientCertificateRefused(ssl.SSLError):
    """A client certificate OpenSSL's chain check accepts but Guard does not (see ``client_cert_problem``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"client certificate refused: {reason}")
        self.reason = reason


@lru_cache(maxsize=4096)
def client_cert_problem(der: bytes) -> str | None:
    """What OpenSSL lets through but an identity must not be. OpenSSL's client-purpose check does not refuse a
    CA certificate as the leaf (the trusted root itself, or any certificate with basicConstraints CA:TRUE or
    keyCertSign): whoever holds a CA key would otherwise be a client too."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return "ca_certificate"
        except x509.ExtensionNotFound:
            pass
        try:
            if cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
                return "ca_certificate"
        except x509.ExtensionNotFound:
            pass
    except ValueError:
        return "bad_certificate"
    return None


def handshake_failure_reason(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        label = _VERIFY_CODES.get(exc.verify_code or 0)
        if label:
            return label
        msg = (exc.verify_message or "").lower()
        for key, label in (
            ("expired", "certificate_expired"),
            ("not yet valid", "certificate_not_yet_valid"),
            ("revoked", "certificate_revoked"),
            ("purpose", "bad_certificate_purpose"),
            ("unable to get local issuer", "unknown_ca"),
            ("self-signed", "unknown_ca"),
            ("self signed", "unknown_ca"),
            ("crl", "crl_error"),
        ):
            if key in msg:
                return label
        return "verify_failed"
    if isinstance(exc, ClientCertificateRefused):
        return exc.reason
    if isinstance(exc, ssl.SSLError):
        return _REASONS.get(exc.reason or "", (exc.reason or "ssl_error").lower())
    if isinstance(exc, (ConnectionError, EOFError)):
        return "connection_closed"
    return "other"


class _CountingSSLObject(ssl.SSLObject):
    """Counts refused handshakes by reason: asyncio and uvloop only log them at debug level."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
            if self.server_side:
                der = self.getpeercert(binary_form=True)
                problem = client_cert_problem(der) if der else None
                if problem:
                    raise ClientCertificateRefused(problem)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except Exception as e:
            reason = handshake_failure_reason(e)
            telemetry.TLS_HANDSHAKE_FAILURES.labels(reason).inc()
            log.info("tls handshake refused: %s", reason)
            raise


def build_server_context(
    cert: Path, key: Path, client_ca: Path, crl: Path | None = None, min_version: str = "1.2"
) -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate signed by ``client_ca``, checked against
    every CRL in ``crl`` for the whole chain. Raises TLSFileError naming the file that cannot be used."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    load_cas(cert)  # names the certificate file when it is the broken one
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise TLSFileError(key, f"cannot use key with certificate {cert}: {_why(e)}") from None
    cas = load_cas(client_ca)
    try:
        ctx.load_verify_locations(cafile=str(client_ca))
    except (OSError, ValueError) as e:
        raise TLSFileError(client_ca, _why(e)) from None
    if crl is not None:
        load_crls(crl, cas)  # names the CRL block and why it cannot be used
        try:
            ctx.load_verify_locations(cafile=str(crl))  # every CRL (and certificate) of the PEM file
        except (OSError, ValueError) as e:
            raise TLSFileError(crl, _why(e)) from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN  # intermediate CAs too, each on its issuer's CRL
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are always strong).
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _why(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        return e.reason or str(e)
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)


class _Front(ssl.SSLContext):
    """What the listener holds: it makes no handshake itself, each new connection is wrapped by the holder's
    current context (asyncio and uvloop create every server-side TLS object through ``wrap_bio``)."""

    holder: ContextHolder

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        ctx = self.holder.ctx
        assert ctx is not None
        return ctx.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


class ContextHolder:
    """The TLS context for new handshakes, a new one per reload. Everything a handshake uses belongs to the
    context of the last reload: certificate, CA bundle, CRLs, and also the TLS session cache (TLS 1.2
    session ids) and the session ticket keys (TLS 1.2 and 1.3 tickets), which OpenSSL keeps per context. A
    session from before a reload is unknown to the new context, so the client makes a full handshake,
    verified against the CRLs now in force; resumption cannot carry a revoked certificate past a reload.
    Open connections keep their context; guard.server checks each of their requests against
    ``revocations`` once a reload has happened (``recheck``)."""

    def __init__(self, ctx: ssl.SSLContext | None = None, revocations: Revocations | None = None) -> None:
        self.ctx: ssl.SSLContext | None = None
        self.revocations = Revocations()
        self.intermediates = Intermediates()  # for the chains of resumed TLS sessions (see Revocations.complete)
        self.front: ssl.SSLContext | None = None
        if ctx is not None:
            self.replace(ctx, revocations)

    def replace(self, ctx: ssl.SSLContext, revocations: Revocations | None = None) -> None:
        ctx.sslobject_class = _CountingSSLObject
        ctx.guard_holder = self  # type: ignore[attr-defined]  # how a connection finds the holder
        self.revocations = revocations or Revocations()
        self.ctx = ctx
        if self.front is None:
            front = _Front(ssl.PROTOCOL_TLS_SERVER)
            front.holder = self
            self.front = front

    def recheck(self, verified_by: ssl.SSLContext | None, chain: tuple[bytes, ...]) -> str | None:
        """Why a connection whose handshake ``verified_by`` checked may no longer be served (see
        Revocations.problem), or None. Only connections from before the last reload are checked."""
        if verified_by is self.ctx:
            return None
        return self.revocations.problem(chain, self.intermediates)

    def connected(self, sslobj: ssl.SSLObject) -> None:
        """A new connection: with CRLs in force, the intermediate CAs of a full handshake's chain are kept, so
        that a later session resumed from it (which keeps only the leaf) can still be checked whole."""
        if self.revocations.crls and not sslobj.session_reused:
            self.intermediates.learn(sslobj)


def holder_of(sslobj: Any) -> ContextHolder | None:
    return getattr(getattr(sslobj, "context", None), "guard_holder", None)
