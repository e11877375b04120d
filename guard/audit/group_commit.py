"""The journal's writer thread (group commit): it sleeps until the pending batch is due (something waits for
its fsync, or its ``batch_window_ms`` has closed), writes the whole batch in one write, fsyncs once, stores
the checkpoints the batch makes durable and wakes the batch's waiters; it seals ``interval`` checkpoints and
runs the recovery steps while the journal is unhealthy. A mixin of guard.audit.journal.Journal (see its
docstring); the sealer process (guard.audit.sealer_process) drives the same methods without the thread."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard import telemetry as tm
from guard.audit.recovery import Pending, _throttled
from guard.audit.waiters import _hash_of, _wake

if TYPE_CHECKING:
    from guard.audit.settings import AuditSettings


class GroupCommit:
    """``_run`` (the writer thread), ``_write`` (one batch), ``_write_in`` (when the batch is due)."""

    settings: AuditSettings
    chain: str
    fsync_s: float | None
    _cond: threading.Condition
    _pending: list[Pending]
    _urgent: bool
    _since: float
    _healthy: bool
    _closing: bool
    _fd: int
    _seg_size: int
    _seg_opened: float
    _seg_path: Path
    _durable: tuple[int, str]
    _durable_cp: str
    _since_cp: int
    _cp_time: float

    if TYPE_CHECKING:

        def _recovery_in(self) -> float: ...
        def _recover_step(self, probe: bool = True) -> bool: ...
        def _drain(self) -> None: ...
        def _fail(self, batch: list[Pending], err: OSError) -> None: ...
        def _open_segment(self, first_seq: int) -> None: ...
        def _seal_checkpoint(
            self, reason: str, final: bool = False, recovery: dict[str, Any] | None = None
        ) -> None: ...
        def _tree_durable(self, leaves: list[bytes], checkpoint_seqs: list[int]) -> None: ...

    def _write_in(self) -> float:
        """Seconds until the pending batch must be written (caller holds the lock): 0 when something waits
        for it or its window has closed, the rest of ``batch_window_ms`` from its oldest event when nothing
        waits, infinity when nothing is pending. The one rule for the writer thread and the sealer process."""
        if not self._pending:
            return math.inf
        if self._urgent:
            return 0.0
        return max(0.0, self._since + self.settings.batch_window_ms / 1000.0 - time.monotonic())

    def _take_batch(self) -> list[Pending]:
        batch, self._pending, self._urgent = self._pending, [], False
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    due = self._interval_checkpoint()
                    left = self._write_in()
                    retry = self._recovery_in()
                    if self._closing or left == 0 or retry == 0:
                        break
                    self._cond.wait(min(due, left, retry))
                closing = self._closing
                recover = not closing and not self._healthy
                batch = [] if closing or recover else self._take_batch()
            if closing:
                self._drain()
                return
            if recover:
                self._recover_step()
            elif batch:
                self._write(batch)

    def _interval_checkpoint(self) -> float:
        """Seal an ``interval`` checkpoint if one is due (caller holds the lock); seconds until the next."""
        s = self.settings
        due = s.checkpoint_seconds - (time.monotonic() - self._cp_time)
        if due <= 0:
            if self._since_cp and self._healthy and not self._closing:
                self._seal_checkpoint("interval")
            else:
                self._cp_time = time.monotonic()
            due = s.checkpoint_seconds
        return due

    def _write(self, batch: list[Pending]) -> bool:
        """Write and fsync ``batch``; False (and the journal unhealthy) when that failed."""
        try:
            if self._fd < 0:
                raise OSError(5, "journal segment is not open")
            s = self.settings
            due = self._seg_size >= s.segment_max_bytes or time.monotonic() - self._seg_opened >= s.segment_max_seconds
            if due and self._seg_size:
                os.close(self._fd)
                self._fd = -1
                self._open_segment(batch[0][1])
            data = b"".join(b[0] for b in batch)
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            t0 = time.perf_counter()
            os.fdatasync(self._fd)
            self.fsync_s = time.perf_counter() - t0
            tm.AUDIT_FSYNC_SECONDS.observe(self.fsync_s)
        except OSError as e:
            self._fail(batch, e)
            return False
        self._seg_size += len(data)
        self._durable = (batch[-1][1], _hash_of(batch[-1][0]))
        counts: dict[str, int] = {}
        for b in batch:
            counts[b[2]] = counts.get(b[2], 0) + 1
        cps = [b[1] for b in batch if b[2] == "audit.checkpoint"] if "audit.checkpoint" in counts else []
        if cps:
            self._durable_cp = next(_hash_of(b[0]) for b in reversed(batch) if b[2] == "audit.checkpoint")
        try:  # the stored checkpoints only ever lag the chain: written after it is durable
            self._tree_durable([b[5] for b in batch], cps)
        except OSError as e:
            _throttled.error(
                "head", "audit journal %s: checkpoint not stored: %s", self.chain, os.strerror(e.errno or 5)
            )
        self._settle(batch, None, counts)
        for typ, n in counts.items():
            tm.AUDIT_EVENTS.labels(typ).inc(n)
        return True

    @staticmethod
    def _settle(
        batch: list[Pending],
        err: BaseException | None,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Wake the batch's waiters (``counts``: events written by type, when it was written)."""
        _wake([b[3] for b in batch if b[3] is not None], err)
