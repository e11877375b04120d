"""uvicorn with mTLS that Guard controls: handshake failures are counted by reason, the server certificate
and client CA can be swapped for new handshakes, and the peer certificate reaches the app through the ASGI
``tls`` extension (uvicorn itself does not fill it; DESIGN.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from guard import telemetry
from guard.errors import GuardError, unavailable
from guard.exchange import REQUEST_KEY
from guard.identity import Principal, principal_from_der

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
    2: "unknown_ca", 18: "unknown_ca", 19: "unknown_ca", 20: "unknown_ca", 21: "unknown_ca",
    9: "certificate_not_yet_valid", 10: "certificate_expired", 13: "certificate_expired",
    14: "certificate_not_yet_valid", 23: "certificate_revoked", 24: "ca_certificate",
    26: "bad_certificate_purpose", 28: "bad_certificate_purpose",
    3: "crl_error", 8: "crl_error", 11: "crl_error", 12: "crl_error", 15: "crl_error", 16: "crl_error",
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
        for key, label in (("expired", "certificate_expired"), ("not yet valid", "certificate_not_yet_valid"),
                           ("revoked", "certificate_revoked"), ("purpose", "bad_certificate_purpose"),
                           ("unable to get local issuer", "unknown_ca"), ("self-signed", "unknown_ca"),
                           ("self signed", "unknown_ca"), ("crl", "crl_error")):
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


def build_server_context(cert: Path, key: Path, client_ca: Path, crl: Path | None = None,
                         min_version: str = "1.2") -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate signed by ``client_ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(client_ca))
    if crl is not None:
        ctx.load_verify_locations(cafile=str(crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are always strong).
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


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
        "tls_version": _TLS_VERSIONS.get(obj.version() or "", None),
        "cipher_suite": None,
        "cipher_name": cipher[0] if cipher else None,
        "guard.principal": principal,
    }


# Request read limits. uvicorn's httptools protocol caps neither the size nor the number of request headers,
# and arms no timer on a connection before its first response: a client that never finishes its headers
# (slowloris) or its body would hold the connection, and a task, forever. (The h11 protocol caps header size
# with h11_max_incomplete_event_size; it has no read timer either.)
MAX_HEADER_BYTES = 65536  # request line and headers; more gets 431
MAX_HEADERS = 128  # header fields; more gets 431
HEADER_TIMEOUT_S = 10.0  # connection open (or first byte of a request) -> end of headers; then 408 and close
BODY_TIMEOUT_S = 30.0  # end of headers -> end of body; then the connection is closed (the app sees a disconnect)


class _Coalescing:
    """The response's view of the connection: the status line and headers are held for the rest of the
    loop iteration, so that a whole response (head and body sent back to back) leaves in one write: one
    syscall and, over TLS, one record instead of two. Anything else goes straight through."""

    __slots__ = ("_t", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t, self._loop, self._held = transport, loop, None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._t.write(held + data)
        elif data[-4:] == b"\r\n\r\n" and data[:5] == b"HTTP/":
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._t.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._t.is_closing():
            self._t.write(held)

    def close(self) -> None:
        self._flush()
        self._t.close()

    def is_closing(self) -> bool:
        return self._t.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


_REASON_PHRASES = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
                   503: b"Service Unavailable"}


def _new_request() -> dict[str, Any]:
    """The request's id and who makes its one audit record (guard.exchange.REQUEST_KEY)."""
    return {"id": os.urandom(12).hex(), "owner": None}


class _Refusals:
    """Requests the HTTP layer refuses before they reach the app (malformed, header limits, too slow): the
    client gets an OpenAI-shaped error with a request id, and the journal an ``exchange.denied`` record
    (stage ``request``) under that id, written before the answer as for any refusal; if it cannot be
    written the answer is 503 ``audit_unavailable``. A connection on which nothing arrived is not a
    request: a 408 for it is answered, not recorded."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    _tls: dict[str, Any] | None = None
    _recorder: Any = None  # the app's refused_by_protocol(rid, status, msg, code, tls, client_ip)
    _refused = False

    def _bind(self, transport: asyncio.Transport) -> dict[str, Any] | None:
        """At connection_made: the peer's certificate (ASGI tls extension) and where refusals are recorded."""
        self._tls = tls_extension(transport)
        self._recorder = getattr(self.app, "refused_by_protocol", None)
        return self._tls

    def _refuse_request(self, status: int, msg: str, code: str, received: bool = True) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        req = self._body_request()
        rid = req["id"] if req is not None else os.urandom(12).hex()
        err = GuardError(status, msg, "invalid_request_error", code)
        if self._recorder is None or not received:
            return self._write_refusal(err, rid)
        self.transport.pause_reading()
        self.loop.create_task(self._record_then_refuse(err, rid))

    def _body_request(self) -> dict[str, Any] | None:
        """The request whose body was being read when its framing broke, claimed for this refusal: the
        client gets its id and the journal one record (the app, seeing the connection close, records
        nothing). None when the app already answered or recorded it (a new id is used then)."""
        cycle = getattr(self, "cycle", None)  # h11 parses no further request while one is being served
        if cycle is None or getattr(self, "_in_head", False) or not cycle.more_body or cycle.response_started:
            return None
        req = cycle.scope.setdefault(REQUEST_KEY, _new_request())  # h11: the app may not have started yet
        if req["owner"] is not None:
            return None
        req["owner"] = "http"
        return req

    async def _record_then_refuse(self, err: GuardError, rid: str) -> None:
        try:
            worse = await self._recorder(rid, err.status, err.message, err.code, self._tls,
                                         (self.client or ("", 0))[0])
        except Exception:  # noqa: BLE001 - a bug in recording still answers, refused harder
            log.exception("recording refused request %s", rid)
            worse = unavailable("audit journal unavailable; request refused", "audit_unavailable")
        self._write_refusal(worse or err, rid)

    def _write_refusal(self, err: GuardError, rid: str) -> None:
        """An OpenAI-shaped error written straight to the transport (no request reached the app), then close."""
        if self.transport.is_closing():
            return
        body = err.body()
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"x-guard-request-id: %s\r\nconnection: close\r\n\r\n%s"
                             % (err.status, _REASON_PHRASES[err.status], len(body), rid.encode(), body))
        self.transport.close()


