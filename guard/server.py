"""uvicorn with mTLS that Guard controls: the peer certificate reaches the app through the ASGI ``tls``
extension (uvicorn itself does not fill it; DESIGN.md), requests on a connection verified before a reload are
checked against the CRLs now in force, and requests the HTTP layer refuses are answered and audited. The TLS
context itself (reasons for refused handshakes, a context per reload): guard.tls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections.abc import Callable
from typing import Any, cast

import h11

from guard.apis import api_of_path
from guard.apis.wire import module
from guard.asgi_tls import tls_extension
from guard.compat.uvicorn_protocols import H11Protocol, HttpToolsProtocol
from guard.errors import GuardError, unavailable
from guard.exchange import REQUEST_KEY
from guard.request_framing import framing_problem, head_of, headers_problem
from guard.revocation import chain_of
from guard.tls import (
    ClientCertificateRefused,
    ContextHolder,
    build_server_context,
    client_cert_problem,
    handshake_failure_reason,
    holder_of,
)

__all__ = [
    "ClientCertificateRefused",
    "ContextHolder",
    "build_server_context",
    "client_cert_problem",
    "handshake_failure_reason",
    "protocol_class",
    "tls_extension",
]

log = logging.getLogger("guard.server")


# Request read limits. uvicorn's httptools protocol caps neither the size nor the number of request headers,
# and arms no timer on a connection before its first response: a client that never finishes its headers
# (slowloris) or its body would hold the connection, and a task, forever. (The h11 protocol caps header size
# with h11_max_incomplete_event_size; it has no read timer either.)
MAX_HEADER_BYTES = 65536  # request line and headers; more gets 431
MAX_HEADERS = 128  # header fields; more gets 431
HEADER_TIMEOUT_S = 10.0  # connection open (or first byte of a request) -> end of headers; then 408 and close
BODY_TIMEOUT_S = 30.0  # end of headers -> end of body; then the connection is closed (the app sees a disconnect)
IDLE_CLOSE_S = 1.0  # shutdown: an idle connection whose client has not answered the TLS close by then is dropped


class _Coalescing:
    """The response's view of the connection: the status line and headers are held for the rest of the
    loop iteration, so that a whole response (head and body sent back to back) leaves in one write: one
    syscall and, over TLS, one record instead of two. Anything else goes straight through."""

    __slots__ = ("_held", "_loop", "_t")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t, self._loop = transport, loop
        self._held: bytes | None = None

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


_REASON_PHRASES = {
    400: b"Bad Request",
    403: b"Forbidden",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


_TARGET = re.compile(rb"[A-Z]{1,16} (/[^ ?\r\n]*)")


def _error_body(err: GuardError, path: str) -> bytes:
    """The refusal in the client API's own error shape, chosen by the request's path (Ollama's under /api/)."""
    return cast(bytes, module(api_of_path(path)).error_body(err))


def _new_request() -> dict[str, Any]:
    """The request's id and who makes its one audit record (guard.exchange.REQUEST_KEY)."""
    return {"id": os.urandom(12).hex(), "owner": None}


class _Refusals:
    """Requests the HTTP layer refuses before they reach the app (malformed, header limits, too slow): the
    client gets an error in its API's own shape (by the request's path, as far as it was read: Ollama's
    ``{"error": text}`` under /api/, else OpenAI's) with a request id, and the journal an ``exchange.denied`` record
    (stage ``request``) under that id, written before the answer as for any refusal; if it cannot be
    written the answer is 503 ``audit_unavailable``. A connection on which nothing arrived is not a
    request: a 408 for it is answered, not recorded."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    app: Any  # the ASGI app, set by the uvicorn protocol this is mixed into
    _tls: dict[str, Any] | None = None
    _recorder: Any = None  # the app's refused_by_protocol(rid, status, msg, code, tls, client_ip)
    _refused = False
    _holder: ContextHolder | None = None  # the listener's TLS contexts (guard.tls)
    _verified_by: ssl.SSLContext | None = None  # the context whose CRLs this connection's chain last passed
    _sslobj: Any = None

    _gone = False
    _target = b""  # the path of the last request line seen on this connection (the h11 protocol's refusals)

    def _path(self) -> str:
        """The path of the request being refused, as far as it was read ("" when unknown)."""
        cycle = getattr(self, "cycle", None)
        url = getattr(self, "url", None)  # httptools: the target of the request being parsed, or the last one
        if url is None and cycle is not None and not cycle.response_complete:
            return str(cycle.scope["path"])
        raw = url if url is not None else self._target
        return raw.split(b"?", 1)[0].decode("latin-1")

    def _see_target(self, data: bytes) -> None:
        """Remember the path of a request line at the start of ``data`` (h11 keeps its own buffer private)."""
        m = _TARGET.match(data)
        if m is not None:
            self._target = m.group(1)[:256]

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        super().connection_lost(exc)  # type: ignore[misc]

    def shutdown(self) -> None:
        """Graceful shutdown (uvicorn): a response in progress finishes, then its connection closes; an idle
        keep-alive connection is closed now. Over TLS that close waits for the client's close_notify, which a
        client holding the connection in its pool sends only when it next reads it, so Guard would wait out
        ``shutdown_deadline_s`` for clients with nothing in flight: an idle connection still open after
        ``IDLE_CLOSE_S`` is dropped (its response went out whole; no request had begun on it)."""
        super().shutdown()  # type: ignore[misc]
        if self.transport.is_closing() and not self._gone:
            self.loop.call_later(IDLE_CLOSE_S, self._drop)

    def _drop(self) -> None:
        if not self._gone:
            self.transport.abort()

    def _bind(self, transport: asyncio.Transport) -> dict[str, Any] | None:
        """At connection_made: the peer's certificate (ASGI tls extension) and where refusals are recorded."""
        self._tls = tls_extension(transport)
        self._recorder = getattr(self.app, "refused_by_protocol", None)
        if self._tls is not None:
            self._sslobj = transport.get_extra_info("ssl_object")
            self._holder = holder_of(self._sslobj)
            self._verified_by = self._sslobj.context
            if self._holder is not None:
                self._holder.connected(self._sslobj)
        return self._tls

    def _revocation(self) -> tuple[int, str, str] | None:
        """Before each request: None while the connection may be served. After a reload its certificate chain
        is checked once against the CRLs now in force; a revoked chain gets 403 and the connection closed."""
        h = self._holder
        if h is None or self._verified_by is h.ctx:
            return None
        problem = h.recheck(self._verified_by, chain_of(self._sslobj))
        if problem is None:
            self._verified_by = h.ctx
            return None
        log.warning("refused request on a connection opened before the last reload: %s", problem)
        if problem == "certificate_revoked":
            return 403, "the client certificate, or a CA certificate of its chain, has been revoked", problem
        return 403, "the client certificate can no longer be checked for revocation (no CRL of its issuer)", problem

    def _refuse_request(self, status: int, msg: str, code: str, received: bool = True) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        req = self._body_request()
        rid = req["id"] if req is not None else os.urandom(12).hex()
        err = GuardError(status, msg, "permission_denied" if status == 403 else "invalid_request_error", code)
        path = self._path()
        if self._recorder is None or not received:
            return self._write_refusal(err, rid, path)
        self.transport.pause_reading()
        self.loop.create_task(self._record_then_refuse(err, rid, path))

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

    async def _record_then_refuse(self, err: GuardError, rid: str, path: str) -> None:
        try:
            worse = await self._recorder(rid, err.status, err.message, err.code, self._tls, (self.client or ("", 0))[0])
        except Exception:
            log.exception("recording refused request %s", rid)
            worse = unavailable("audit journal unavailable; request refused", "audit_unavailable")
        self._write_refusal(worse or err, rid, path)

    def _write_refusal(self, err: GuardError, rid: str, path: str) -> None:
        """The error, in the shape of the API ``path`` belongs to, written straight to the transport (no request
        reached the app), then close."""
        if self.transport.is_closing():
            return
        body = _error_body(err, path)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"x-guard-request-id: %s\r\nconnection: close\r\n\r\n%s"
            % (err.status, _REASON_PHRASES[err.status], len(body), rid.encode(), body)
        )
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
            self._refuse_request(
                408, "request headers not received in time", "request_timeout", received=self._head_bytes > 0
            )
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
            self.scope["extensions"] = {"tls": cast("dict[object, object]", self._tls)}
        self.scope[REQUEST_KEY] = _new_request()  # type: ignore[literal-required]
        if not self._in_head:
            self._in_head, self._head_bytes = True, 0
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._refusal = self._revocation()
        if self._refusal is not None:
            raise ValueError("certificate revoked")  # -> send_400_response, which sends self._refusal
        if len(self.headers) > self.max_headers:
            self._refusal = (431, f"more than {self.max_headers} request headers", "headers_too_large")
            raise ValueError("too many headers")  # httptools turns it into HttpParserError -> send_400_response
        problem = headers_problem(self.parser.get_http_version(), self.headers)
        if problem is not None:
            log.info("refused request: %s", problem)
            raise ValueError(problem)  # -> send_400_response (guard.request_framing)
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
            refusal = self._revocation()
            if refusal is not None:
                return await self._refuse_in_app(refusal, send, scope["path"])
            if tls is not None:
                scope["extensions"] = {**scope.get("extensions", {}), "tls": tls}
            scope.setdefault(REQUEST_KEY, _new_request())  # or the one a refusal of its body made first
            await app(scope, receive, send)

        self.app = with_tls

    async def _refuse_in_app(self, refusal: tuple[int, str, str], send: Callable, path: str) -> None:
        """The h11 path's refusal of a request on a revoked connection: recorded, answered, then closed."""
        status, msg, code = refusal
        rid = os.urandom(12).hex()
        err = GuardError(status, msg, "permission_denied", code)
        if self._recorder is not None:
            try:
                err = await self._recorder(rid, status, msg, code, self._tls, (self.client or ("", 0))[0]) or err
            except Exception:
                log.exception("recording refused request %s", rid)
                err = unavailable("audit journal unavailable; request refused", "audit_unavailable")
        body = _error_body(err, path)
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-guard-request-id", rid.encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            self._see_target(data)
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        self._refuse_request(400, "invalid HTTP request", "invalid_http_request")

    def handle_events(self) -> None:
        """Before h11 reads a request head: refuse one whose body length is ambiguous (h11 would guess)."""
        if not self._refused and self.conn.their_state is h11.IDLE:
            head = head_of(self.conn.trailing_data[0])
            problem = framing_problem(head) if head is not None else None
            if problem is not None:
                log.info("refused request: %s", problem)
                self.send_400_response(problem)
                return
        super().handle_events()


def protocol_class(http: str = "httptools") -> type[asyncio.Protocol]:
    """uvicorn ``http`` protocol class that adds the ASGI TLS extension."""
    return _TLSHttpTools if http == "httptools" else _TLSH11
