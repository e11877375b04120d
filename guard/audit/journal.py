"""Journal: the append-only, hash-chained audit log of one writer (one chain per process), a Merkle log whose
checkpoints are signed (guard.audit.logtree).

Events are sealed in the caller's thread (so ``seq`` follows call order) and handed to a writer thread
that writes whole batches and fsyncs once per batch (group commit). ``append`` resolves after the fsync
that covers its event (durability ``fsync``) or at once with the fsync due within ``batch_window_ms``
(durability ``batch``). ``append(event, wait=False)`` (Guard's ``exchange.completed``, sent after the
answer) resolves at once in either mode: the event goes out with the next group commit that something
waits for, and at the latest ``batch_window_ms`` after it was sealed, so it costs no fsync of its own. A
failed write rolls the chain back to its last durable event, fails every event not yet durable with
JournalError and marks the journal unhealthy. Events whose answers were already released (durability
``batch``, ``wait=False`` completions) are never rolled back: they are kept, in order, and written first
when the disk takes writes again. While unhealthy every waited-for append is refused (JournalError: Guard
answers 503) and the writer retries on its own every ``_RETRY_S``: a new segment, a recovery checkpoint,
the kept events, fsync, then a probe of ``_PROBE_BYTES`` allocated and fsync'd on the same file system;
only then is the journal healthy again (a few bytes freed by the failed write do not count as recovery).
That part lives in guard.audit.recovery; the writer thread in guard.audit.group_commit.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from guard import telemetry as tm
from guard.audit import event as ev
from guard.audit import layout
from guard.audit.group_commit import GroupCommit
from guard.audit.logtree import Tree, newest_note, noted_size
from guard.audit.recovery import _MAX_HELD, JournalError, Pending, Recovering, _throttled
from guard.audit.seal import GENESIS, Signer, load_or_create_signer, normalize_floats
from guard.audit.settings import AuditSettings
from guard.audit.waiters import _Waiter


def default_writer_id(worker: int | None = None, template: str = "{host}-w{worker}") -> str:
    """The chain id for a worker: ``template`` with {host}, {worker}, {pid}; without a worker index the
    process id stands in (a restart then starts a new chain)."""
    host = socket.gethostname().split(".")[0] or "guard"
    if worker is None and "{worker}" in template:
        template = template.replace("w{worker}", "{pid}").replace("{worker}", "{pid}")
    return template.format(host=host, worker=worker, pid=os.getpid())


class Journal(GroupCommit, Recovering, Tree):
    def __init__(
        self,
        settings: AuditSettings,
        writer_id: str | None = None,
        *,
        worker: int | None = None,
        signer: Signer | None = None,
    ) -> None:
        """Open (or continue) chain ``writer_id``, by default ``settings.writer_id`` filled in for ``worker``.

        Raises JournalError when the directory cannot be written or another process holds the chain.
        """
        self.settings = settings
        self.fsync_s: float | None = None  # duration of the last fsync (the sealer process reports it)
        self.root = Path(settings.dir)
        self.chain = layout.safe_chain(writer_id or default_writer_id(worker, settings.writer_id))
        self.dir = layout.chains_dir(self.root) / self.chain
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[Pending] = []  # line, seq, type, waiter, event, leaf hash
        self._held: list[dict[str, Any]] = []  # released events a failed write gave back: written first on recovery
        self._retry_at = 0.0
        self._final = True
        self._urgent = False  # something in _pending waits for its fsync (durability fsync): write it now
        self._since = 0.0  # when the oldest event in _pending was sealed (the rest wait batch_window_ms)
        self._fd = -1
        self._seg_size = 0
        self._seg_opened = 0.0
        self._healthy = False
        self._closing = False
        self._broken: dict[str, Any] | None = None
        self._kicks: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()  # loops with a wake-up queued
        self._seq, self._prev = 0, GENESIS  # chain state: set from disk by _resume
        self._durable: tuple[int, str] = (0, GENESIS)
        self._since_cp, self._cp_time = 0, 0.0
        self._last_cp = self._durable_cp = ""
        self._seg_path = Path()
        self._lock_fd = -1
        try:
            self._open(signer)
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name=f"audit-journal-{self.chain}", daemon=True)
        self._thread.start()

    def _open(self, signer: Signer | None) -> None:
        settings = self.settings
        try:
            self.signer = signer or load_or_create_signer(settings.signing_key, self.root)
            self._tree_open(self.signer.private)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._take_lock()
            self._publish_key()
            self._resume()
        except OSError as e:
            tm.AUDIT_WRITE_FAILURES.inc()
            raise JournalError(f"audit journal {self.dir}: {e.strerror or e}") from None
        except ValueError as e:  # an unreadable or non-Ed25519 signing key (never echoes the key itself)
            raise JournalError(f"audit signing key {settings.signing_key}: {type(e).__name__}") from None

    def _release(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    # --- public API ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy and not self._closing

    @property
    def seq(self) -> int:
        return self._seq

    async def append(self, event: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        """Seal ``event`` and return it once durable, or at once with ``wait=False`` or durability ``batch``
        (see the module docstring). Raises JournalError."""
        loop = asyncio.get_running_loop()
        if not wait or self.settings.durability == "batch":
            return self._submit(event, None, lazy=not wait)
        fut = loop.create_future()
        sealed = self._submit(event, (loop, fut), notify=False)
        if loop not in self._kicks:  # wake the writer once per loop iteration, not once per event
            self._kicks.add(loop)
            loop.call_soon(self._kick, loop)
        await fut
        return sealed

    async def append_facts(self, facts: tuple[Any, ...], wait: bool = True) -> dict[str, Any]:
        """``append`` for an exchange's facts (guard.audit.event ``*_facts``): the event is assembled here."""
        return await self.append(ev.from_facts(facts), wait)

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._kicks.discard(loop)
        with self._cond:
            self._cond.notify()

    def append_sync(self, event: dict[str, Any], timeout: float | None = 30.0) -> dict[str, Any]:
        """Blocking append for start-up, shutdown and tools; always waits for the fsync."""
        w = _Waiter()
        sealed = self._submit(event, w)
        if not w.done.wait(timeout):
            raise JournalError("audit journal: timed out waiting for fsync")
        if w.error:
            raise w.error
        return sealed

    def close(self, final: bool = True) -> None:
        """Seal a final checkpoint, flush everything, stop the writer, release the chain.

        ``final=False`` flushes without the final checkpoint: the chain reads as stopped uncleanly, and the
        next writer of it starts with a recovery checkpoint (the sealer process does this when its worker died).
        """
        with self._cond:
            if self._closing:
                return
            self._final = final
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._release()

    # --- sealing (caller threads, under the condition's lock) ------------------------------------------

    def _submit(self, event: dict[str, Any], waiter: Any, notify: bool = True, lazy: bool = False) -> dict[str, Any]:
        """Seal ``event``; a ``waiter`` (durability fsync) makes the pending batch urgent. The writer is told
        of urgent batches (``notify``) and of the first event of a batch (it then sleeps until its window).
        While the journal is unhealthy a ``lazy`` event (its answer is out) is kept for the recovery write;
        any other is refused with JournalError."""
        with self._cond:
            if self._closing:
                raise JournalError("audit journal is closed")
            if not self._healthy:
                if not lazy:
                    raise JournalError(f"audit journal unavailable: {(self._broken or {}).get('error', 'recovering')}")
                if len(self._held) < _MAX_HELD:
                    self._held.append(event)
                else:
                    tm.AUDIT_WRITE_FAILURES.inc()
                    _throttled.error(
                        "held-full", "audit journal: an answered event was dropped (%d kept already)", len(self._held)
                    )
                return event
            first = not self._pending
            sealed = self._seal(event, waiter)
            if first:
                self._since = time.monotonic()
            if self._since_cp >= self.settings.checkpoint_events:
                self._seal_checkpoint("count")
            urgent = waiter is not None and self.settings.durability == "fsync"
            if urgent:
                self._urgent = True
            if notify and (urgent or first):
                self._cond.notify()
        return sealed

    def _seal(self, event: dict[str, Any], waiter: Any) -> dict[str, Any]:
        seq = self._seq + 1
        try:
            line, h, leaf = self.signer.seal_event(event, self.chain, seq, self._prev)
        except (TypeError, ValueError, UnicodeError):
            event = normalize_floats(ev.plain(event))
            line, h, leaf = self.signer.seal_event(event, self.chain, seq, self._prev)
        self._seq, self._prev = seq, h
        self._since_cp += 1
        self.tree.append(leaf)
        self._pending.append((line, seq, event["type"], waiter, event, leaf))
        return event

    def _seal_checkpoint(self, reason: str, final: bool = False, recovery: dict[str, Any] | None = None) -> None:
        """Seal an ``audit.checkpoint`` event and sign the tree that ends with it (stored once it is durable)."""
        cp = ev.checkpoint(self.chain, self._seq, self._prev, self._since_cp, self._last_cp, reason, final, recovery)
        self._seal(cp, None)
        self._tree_checkpoint(self._seq)
        self._last_cp, self._since_cp, self._cp_time = self._prev, 0, time.monotonic()

    def checkpoint_now(self, timeout: float = 10.0) -> int:
        """Seal a checkpoint now unless the last event already is one, and wait until it is durable and its
        note stored (a receipt asked for a leaf no checkpoint covers yet). Returns the tree size it signs."""
        w = _Waiter()
        with self._cond:
            if not self._healthy or self._closing:
                raise JournalError("audit journal unavailable")
            sealed = bool(self._since_cp or not self._last_cp)
            if sealed:
                self._seal_checkpoint("receipt")
                self._pending[-1] = (*self._pending[-1][:3], w, *self._pending[-1][4:])  # our own entry
                self._urgent = True
                self._cond.notify()
            size = self._seq
        deadline = time.monotonic() + timeout
        if sealed:
            ok = w.done.wait(timeout) and w.error is None
        else:
            while self._durable[0] < size and time.monotonic() < deadline:
                time.sleep(0.005)
            ok = self._durable[0] >= size
        if not ok:
            raise JournalError("audit journal: checkpoint not written")
        return size

    # --- opening, resuming, recovering ----------------------------------------------------------------

    def _take_lock(self) -> int:
        fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(f"audit chain {self.chain!r} is being written by another process") from None
        return fd

    def _publish_key(self) -> None:
        """Public key beside the journal for convenience; verify does not trust it by default."""
        keys = self.root / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        pub = keys / f"{self.signer.key_id}.pub.pem"
        if not pub.exists():
            pub.write_bytes(self.signer.public_pem())

    def _resume(self) -> None:
        """Continue the chain after the last intact event on disk; a new segment is always started."""
        last, torn = layout.last_intact(layout.segments(self.root, self.chain))
        self._seq, self._prev = (last["seq"], last["hash"]) if last else (0, GENESIS)
        self._tree_resume(self._seq)
        self._durable = (self._seq, self._prev)
        self._since_cp, self._cp_time = 0, time.monotonic()
        self._last_cp = last["hash"] if last and last["type"] == "audit.checkpoint" else ""
        self._durable_cp = self._last_cp
        head = layout.read_head(self.root, self.chain)
        noted = noted_size(self.root, self.chain)
        promised = max(int((head or {}).get("seq", 0)), noted)
        if promised > self._seq:  # events a signed checkpoint (or head record) covered are gone: say so
            torn["head_seq_missing"] = promised
        if self._seq and head is None and newest_note(self.root, self.chain) is None:  # nothing signed: say so
            torn["checkpoints_missing"] = True
        self._tree_sign_now()
        self._open_segment(self._seq + 1)
        self._healthy = True
        clean = last and last["type"] == "audit.checkpoint" and last.get("checkpoint", {}).get("final")
        if last and (not clean or torn.get("checkpoints_missing")):
            self._seal_checkpoint("recovery", recovery={"unclean_stop": True, **torn})

    def _open_segment(self, first_seq: int) -> None:
        path, n = self.dir / layout.segment_name(first_seq), 0
        while path.exists() and path.stat().st_size:  # never append after bytes we could not remove
            n += 1
            path = self.dir / layout.segment_name(first_seq, n)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o640)
        self._seg_path = path
        self._seg_size = os.fstat(self._fd).st_size
        self._seg_opened = time.monotonic()
