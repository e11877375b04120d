"""The sealer process itself (``python -m guard.audit.sealer``): one ``Journal`` run by one thread that reads
the worker's frames, seals them, writes and fsyncs each group and acknowledges it (guard.audit.sealer has the
worker's side, ``ProcessJournal``, and the wire format)."""

from __future__ import annotations

import contextlib
import json
import marshal
import select
import signal
import socket
import time
from typing import Any

from guard import gc_tuning
from guard.audit.event import from_facts
from guard.audit.journal import Journal, JournalError
from guard.audit.sealer_wire import _CHECKPOINT_NOW, _CLOSE, _EVENT, _GO, _LAZY, _LOCK_WAIT_S, HDR, LEN, _ranges
from guard.audit.settings import AuditSettings


class _SealerJournal(Journal):
    """A Journal run by one thread: the sealer's loop reads frames, seals them, writes and fsyncs each group
    (everything that arrived while the previous fsync ran) and acknowledges it, with no thread hand-off.
    Waiters are event numbers."""

    def __init__(self, settings: AuditSettings, chain: str, sock: socket.socket) -> None:
        self._sock = sock
        self._peer_gone = False
        super().__init__(settings, chain)

    def _run(self) -> None:  # no writer thread: serve() writes
        return

    def send(self, msg: dict[str, Any]) -> None:
        """Tell the worker; a worker that is gone (closed its end) must not stop the journal being sealed."""
        if self._peer_gone:
            return
        data = json.dumps(msg, separators=(",", ":")).encode()
        try:
            self._sock.sendall(LEN.pack(len(data)) + data)
        except OSError:
            self._peer_gone = True

    def _settle(  # type: ignore[override]  # a method here, where the journal's is a staticmethod
        self,
        batch: list[tuple[bytes, int, str, Any, dict[str, Any]]],
        err: BaseException | None,
        counts: dict[str, int] | None = None,
    ) -> None:
        ids = [b[3] for b in batch if type(b[3]) is int]
        seqs = [[b[3], b[1]] for b in batch if type(b[3]) is int]
        if err is not None:  # sent even with no range: the worker must stop answering before records are durable
            self.send({"fail": _ranges(ids), "error": str(err)})
            return
        msg: dict[str, Any] = {
            "ok": _ranges(ids),
            "seqs": seqs,
            "seq": self._durable[0],
            "n": counts or {},
            "healthy": self._healthy,
        }
        if self.fsync_s is not None:
            msg["fsync"] = self.fsync_s
        self.send(msg)

    def _recovered(self) -> None:
        self.send({"ok": [], "seq": self._durable[0], "healthy": True})

    def write_pending(self, force: bool = False) -> None:
        """Write the pending batch when it is due (Journal._write_in), or now with ``force``; after a failed
        write, try to recover when that is due."""
        with self._cond:
            recover = not self._healthy and self._recovery_in() == 0
            batch = [] if recover else self._take_batch() if force or self._write_in() == 0 else []
        if recover:
            self._recover_step()
        elif batch:
            self._write(batch)

    def tick(self) -> float:
        """Seal an interval checkpoint when one is due; seconds until that, the pending batch or the next
        recovery attempt is due."""
        with self._cond:
            return min(self._interval_checkpoint(), self._write_in(), self._recovery_in())

    def finish(self, final: bool) -> None:
        with self._cond:
            self._final = final
            self._closing = True
        self._drain()
        self._release()


def _serve(fd: int, chain: str, settings_json: str) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the worker closes us (or its exit does); Ctrl-C must not
    sock = socket.socket(fileno=fd)
    settings = AuditSettings.model_validate_json(settings_json)
    try:
        if sock.recv(1) != _GO:  # in standby until the worker needs us; EOF: not needed after all
            return 0
    except OSError:
        return 0
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            j = _SealerJournal(settings, chain, sock)
            break
        except JournalError as e:
            if "another process" in str(e) and time.monotonic() < deadline:
                time.sleep(0.05)  # the sealer of a worker that just died is still writing what it was sent
                continue
            msg = json.dumps({"error": str(e)}).encode()
            sock.sendall(LEN.pack(len(msg)) + msg)
            return 3
    gc_tuning.tune()
    j.send({"ready": True, "seq": j.seq, "key_id": j.signer.key_id})
    j.write_pending(force=True)  # a recovery checkpoint sealed on resume
    buf = bytearray()
    hs = HDR.size
    loads = marshal.loads
    closing = eof = False
    while not (closing or eof):
        if select.select([sock], [], [], j.tick())[0]:
            while True:  # everything that is there now: one group
                try:
                    data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    eof = True  # the worker is gone: write what it sent, but no final checkpoint
                    break
                buf += data
                if len(data) < (1 << 20):
                    break
            pos, n = 0, len(buf)
            while n - pos >= hs:
                size, op, i = HDR.unpack_from(buf, pos)
                if n - pos - hs < size:
                    break
                if op == _CLOSE:
                    closing = True
                    pos += hs
                    break
                event = loads(buf[pos + hs : pos + hs + size])
                pos += hs + size
                if event == _CHECKPOINT_NOW:  # ProcessJournal.checkpoint_now: the checkpoint event is the one waited
                    with j._cond:
                        j._seal_checkpoint("receipt")
                        j._pending[-1] = (*j._pending[-1][:3], i, *j._pending[-1][4:])
                        j._urgent = True
                    continue
                try:  # an E frame in durability fsync makes the batch urgent (Journal._submit)
                    if type(event) is not dict:  # an exchange's facts (ProcessJournal.append_facts)
                        event = from_facts(event)
                    j._submit(event, i if op == _EVENT else None, notify=False, lazy=op == _LAZY)
                except (ValueError, TypeError) as e:  # facts that are not facts: a bug, refused like a failed write
                    if op == _EVENT:
                        j.send({"fail": [[i, i]], "error": f"unusable exchange record: {e}"})
                except JournalError as e:
                    if op == _EVENT:
                        j.send({"fail": [[i, i]], "error": str(e)})
            del buf[:pos]
        j.write_pending(force=closing or eof)
    j.finish(final=closing)
    with contextlib.suppress(OSError):
        j.send({"closed": True, "seq": j.seq})
    return 0
