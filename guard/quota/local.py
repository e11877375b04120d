"""The memory backend shared by the workers of one host: a keeper process owns the counters.

With ``workers > 1`` and ``backend: memory``, the supervisor (guard.serve) forks a keeper before the
workers: one process running ``MemoryBackend`` behind a unix socket in a private directory (mode 0700). Each
worker's ``LocalBackend`` sends it the same calls the in-process backend takes, one JSON line each, on one
connection per worker. The keeper handles one line at a time, so check-and-charge stays atomic across
workers, as it is within one process. Admission and ``usage`` wait for the keeper's answer (one local round
trip); settlement does not (the keeper applies a connection's lines in order, so a later admission of the
same worker always sees it).

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


def _dumps(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode() + b"\n"


# --- the keeper ------------------------------------------------------------------------------------------

async def _connection(mb: MemoryBackend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            m = json.loads(line)
            op = m[0]
            if op == "a":
                adm = await mb.admit(m[1], m[2], m[3], m[4], m[5], m[6], m[7])
                writer.write(_dumps([adm.ok, adm.refused_by, adm.retry_after_s,
                                     [[k, c.limit, c.remaining, c.reset_s] for k, c in adm.counters.items()]]))
            elif op == "s":
                await mb.settle(m[1], m[2], m[3], m[4], m[5])
            elif op == "u":
                writer.write(_dumps(await mb.usage(m[1])))
    except (ConnectionError, ValueError, IndexError, TypeError) as e:
        log.warning("quota keeper: dropped a worker's connection: %s", e)
    finally:
        writer.close()


async def _keep(path: str) -> None:
    mb = MemoryBackend()
    server = await asyncio.start_unix_server(lambda r, w: _connection(mb, r, w), path, limit=_LIMIT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
        from guard.serve import _die_with_parent

        _die_with_parent(master)
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

class LocalBackend:
    name = "memory"

    def __init__(self, path: str, timeout_s: float) -> None:
        self.path, self.timeout_s = path, timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._lock: asyncio.Lock | None = None
        self._down_until = 0.0
        self._backoff = 0.1
        self._reader_task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._down_until

    def _fail(self, why: str) -> BackendDown:
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(5.0, self._backoff * 2)
        return BackendDown(f"quota keeper: {why}")

    async def _connect(self) -> asyncio.StreamWriter:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._writer is not None:
                return self._writer
            if time.monotonic() < self._down_until:
                raise BackendDown("quota keeper unreachable (backing off)")
            try:
                r, w = await asyncio.wait_for(asyncio.open_unix_connection(self.path, limit=_LIMIT), self.timeout_s)
            except (TimeoutError, OSError) as e:
                raise self._fail(f"cannot connect ({e.__class__.__name__})") from None
            self._backoff = 0.1
            self._writer = w
            self._reader_task = asyncio.ensure_future(self._read(r, w))
            return w

    async def _read(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        waiting = self._waiting
        try:
            while line := await r.readline():
                fut = waiting.popleft()
                if not fut.done():  # a caller past its deadline has gone; the answer is dropped
                    fut.set_result(line)
        except (ConnectionError, ValueError, IndexError):
            pass
        if self._writer is w:
            self._writer = None
        w.close()
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_exception(self._fail("connection lost"))

    async def _call(self, msg: list[Any], answer: bool = True) -> Any:
        w = self._writer or await self._connect()
        w.write(_dumps(msg))
        if not answer:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(fut)
        timer = loop.call_later(self.timeout_s, self._expire, fut)
        try:
            return json.loads(await fut)
        finally:
            timer.cancel()

    def _expire(self, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            fut.set_exception(self._fail("no answer within the deadline"))

    async def admit(self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str, lease_s: float,
                    label: str) -> Admission:
        ok, refused, retry, counters = await self._call(["a", key, tier, rates, slots, ticket, lease_s, label])
        return Admission(ok, refused, retry, {k: CounterState(lim, rem, reset) for k, lim, rem, reset in counters})

    async def settle(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str) -> None:
        await self._call(["s", key, tier, rates, slots, ticket], answer=False)

    async def usage(self, key: str | None) -> list[tuple[str, str, str, float]]:
        return [tuple(r) for r in await self._call(["u", key])]  # type: ignore[misc]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
