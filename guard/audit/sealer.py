"""Sealing in a companion process: the journal of a Guard worker, run beside it.

Sealing an event (RFC 8785 form, SHA-256, Ed25519) costs ~45 us of CPU and holds the GIL, so a journal thread
cannot run it in parallel with the event loop. ``ProcessJournal`` keeps the ``Journal`` API (``append``,
``append_sync``, ``healthy``, ``close``) but hands each event, as plain JSON, to a sealer process that owns
the chain (an ordinary ``Journal``: same files, same group commit, same failure handling). The worker's
loop then pays only for taking an exchange's facts and encoding them; assembling the event, sealing, writing
and fsync run on another core.

Durability is unchanged: with ``durability: fsync`` ``append`` resolves only when the sealer reports the
fsync that covers the event; a failed write fails those events with JournalError (the request is refused
with 503). If the sealer process dies, every event not yet acknowledged fails, appends fail until a new
sealer has resumed the chain (recovery checkpoint, as after a crash), and the failure is counted. A new sealer
is started at once by a supervising thread (not by the next request), then with backoff while starting fails.

The wire format is in guard.audit.sealer_wire; the sealer process itself in guard.audit.sealer_process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from guard import telemetry as tm
from guard.audit import layout
from guard.audit.journal import JournalError, default_writer_id
from guard.audit.sealer_spawn import SealerProcesses, _reap
from guard.audit.sealer_wire import (
    _CHECKPOINT_NOW,
    _CLOSE,
    _EVENT,
    _LAZY,
    HDR,
    LEN,
    _ranges,
)
from guard.audit.settings import AuditSettings
from guard.audit.waiters import _Waiter, _wake
from guard.ratelog import Throttled

log = logging.getLogger("guard.audit")
_throttled = Throttled(log)


class ProcessJournal(SealerProcesses):
    """The ``Journal`` API with sealing and writing in a sealer process (one per worker, one chain each).

    Acknowledgements are read by the worker's event loop (a reader on the socket), so a durable event wakes
    its request without a thread hand-off; synchronous callers read the socket themselves when no loop can.
    """

    def __init__(self, settings: AuditSettings, writer_id: str | None = None, *, worker: int | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.dir)
        self.chain = layout.safe_chain(writer_id or default_writer_id(worker, settings.writer_id))
        self.dir = layout.chains_dir(self.root) / self.chain
        self._fsync = settings.durability == "fsync"
        self._lock = threading.Lock()  # frame order on the socket; the waiters table
        self._rlock = threading.Lock()  # one reader of the socket at a time
        self._waiters: dict[int, Any] = {}
        self._seqs: dict[int, int] = {}  # waited frame -> the seq its event got (for the receipt header)
        self._out: list[bytes] = []
        self._flush_due = False
        self._next = 0
        self._alive = False
        self._healthy = False
        self._closing = False
        self._closed = threading.Event()
        self._restarting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._rbuf = bytearray()
        self.seq = 0
        self.key_id = ""
        self._standby: tuple[socket.socket, subprocess.Popen[bytes]] | None = None
        self._sb_lock = threading.Lock()
        self._spawn()
        threading.Thread(target=self._standby_ready, name="audit-sealer-standby", daemon=True).start()

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read acknowledgements on ``loop`` (called on its thread, by the first append there)."""
        self._loop, self._loop_thread = loop, threading.get_ident()
        loop.add_reader(self._sock.fileno(), self._on_readable, self._sock)

    def _on_readable(self, sock: socket.socket) -> None:
        if sock is not self._sock or not self._rlock.acquire(blocking=False):
            return  # an old socket (a new sealer took over), or a synchronous caller is reading right now
        try:
            self._take(sock, socket.MSG_DONTWAIT)
        finally:
            self._rlock.release()

    def _take(self, sock: socket.socket, flags: int) -> None:
        """Read what the socket holds (under _rlock) and act on every whole message."""
        try:
            data = sock.recv(1 << 20, flags)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._gone(sock)
            return
        buf = self._rbuf
        buf += data
        pos, n, size = 0, len(buf), LEN.size
        while n - pos >= size:
            length = LEN.unpack_from(buf, pos)[0]
            if n - pos - size < length:
                break
            self._dispatch(json.loads(bytes(buf[pos + size : pos + size + length])))
            pos += size + length
        del buf[:pos]

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "ok" in msg:
            self.seq = msg["seq"]
            for i, seq in msg.get("seqs", ()):
                self._seqs[i] = seq
            self._healthy = msg.get("healthy", True)
            if "fsync" in msg:
                tm.AUDIT_FSYNC_SECONDS.observe(msg["fsync"])
            for typ, n in msg.get("n", {}).items():
                tm.AUDIT_EVENTS.labels(typ).inc(n)
            self._settle(msg["ok"], None)
        elif "fail" in msg:
            self._healthy = False
            tm.AUDIT_WRITE_FAILURES.inc()
            self._settle(msg["fail"], JournalError(msg.get("error") or "audit journal write failed"))
        elif "closed" in msg:
            self.seq = msg.get("seq", self.seq)
            self._closed.set()

    def _gone(self, sock: socket.socket) -> None:
        """The sealer closed its end: fail what it did not acknowledge; a new one starts on the next append."""
        with self._lock:
            if sock is not self._sock or not self._alive:
                return
            expected = self._closing
            self._alive = self._healthy = False
            left = sorted(self._waiters)
            loop, proc = self._loop, self._proc
        if not expected:
            tm.AUDIT_WRITE_FAILURES.inc()
            log.error("audit sealer process %d exited (%s); starting a new one", proc.pid, proc.poll())
            self._supervise()
        self._settle(_ranges(left), JournalError("audit sealer process exited"))
        self._closed.set()

        def release() -> None:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(sock.fileno())
            sock.close()

        if loop is None or loop.is_closed() or threading.get_ident() == self._loop_thread:
            release()
        else:
            try:
                loop.call_soon_threadsafe(release)
            except RuntimeError:
                sock.close()
        threading.Thread(target=_reap, args=(proc,), daemon=True).start()

    def _settle(self, ranges: list[list[int]], err: BaseException | None) -> None:
        with self._lock:
            pop = self._waiters.pop
            waiters = [w for a, b in ranges for i in range(a, b + 1) if (w := pop(i, None)) is not None]
        if waiters:
            _wake(waiters, err, self._loop if threading.get_ident() == self._loop_thread else None)

    def _wait(self, done: threading.Event, timeout: float | None) -> bool:
        """Block until ``done``: the loop's reader delivers it if a loop runs on another thread; otherwise
        (no loop yet or any more, or called on the loop's own thread) read the socket here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            loop = self._loop
            if loop is not None and loop.is_running() and threading.get_ident() != self._loop_thread:
                done.wait(left)
                continue
            sock = self._sock
            with self._rlock:
                if done.is_set() or not self._alive:
                    break
                try:
                    ready = select.select([sock], [], [], left)[0]
                except (OSError, ValueError):
                    ready = [sock]
                if ready:
                    self._take(sock, 0)
        return done.is_set()

    def _dead(self) -> JournalError:
        """Called when the sealer is gone: make sure a new one is being started."""
        if not self._closing and not self._restarting:
            self._supervise()
        return JournalError("audit sealer process is not running")

    # --- Journal API -----------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._alive and self._healthy and not self._closing

    @staticmethod
    def _frame(event: dict[str, Any] | tuple[Any, ...]) -> bytes:
        """The event (or an exchange's facts) as marshal data: Guard's events are plain dicts, lists, strings
        and numbers; anything else (a subclass, a foreign object) is made plain first, as the thread journal
        does."""
        try:
            return marshal.dumps(event)
        except ValueError:
            from guard.audit import event as ev

            return marshal.dumps(ev.plain(event))

    async def append(self, event: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        """Hand ``event`` to the sealer; return once durable (``fsync``), at once (``batch``, or
        ``wait=False``: the sealer writes it with the next group commit, within ``batch_window_ms``)."""
        fut, i = self._hand(self._frame(event), wait)
        if fut is not None:
            await fut
            self._seqs.pop(i, None)
        return event

    async def append_facts(self, facts: tuple[Any, ...], wait: bool = True) -> dict[str, Any] | None:
        """``append`` for an exchange's facts (guard.audit.event ``*_facts``): the sealer assembles the event.
        Once durable, ``{"seq": n}`` (the sealer's acknowledgement names it); None when not waited for."""
        fut, i = self._hand(self._frame(facts), wait)
        if fut is None:
            return None
        await fut
        seq = self._seqs.pop(i, None)
        return {"seq": seq} if seq is not None else None

    def _hand(self, data: bytes, wait: bool) -> tuple[asyncio.Future[None] | None, int]:
        """Queue one frame for the sealer; the future to await when the append must wait for its fsync."""
        loop = asyncio.get_running_loop()
        fut = None
        with self._lock:
            if not self._alive or self._closing:
                raise self._dead() if not self._closing else JournalError("audit journal is closed")
            if self._loop is not loop:
                self._attach(loop)
            self._next += 1
            i = self._next
            op = _LAZY  # the answer does not wait: the sealer keeps it even through a failed write
            if wait and (self._fsync or not self._healthy):  # after a failure every record waits: recovery may fail
                op = _EVENT
                fut = loop.create_future()
                self._waiters[i] = (loop, fut)
            self._out += (HDR.pack(len(data), op, i), data)
            if not self._flush_due:
                self._flush_due = True
                loop.call_soon(self._flush)
        return fut, i

    def _flush(self) -> None:
        with self._lock:
            self._send_locked()

    def _send_locked(self) -> None:
        self._flush_due = False
        if not self._out:
            return
        data, self._out = b"".join(self._out), []
        with contextlib.suppress(OSError):  # the reader sees the sealer gone and fails every waiter
            self._sock.sendall(data)

    def append_sync(self, event: dict[str, Any], timeout: float | None = 30.0) -> dict[str, Any]:
        """Blocking append (start-up, shutdown, reload events from threads): always waits for the fsync."""
        data = self._frame(event)
        w = _Waiter()
        with self._lock:
            if not self._alive or self._closing:
                raise self._dead() if not self._closing else JournalError("audit journal is closed")
            self._next += 1
            self._waiters[self._next] = w
            self._out.append(HDR.pack(len(data), _EVENT, self._next) + data)
            self._send_locked()
        if not self._wait(w.done, timeout):
            raise JournalError("audit journal: timed out waiting for fsync")
        if w.error:
            raise w.error
        return event

    def checkpoint_now(self, timeout: float = 10.0) -> int:
        """Have the sealer seal and store a checkpoint now (a receipt asked for a leaf none covers yet); blocks
        until it is durable. Returns the tree size it signs."""
        self.append_sync(_CHECKPOINT_NOW, timeout)
        return self.seq

    def close(self) -> None:
        """Flush everything, let the sealer write its final checkpoint, wait for it to exit."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            alive = self._alive
            if alive:
                self._out.append(HDR.pack(0, _CLOSE, 0))
                self._send_locked()
        self._drop_standby()
        if not alive:
            while self._restarting:
                time.sleep(0.05)
            if self._alive:  # a restart finished meanwhile
                self._closing = False
                self.close()
            return
        self._wait(self._closed, 60.0)
        self._gone(self._sock)


if __name__ == "__main__":
    from guard.audit.sealer_process import _serve

    sys.exit(_serve(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
