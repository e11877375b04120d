"""The HTTP/1.1 client Guard forwards with: a keep-alive connection pool per upstream, asyncio protocols, and
responses parsed by httptools (llhttp, the parser uvicorn's server side already uses).

Why not aiohttp's client (DESIGN.md chose it over httpx): under load it took 30% of a worker's CPU per
proxied request (py-spy, 16 connections), more than the whole audit trail. A reverse proxy needs
little of it (no cookies, redirects, proxies, decompression, multipart): one write per request, and the
response's head and body handed over as they arrive. This module does that and nothing else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import httptools

# A pooled connection idle longer than this is closed, not reused. Below uvicorn's 5 s keep-alive (vLLM and
# other Python model servers): a connection the server is about to close as idle, reused in the same
# instant, loses the request (the server closes it unread: a 502 for a request that never reached it).
# Under load both sides see the idle time late, hence the margin.
KEEPALIVE_S = 4.0
_HIGH_WATER = 256 * 1024  # response bytes held unread before reading from the upstream pauses
MAX_HEAD_BYTES = 65536  # response status line and headers; a longer head is a protocol error


class ConnectError(Exception):
    """No connection could be made (refused, unresolvable, TLS refused, too slow): nothing was sent, so
    another upstream may be tried."""


class ReadTimeout(Exception):
    """The upstream did not send the response head, or the next body bytes, in time."""


class ProtocolError(Exception):
    """The upstream closed the connection mid-response or sent something that is not an HTTP/1.1 response."""


class TooLarge(ProtocolError):
    """The response body is longer than the reader's limit (``Response.read(limit)``)."""