class _TLSHttpTools(_Refusals, HttpToolsProtocol):
    _timer: asyncio.TimerHandle | None = None
    _in_head = True
    _head_bytes = 0
    _refusal: tuple[int, str, str] | None = None
    _coalescing: _Coalescing | None = None
    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S
    max_header_bytes = MAX_HEADER_BYTES
    max_headers = MAX_HEADERS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._bind(transport)
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _arm(self, seconds: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._read_timed_out) if seconds else None

    def _read_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if (self._in_head and busy) or (not self._in_head and self.pipeline):
            # a pipelined request waits behind a response still being sent (uvicorn pauses reading meanwhile):
            # the client is not slow, and closing would cut the response in progress
            self._arm(self.body_timeout_s)
        elif self._in_head:  # no request is being served on this connection: answer 408
            self._refuse_request(408, "request headers not received in time", "request_timeout",
                                 received=self._head_bytes > 0)
        else:  # the app is reading the body: closing makes its receive() return http.disconnect
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing() or self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes and not self._refused:
            log.info("refused request: headers over %d bytes", self.max_header_bytes)
            self._refuse_request(431, f"request headers exceed {self.max_header_bytes} bytes", "headers_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[typeddict-unknown-key]
        self.scope[REQUEST_KEY] = _new_request()  # type: ignore[literal-required]
        if not self._in_head:
            self._in_head, self._head_bytes = True, 0
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        if len(self.headers) > self.max_headers:
            self._refusal = (431, f"more than {self.max_headers} request headers", "headers_too_large")
            raise ValueError("too many headers")  # httptools turns it into HttpParserError -> send_400_response
        if len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers) > self.max_header_bytes:
            self._refusal = (431, f"request headers exceed {self.max_header_bytes} bytes", "headers_too_large")
            raise ValueError("headers too large")
        self._in_head, self._head_bytes = False, 0
        self._arm(self.body_timeout_s)
        super().on_headers_complete()
        if self.cycle is not None:
            if self._coalescing is None:  # one per connection: its requests are answered one after another
                self._coalescing = _Coalescing(self.transport, self.loop)
            self.cycle.transport = self._coalescing  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._arm(None)
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._arm(None)
        self._refuse_request(*(self._refusal or (400, "invalid HTTP request", "invalid_http_request")))


class _TLSH11(_Refusals, H11Protocol):
    """h11 builds its scope inline, so the extension is added by a per-connection app wrapper."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = self._bind(transport)
        app = self.app

        async def with_tls(scope: dict, receive: Callable, send: Callable) -> None:
            if tls is not None:
                scope["extensions"] = {**scope.get("extensions", {}), "tls": tls}
            scope.setdefault(REQUEST_KEY, _new_request())  # or the one a refusal of its body made first
            await app(scope, receive, send)

        self.app = with_tls  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        self._refuse_request(400, "invalid HTTP request", "invalid_http_request")


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


class ContextHolder:
    """The TLS context for new handshakes. The listener keeps one front context whose SNI callback (called
    for every ClientHello, with or without a server name) switches the connection to the current one, so
    ``replace`` rotates certificates, CA bundle and CRL without touching open connections."""

    def __init__(self, ctx: ssl.SSLContext | None) -> None:
        self.ctx = ctx
        self.front: ssl.SSLContext | None = None
        if ctx is not None:
            self._install_front(ctx)

    def _install_front(self, ctx: ssl.SSLContext) -> None:
        self.front = ctx
        ctx.sslobject_class = _CountingSSLObject
        ctx.sni_callback = self._switch

    def _switch(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self.ctx is not None and self.ctx is not self.front:
            sslobj.context = self.ctx

    def replace(self, ctx: ssl.SSLContext) -> None:
        if self.front is None:
            self._install_front(ctx)
        self.ctx = ctx


def protocol_class(http: str = "httptools") -> type[asyncio.Protocol]:
    """uvicorn ``http`` protocol class that adds the ASGI TLS extension."""
    return _TLSHttpTools if http == "httptools" else _TLSH11
