"""One upstream response read as it arrives, the client's limits and its errors (guard.http1)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

# A pooled connection idle longer than this is closed, not reused. Below uvicorn's 5 s keep-alive (vLLM and
# other Python model servers): a connection the server is about to close as idle, reused in the same
# instant, loses the request (the server closes it unread: a 502 for a request that never reached it).
# Under load both sides see the idle time late, hence the margin.
KEEPALIVE_S = 4.0
_HIGH_WATER = 256 * 1024  # response bytes held unread before reading from the upstream pauses
MAX_HEAD_BYTES = 65536  # response status line and headers; a longer head is a protocol error


class _Conn(Protocol):
    """What a response needs of its connection (guard.http1.pool's connection class)."""

    resp: Response | None
    lost: bool
    paused: bool
    transport: Any
    pool: Any

    def close(self) -> None: ...


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