class Response:
    """One response, read from its connection as it arrives. ``release()`` returns the connection to the
    pool when the response ended cleanly and the upstream keeps the connection alive, else closes it (which
    is how an upstream learns that the client went away mid-stream)."""

    __slots__ = (
        "_body_bytes",
        "_chunks",
        "_conn",
        "_deadline",
        "_head_bytes",
        "_held",
        "_idle",
        "_interim",
        "_limit",
        "_loop",
        "_raw",
        "_waiter",
        "_whole",
        "complete",
        "error",
        "headers",
        "keep_alive",
        "status",
    )

    def __init__(self, conn: _Conn, loop: asyncio.AbstractEventLoop, deadline: float, idle: float) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._conn: _Conn | None = conn
        self._loop, self._deadline, self._idle = loop, deadline, idle
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._interim = False
        self._whole = False  # read() wants the whole body: no pausing for it
        self._limit = 0  # read(limit): more body bytes than this is an error (0: no limit)
        self._body_bytes = 0

    # --- reading (the request's task) ---------------------------------------------------------------------

    async def read(self, limit: int = 0) -> bytes:
        """The whole body. ``limit``: a body longer than this many bytes raises TooLarge (and the connection
        is closed, never pooled)."""
        self._whole, self._limit = True, limit
        if limit and self._body_bytes > limit:
            self._too_large()
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self._wait(min(self._loop.time() + self._idle, self._deadline))
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    async def next_chunk(self) -> bytes | None:
        """Whatever body bytes arrived since the last call (waiting for some), or None at the end."""
        while not self._chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait(min(self._loop.time() + self._idle, self._deadline))
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._held = 0
        return data

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.resp = None
        if self.complete and self.keep_alive and self.error is None and not conn.lost:
            conn.pool._put(conn)
        else:
            conn.close()

    async def _head(self, deadline: float) -> None:
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait(deadline)

    async def _wait(self, deadline: float) -> None:
        conn = self._conn
        if conn is not None and conn.paused:
            conn.paused = False
            conn.transport.resume_reading()
        fut = self._waiter = self._loop.create_future()
        timer = self._loop.call_at(deadline, self._expire, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    def _expire(self, fut: asyncio.Future[None]) -> None:
        if not fut.done():
            self.error = self.error or ReadTimeout("no response bytes in time")
            fut.set_result(None)

    # --- filled by the connection (parser callbacks) ---------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _on_head(self, status: int) -> None:
        if status < 200:  # 1xx: an interim response; the real one follows on the same connection
            self._raw.clear()
            self._interim = True
            return
        h: dict[str, str] = {}
        for k, v in self._raw:
            name, value = k.decode("latin-1").lower(), v.decode("latin-1")
            h[name] = f"{h[name]}, {value}" if name in h else value
        self._raw.clear()
        self.headers, self.status = h, status
        self._wake()

    def _on_body(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._limit and self._body_bytes > self._limit:
            if not isinstance(self.error, TooLarge):
                self._too_large()
            return
        self._chunks.append(data)
        self._held += len(data)
        conn = self._conn
        if self._held > _HIGH_WATER and not self._whole and conn is not None and not conn.paused:
            conn.paused = True
            conn.transport.pause_reading()
        self._wake()

    def _on_end(self, keep_alive: bool) -> None:
        if self.error is not None:  # refused on the way (too large): never complete
            self._wake()
            return
        if self._interim:
            self._interim = False
            return
        self.complete, self.keep_alive = True, keep_alive
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._wake()

    def _too_large(self) -> None:
        self._void(TooLarge(f"response body over {self._limit} bytes"))
        if self._conn is not None:
            self._conn.close()

    def _void(self, error: Exception) -> None:
        """The upstream broke the framing after this response seemed complete (bytes after its end): the
        response is not trusted either, whether or not its reader has taken it yet."""
        self.complete = False
        self.error = self.error or error
        self._chunks.clear()
        self._wake()


class _Conn(asyncio.Protocol):
    """One connection to the upstream; carries one response at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.lost = False
        self.counted = False  # holds one of the pool's slots
        self.paused = False
        self.idle_since = 0.0
        self._length_known = False
        self._ended = False  # the current response's final message ended: any further byte is a violation

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        r = self.resp
        if r is None:  # bytes nobody asked for: the connection is out of step, never reuse it
            self.close()
            return
        if self._ended and data.strip(b"\r\n"):  # bytes after the response's declared end
            r._void(ProtocolError("bytes after the end of the response"))
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            r._fail(ProtocolError("the upstream switched protocols"))
            self.close()
        except httptools.HttpParserCallbackError:  # a callback refused what it saw (it already failed r)
            self.close()
        except httptools.HttpParserError as e:
            if self._ended:  # the framing broke after the response's declared end
                r._void(ProtocolError(f"bytes after the end of the response ({e})"))
            else:
                r._fail(ProtocolError(f"not an HTTP/1.1 response ({e})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool._forget(self)
        r = self.resp
        if r is not None and not r.complete:
            if r.status and not self._length_known:  # a body delimited by the connection's end
                r._on_end(False)
            else:
                r._fail(ProtocolError("the upstream closed the connection before the response ended"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.lost = True
        self.pool._forget(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._ended:  # a second response after the one asked for: response splitting or an out-of-step
            # upstream; neither this response nor this connection can be trusted
            self.resp._void(ProtocolError("a second response after the end of the response"))  # type: ignore[union-attr]
            raise ProtocolError("a second response")

    def on_header(self, name: bytes, value: bytes) -> None:
        r: Response = self.resp  # type: ignore[assignment]
        r._head_bytes += len(name) + len(value)
        if r._head_bytes > MAX_HEAD_BYTES:
            r._fail(ProtocolError(f"response headers over {MAX_HEAD_BYTES} bytes"))  # the first error is kept
            raise httptools.HttpParserError("response head too long")
        r._raw.append((name, value))

    def on_headers_complete(self) -> None:
        r: Response = self.resp  # type: ignore[assignment]
        status = self.parser.get_status_code()
        if status >= 200:
            self._length_known = status in (204, 304) or any(
                k.lower() in (b"content-length", b"transfer-encoding") for k, _ in r._raw
            )
            te = [v.strip().lower() for k, v in r._raw if k.lower() == b"transfer-encoding"]
            if te and te != [b"chunked"]:  # only plain chunked framing (llhttp already refuses TE with CL)
                r._fail(ProtocolError("unsupported transfer-encoding"))
                raise ProtocolError("transfer-encoding")
        r._on_head(status)

    def on_body(self, body: bytes) -> None:
        self.resp._on_body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        r: Response = self.resp  # type: ignore[assignment]
        if not r._interim:
            self._ended = True
        r._on_end(self.parser.should_keep_alive())


class Pool:
    """Keep-alive connections to one upstream (scheme, host, port), at most ``limit`` open at once; a
    request beyond that waits for a free connection, within its own total time."""

    def __init__(self, url: str, limit: int, connect_timeout: float) -> None:
        u = urlsplit(url)
        self.host = u.hostname or ""
        https = u.scheme == "https"
        self.port = u.port or (443 if https else 80)
        default_port = u.port is None or u.port == (443 if https else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = (host if default_port else f"{host}:{self.port}").encode("idna")
        # Server certificates are verified against the system store (SSL_CERT_FILE / SSL_CERT_DIR to change it).
        self.ssl = ssl.create_default_context() if https else None
        self.limit, self.connect_timeout = limit, connect_timeout
        self._idle: deque[_Conn] = deque()
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._open = 0
        self.closed = False

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: bytes,
        body: bytes,
        *,
        total: float,
        idle: float,
        first_byte: float | None = None,
    ) -> Response:
        """Send the request and wait for the response head. ``headers``: header lines, each ending in CRLF
        (host and content-length are added here). Raises ConnectError, ReadTimeout or ProtocolError."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + total
        conn = await self._acquire(loop, deadline)
        resp = conn.resp = Response(conn, loop, deadline, idle)
        conn._ended = False
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n\r\n" % (
            method,
            target,
            self.authority,
            headers,
            len(body),
        )
        if len(body) < 65536:
            conn.transport.write(head + body)
        else:
            conn.transport.writelines((head, body))
        head_by = min(deadline, now + idle, now + first_byte if first_byte is not None else deadline)
        try:
            await resp._head(head_by)
        except BaseException:
            resp.release()
            raise
        return resp

    async def close(self) -> None:
        self.closed = True
        while self._idle:
            self._idle.pop().close()

    # --- connections ---------------------------------------------------------------------------------------

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn:
        while True:
            while self._idle:
                c = self._idle.pop()
                if c.lost:
                    continue
                if loop.time() - c.idle_since > KEEPALIVE_S:
                    c.close()
                    continue
                return c
            if self._open < self.limit:
                return await self._connect(loop)
            got = await self._wait_for_slot(loop, deadline)
            if got is not None and not got.lost:
                return got

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn | None:
        w: asyncio.Future[_Conn | None] = loop.create_future()
        self._waiters.append(w)

        def expire() -> None:
            if not w.done():
                w.set_exception(ReadTimeout(f"no free connection among {self.limit} in time"))

        timer = loop.call_at(deadline, expire)
        try:
            return await w
        except asyncio.CancelledError:
            handed = w.result() if w.done() and not w.cancelled() and w.exception() is None else None
            if handed is not None:
                self._put(handed)  # handed a connection just as the request was cancelled: pass it on
            raise
        finally:
            timer.cancel()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Conn:
        self._open += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                self.connect_timeout,
            )
        except (TimeoutError, OSError) as e:
            self._release_slot()
            reason = "timed out" if isinstance(e, asyncio.TimeoutError) else type(e).__name__
            raise ConnectError(reason) from None
        except BaseException:
            self._release_slot()
            raise
        conn.counted = True
        if conn.lost:  # closed before we got it
            self._forget(conn)
            raise ConnectError("closed at once")
        return conn

    def _put(self, conn: _Conn) -> None:
        if conn.paused:
            conn.paused = False
            conn.transport.resume_reading()
        if self.closed:
            conn.close()
            return
        w = self._next_waiter()
        if w is not None:
            w.set_result(conn)
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    def _forget(self, conn: _Conn) -> None:
        if conn.counted:
            conn.counted = False
            self._release_slot()

    def _release_slot(self) -> None:
        self._open -= 1
        w = self._next_waiter()
        if w is not None:
            w.set_result(None)  # a slot is free: the waiter connects

    def _next_waiter(self) -> asyncio.Future[_Conn | None] | None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                return w
        return None
