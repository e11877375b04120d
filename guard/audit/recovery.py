"""After a failed journal write: the chain rolls back, the events whose answers are out are kept, and the
writer recovers on its own (a new segment, a recovery checkpoint, the kept events, then a probe of real
size) before the journal takes requests again. A mixin of guard.audit.journal.Journal (see its docstring)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard import telemetry as tm
from guard.ratelog import Throttled

if TYPE_CHECKING:
    from guard.audit.settings import AuditSettings

log = logging.getLogger("guard.audit")
_throttled = Throttled(log)
_RETRY_S = 0.05  # while unhealthy, the writer tries to recover this often
_PROBE_BYTES = 1 << 20  # free space a recovery must prove (allocated, fsync'd, removed) before answering again:
# this, segment_max_bytes, or a sixteenth of the file system, whichever is least
_MAX_HELD = 1 << 16  # answered events kept while the disk is full (bounded: new requests are refused meanwhile)

Pending = tuple[bytes, int, str, Any, dict[str, Any], bytes]  # line, seq, type, waiter, event, leaf hash


class JournalError(Exception):
    """The journal cannot make events durable (disk full, permissions, read-only); refuse the request."""


class Recovering:
    """Failure handling of a Journal: ``_fail`` (a write failed), ``_recover_step`` (the writer's retry),
    ``_drain`` (close)."""

    settings: AuditSettings
    chain: str
    dir: Path
    _cond: threading.Condition
    _pending: list[Pending]
    _held: list[dict[str, Any]]
    _healthy: bool
    _closing: bool
    _final: bool
    _retry_at: float
    _broken: dict[str, Any] | None
    _fd: int
    _seg_size: int
    _seg_path: Path
    _seq: int
    _prev: str
    _durable: tuple[int, str]
    _durable_cp: str
    _since_cp: int
    _last_cp: str

    if TYPE_CHECKING:

        def _write(self, batch: list[Pending]) -> bool: ...
        def _take_batch(self) -> list[Pending]: ...
        def _seal(self, event: dict[str, Any], waiter: Any) -> dict[str, Any]: ...
        def _seal_checkpoint(
            self, reason: str, final: bool = False, recovery: dict[str, Any] | None = None
        ) -> None: ...
        def _open_segment(self, first_seq: int) -> None: ...
        def _tree_rollback(self) -> None: ...
        def _settle(
            self, batch: list[Pending], err: BaseException | None, counts: dict[str, int] | None = None
        ) -> None: ...

    def _recovery_in(self) -> float:
        """Seconds until the next recovery attempt (caller holds the lock); infinity when healthy."""
        if self._healthy or self._closing:
            return math.inf
        return max(0.0, self._retry_at - time.monotonic())

    def _recover_step(self, probe: bool = True) -> bool:
        """One recovery attempt after a failed write (writer thread): a new segment starting with a recovery
        checkpoint, the kept events, fsync; then (``probe``) proof that a write of real size fits. Healthy
        again only when all of it succeeded."""
        with self._cond:
            if self._healthy:
                return True
            self._retry_at = time.monotonic() + _RETRY_S
            try:
                if self._fd < 0:
                    self._open_segment(self._seq + 1)
                    self._seal_checkpoint("recovery", recovery={"write_error": True, **(self._broken or {})})
            except OSError as e:
                self._failed_attempt(e)
                return False
            held, self._held = self._held, []
            for event in held:
                self._seal(event, None)
            batch = self._take_batch()
        if batch and not self._write(batch):
            return False
        if probe:
            err = self._probe()
            if err is not None:
                self._failed_attempt(err)
                return False
        with self._cond:
            self._healthy = True
        log.warning("audit journal writable again (chain %s at seq %d)", self.chain, self._durable[0])
        self._recovered()
        return True

    def _failed_attempt(self, err: OSError) -> None:
        tm.AUDIT_WRITE_FAILURES.inc()
        _throttled.error("write", "audit journal %s: write failed: %s", self.chain, os.strerror(err.errno or 5))
        self._settle([], JournalError(f"audit journal write failed: {os.strerror(err.errno or 5)}"))

    def _recovered(self) -> None:
        """Hook: the journal is healthy again (the sealer process tells its worker)."""

    def _probe(self) -> OSError | None:
        """Allocate and fsync ``_PROBE_BYTES`` in a file beside the chain, then remove it: the disk has room
        for real traffic again, not just for the few bytes a failed write freed."""
        path = self.dir / f".probe-{os.getpid()}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                st = os.fstatvfs(fd)  # on a small file system (tests, tmpfs) a sixteenth of it
                size = min(_PROBE_BYTES, self.settings.segment_max_bytes, st.f_blocks * st.f_frsize // 16)
                os.posix_fallocate(fd, 0, max(size, 4096))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            return e
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        return None

    def _drain(self) -> None:
        """At close (writer thread): write what is pending, one last recovery attempt for kept events, then
        the final checkpoint when the chain is writable."""
        with self._cond:
            batch = self._take_batch()
        if batch:
            self._write(batch)
        if not self._healthy:
            self._recover_step(probe=False)
        with self._cond:
            if self._healthy and self._final:
                self._seal_checkpoint("close", final=True)
            batch = self._take_batch()
        if batch:
            self._write(batch)
        if self._held:
            log.error(
                "audit journal closed with %d answered events it could not write: %s",
                len(self._held),
                (self._broken or {}).get("error", "write failed"),
            )

    def _fail(self, batch: list[Pending], err: OSError) -> None:
        """Roll the chain back to its last durable event. Events someone waits for fail (their requests are
        refused); events whose answers are out are kept, in order, for the recovery write (checkpoints are
        sealed anew there)."""
        tm.AUDIT_WRITE_FAILURES.inc()
        _throttled.error("write", "audit journal %s: write failed: %s", self.chain, os.strerror(err.errno or 5))
        with self._cond:
            failed = batch + self._take_batch()
            self._seq, self._prev = self._durable
            self._tree_rollback()
            self._since_cp, self._last_cp = 0, self._durable_cp
            self._healthy = False
            self._retry_at = time.monotonic() + _RETRY_S
            self._held[:0] = [b[4] for b in failed if b[3] is None and b[2] != "audit.checkpoint"]
            waited = [b for b in failed if b[3] is not None]
            self._broken = {"segment": self._seg_path.name, "error": os.strerror(err.errno or 5)}
            if self._fd >= 0:
                try:  # drop our own unacknowledged partial bytes; if impossible, the recovery checkpoint says so
                    os.ftruncate(self._fd, self._seg_size)
                except OSError:
                    self._broken["torn_after_bytes"] = self._seg_size
                os.close(self._fd)
                self._fd = -1
            if self._seg_size == 0:
                with contextlib.suppress(OSError):
                    self._seg_path.unlink()
        self._settle(waited, JournalError(f"audit journal write failed: {os.strerror(err.errno or 5)}"))
