"""The memory backend shared by the workers of one host: a keeper process owns the counters.

With ``workers > 1`` and ``backend: memory``, the supervisor (guard.serve) forks a keeper before the
workers: one process running ``MemoryBackend`` behind a unix socket in a private directory (mode 0700). Each
worker's ``LocalBackend`` sends it the same calls the in-process backend takes, one JSON line each, on one
connection per worker. The keeper handles one line at a time, so check-and-charge stays atomic across
workers, as it is within one process. Admission and ``usage`` wait for the keeper's answer (one local round
trip); settlement does not: it travels with the worker's next call, or alone after at most 5 ms (the keeper
applies a connection's lines in order, so a later admission of the same worker always sees it; another
worker may see a slot still held for those 5 ms, a refusal on the safe side).

Failure: every call has the ``quotas.timeout_ms`` deadline; a keeper that does not answer counts as down
(``on_error`` applies) and is not asked again for a backoff (0.1 s doubling to 5 s). The supervisor restarts
a keeper that died, with empty counters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from typing import Any

from guard.quota.memory import Admission, CounterState, MemoryBackend, Rate, Slot
from guard.quota.redis_backend import BackendDown

log = logging.getLogger("guard.quota")

SOCKET: str | None = None  # set by the supervisor before it forks the workers; inherited by them
_LIMIT = 1 << 24  # longest line (a usage answer for many principals)
SETTLE_DELAY_S = 0.005  # a settlement waits at most this long for a call to travel with


def _dumps(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode() + b"\n"


# --- the keeper ------------------------------------------------------------------------------------------


class _Keeper(asyncio.Protocol):
    """One worker's connection: each line a call, answered (admission, usage) in order."""

    def __init__(self, mb: MemoryBackend) -> None:
        self.mb = mb
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if b"\n" not in buf:
            if len(buf) > _LIMIT:
                self.transport.close()
            self.buf = buf
            return
        *lines, self.buf = buf.split(b"\n")
        out = []
        mb = self.mb
        try:
            for line in lines:
                m = json.loads(line)
                op = m[0]
                if op == "a":
                    adm = mb.admit_now(m[1], m[2], m[3], m[4], m[5], m[6], m[7])
                    out.append(
                        _dumps([adm.ok, adm.refused_by, adm.retry_after_s, [[k, *c] for k, c in adm.counters.items()]])
                    )
                elif op == "s":
                    mb.settle_now(m[1], m[2], m[3], m[4], m[5])
                elif op == "u":
                    out.append(_dumps(mb.usage_now(m[1])))
        except (ValueError, IndexError, TypeError) as e:
            log.warning("quota keeper: dropped a worker's connection: %s", e)
            self.transport.close()
            return
        if out:
            self.transport.write(b"".join(out))


async def _keep(path: str) -> None:
    mb = MemoryBackend()
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: _Keeper(mb), path)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def start_keeper(path: str | None = None) -> tuple[int, str]:
    """Fork the keeper; returns its pid and socket path (a fresh private directory unless given)."""
    if path is None:
        path = os.path.join(tempfile.mkdtemp(prefix="guard-quota-"), "keeper.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    master = os.getpid()
    pid = os.fork()
    if pid:
        return pid, path
    code = 1
    try:  # the child: ignore the supervisor's SIGHUP/SIGINT (it forwards SIGTERM), die with it
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from guard.procs import die_with_parent

        die_with_parent(master)
        asyncio.run(_keep(path))
        code = 0
    except BaseException:
        log.exception("quota keeper failed")
    finally:
        sys.stderr.flush()
        os._exit(code)


def wait_ready(path: str, timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.005)


# --- a worker's client -------------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """A worker's connection to the keeper: answers come in the order of the calls that wait for one."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if b"\n" not in buf:
            self.buf = buf
            return
        *lines, self.buf = buf.split(b"\n")
        waiting = self.waiting
        for line in lines:
            if not waiting:
                self.transport.close()  # an answer nobody asked for: out of step, start again
                return
            fut = waiting.popleft()
            if not fut.done():  # a caller past its deadline has gone; its answer is dropped
                fut.set_result(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend._lost(self)
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(self.backend._fail("connection lost"))


class LocalBackend:
    name = "memory"

    def __init__(self, path: str, timeout_s: float) -> None:
        self.path, self.timeout_s = path, timeout_s
        self._conn: _Conn | None = None
        self._lock: asyncio.Lock | None = None
        self._down_until = 0.0
        self._backoff = 0.1
        self._settles: list[bytes] = []  # settlements not sent yet: they go with the next call, or soon
        self._flush_timer: asyncio.TimerHandle | None = None

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._down_until

    def _flush(self) -> None:
        self._flush_timer = None
        if self._settles and self._conn is not None:
            self._conn.transport.write(b"".join(self._settles))
        self._settles.clear()

    def _fail(self, why: str) -> BackendDown:
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(5.0, self._backoff * 2)
        return BackendDown(f"quota keeper: {why}")

    def _lost(self, conn: _Conn) -> None:
        if self._conn is conn:
            self._conn = None

    async def _connect(self) -> _Conn:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is not None:
                return self._conn
            if time.monotonic() < self._down_until:
                raise BackendDown("quota keeper unreachable (backing off)")
            loop = asyncio.get_running_loop()
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_unix_connection(lambda: _Conn(self), self.path), self.timeout_s
                )
            except (OSError, TimeoutError) as e:
                raise self._fail(f"cannot connect ({e.__class__.__name__})") from None
            self._backoff = 0.1
            self._conn = conn
            return conn

    async def _call(self, msg: list[Any], answer: bool = True) -> Any:
        conn = self._conn or await self._connect()
        loop = asyncio.get_running_loop()
        if not answer:  # a settlement: sent with the next call, or within SETTLE_DELAY_S (one send, not two)
            self._settles.append(_dumps(msg))
            if self._flush_timer is None:
                self._flush_timer = loop.call_later(SETTLE_DELAY_S, self._flush)
            return None
        if self._settles:
            self._settles.append(_dumps(msg))
            conn.transport.write(b"".join(self._settles))
            self._settles.clear()
        else:
            conn.transport.write(_dumps(msg))
        fut: asyncio.Future[bytes] = loop.create_future()
        conn.waiting.append(fut)
        timer = loop.call_later(self.timeout_s, self._expire, fut)
        try:
            return json.loads(await fut)
        finally:
            timer.cancel()

    def _expire(self, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            fut.set_exception(self._fail("no answer within the deadline"))

    async def admit(
        self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str, lease_s: float, label: str
    ) -> Admission:
        ok, refused, retry, counters = await self._call(["a", key, tier, rates, slots, ticket, lease_s, label])
        return Admission(ok, refused, retry, {k: CounterState(lim, rem, reset) for k, lim, rem, reset in counters})

    async def settle(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str) -> None:
        await self._call(["s", key, tier, rates, slots, ticket], answer=False)

    async def usage(self, key: str | None) -> list[tuple[str, str, str, float]]:
        return [tuple(r) for r in await self._call(["u", key])]

    async def close(self) -> None:
        self._flush()
        if self._conn is not None:
            self._conn.transport.close()
            self._conn = None
