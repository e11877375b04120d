"""Starting, standing by and restarting the sealer process of a ``ProcessJournal`` (guard.audit.sealer): a
mixin holding the process side of it."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from guard import telemetry as tm
from guard.audit.recovery import JournalError
from guard.audit.sealer_wire import _GO, _read_message
from guard.ratelog import Throttled

if TYPE_CHECKING:
    from guard.audit.settings import AuditSettings

_START_TIMEOUT_S = 60.0
_RESTART_BACKOFF_S = (0.1, 2.0)  # a sealer that fails to start is tried again after 0.1 s, doubling up to 2 s
log = logging.getLogger("guard.audit")
_throttled = Throttled(log)


class SealerProcesses:
    """The sealer process's life: ``_start`` (a new one, in standby), ``_spawn`` (take the chain), the
    standby, and ``_supervise``/``_respawn`` after it died."""

    settings: AuditSettings
    chain: str
    seq: int
    key_id: str
    _lock: threading.Lock
    _sb_lock: threading.Lock
    _standby: tuple[socket.socket, subprocess.Popen[bytes]] | None
    _closing: bool
    _restarting: bool
    _alive: bool
    _healthy: bool
    _closed: threading.Event
    _sock: socket.socket
    _proc: subprocess.Popen[bytes]
    _rbuf: bytearray
    _loop: Any

    def _start(self) -> tuple[socket.socket, subprocess.Popen[bytes]]:
        """A sealer process that imports what it needs and then waits for ``_GO`` before taking the chain."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}  # metrics come back in acks
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "guard.audit.sealer",
                    str(theirs.fileno()),
                    self.chain,
                    self.settings.model_dump_json(),
                ],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as e:
            ours.close()
            theirs.close()
            raise JournalError(f"audit sealer could not start: {e.strerror or e}") from None
        theirs.close()
        return ours, proc

    def _standby_ready(self) -> None:
        """Start the next sealer now (restart thread): if this one dies it takes over without an interpreter
        start and imports (about a second on a busy 2-core machine, the bulk of a restart)."""
        with self._sb_lock:
            if self._closing or self._standby is not None:
                return
            try:
                self._standby = self._start()
            except JournalError as e:
                _throttled.error("sealer-standby", "audit sealer standby could not start: %s", e)

    def _drop_standby(self) -> None:
        with self._sb_lock:
            sb, self._standby = self._standby, None
        if sb is not None:
            sb[0].close()  # it sees EOF and exits without touching the chain
            threading.Thread(target=_reap, args=(sb[1],), daemon=True).start()

    def _spawn(self) -> None:
        with self._sb_lock:
            sb, self._standby = self._standby, None
        if sb is None or sb[1].poll() is not None:
            if sb is not None:
                sb[0].close()
            sb = self._start()
        ours, proc = sb
        ours.settimeout(_START_TIMEOUT_S)
        try:
            ours.sendall(_GO)
            hello = _read_message(ours)
        except OSError:
            hello = None
        if not hello or "ready" not in hello:
            ours.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            tm.AUDIT_WRITE_FAILURES.inc()
            raise JournalError((hello or {}).get("error") or "audit sealer did not start")
        ours.settimeout(None)
        with self._lock:
            self._sock, self._proc = ours, proc
            self._rbuf = bytearray()
            self._loop = None  # the next append attaches its loop's reader to this socket
            self.seq, self.key_id = int(hello["seq"]), hello["key_id"]
            self._closed.clear()
            self._alive = self._healthy = True

    def _supervise(self) -> None:
        """Start a new sealer now, in a thread of its own (not on the next request)."""
        with self._lock:
            if self._closing or self._restarting:
                return
            self._restarting = True
        threading.Thread(target=self._respawn, name="audit-sealer-restart", daemon=True).start()

    def _respawn(self) -> None:
        delay = 0.0
        try:
            while not self._closing:
                if delay:
                    time.sleep(delay)
                try:
                    self._spawn()
                    self._standby_ready()
                    log.warning(
                        "audit sealer restarted (pid %d, chain %s at seq %d)", self._proc.pid, self.chain, self.seq
                    )
                    return
                except JournalError as e:
                    _throttled.error("sealer-start", "audit sealer could not start: %s", e)
                    delay = min(max(delay * 2, _RESTART_BACKOFF_S[0]), _RESTART_BACKOFF_S[1])
        finally:
            self._restarting = False


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
