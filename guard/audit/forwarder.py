"""Forwarder: reads the journal files and delivers every event to each sink, at least once.

One thread per sink, never on the request path. Each sink has a cursor (per chain: segment, byte offset,
seq) persisted in ``<audit.dir>/cursors/<sink>.json`` and advanced only after the sink acknowledged the
events; a failure rewinds the reader to the cursor and retries with exponential backoff, so an outage grows
``guard_audit_sink_lag_events`` and loses nothing. Syslog has no acknowledgement: its cursor trails by
``replay_window_s`` and everything sent since is sent again after a reconnect (duplicates carry the same id).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import IO, Any

from guard import telemetry as tm
from guard.audit import layout
from guard.audit.settings import AuditSettings, SinkSettings
from guard.audit.sinks import FileSink, Sink, SplunkHEC, Syslog, Webhook

log = logging.getLogger("guard.audit.forwarder")
Position = dict[str, dict[str, Any]]  # chain -> {"segment": name, "offset": int, "seq": int}


def make_sink(s: SinkSettings) -> Sink:
    """The sink a configuration names (RELP builds on the syslog sink, so it is chosen here, above both)."""
    if s.type == "relp":
        from guard.audit.relp import Relp

        return Relp(s)
    if s.type == "otlp":  # imported only when configured: the OpenTelemetry exporter is a large import
        from guard.audit.otlp import OtlpLogs

        return OtlpLogs(s)
    kinds: dict[str, type[SplunkHEC] | type[Syslog] | type[Webhook] | type[FileSink]] = {
        "splunk_hec": SplunkHEC,
        "syslog": Syslog,
        "webhook": Webhook,
        "file": FileSink,
    }
    return kinds[s.type](s)


class JournalLine(dict):
    """A parsed event that keeps its journal bytes, so native-JSON sinks send them without re-encoding."""

    __slots__ = ("at", "raw")

    def __init__(self, event: dict[str, Any], raw: bytes, at: tuple[str, str, int, int] | None = None) -> None:
        super().__init__(event)
        self.raw = raw
        self.at = at  # (chain, segment, offset after the line, seq): where the cursor goes once it is delivered


class Reader:
    """Reads complete lines of every chain from a position; a line still being written waits."""

    def __init__(self, root: Path, chains: list[str] | None) -> None:
        self.root, self.fixed = root, chains
        self.pos: Position = {}
        self._files: dict[str, tuple[str, IO[bytes]]] = {}

    def seek(self, pos: Position) -> None:
        self.close()
        self.pos = json.loads(json.dumps(pos))

    def read(self, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chain in self.fixed if self.fixed is not None else layout.chain_names(self.root):
            if len(out) >= limit:
                break
            self._read_chain(chain, limit - len(out), out)
        return out

    def _read_chain(self, chain: str, limit: int, out: list[dict[str, Any]]) -> None:
        segs = layout.segments(self.root, chain)
        if not segs:
            return
        p = self.pos.setdefault(chain, {"segment": segs[0].name, "offset": 0, "seq": 0})
        names = [s.name for s in segs]
        while limit > 0:
            if p["segment"] not in names:  # start, or the segment vanished: next one after it
                later = [n for n in names if n > p["segment"]]
                if not later:
                    return
                p.update(segment=later[0], offset=0)
            f = self._file(chain, self.root / "chains" / chain / p["segment"], p["offset"])
            n = 0
            while n < limit:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # end of file or a line still being written (or torn)
                p["offset"] += len(line)
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if isinstance(e, dict) and isinstance(e.get("seq"), int) and e["seq"] > p["seq"]:
                    p["seq"] = e["seq"]
                    out.append(JournalLine(e, line[:-1], (chain, p["segment"], p["offset"], e["seq"])))
                    n += 1
            limit -= n
            if limit <= 0:
                return
            i = names.index(p["segment"])
            if i + 1 >= len(names):
                f.seek(p["offset"])
                return
            p.update(segment=names[i + 1], offset=0)

    def _file(self, chain: str, path: Path, offset: int) -> IO[bytes]:
        cur = self._files.get(chain)
        if cur is None or cur[0] != path.name:
            if cur:
                cur[1].close()
            f = open(path, "rb")  # noqa: SIM115 - kept open across reads; closed when the chain moves on
            self._files[chain] = (path.name, f)
            cur = self._files[chain]
        cur[1].seek(offset)
        return cur[1]

    def close(self) -> None:
        for _, f in self._files.values():
            f.close()
        self._files.clear()


def chain_last_seq(root: Path, chain: str) -> int:
    """Seq of the last complete line of a chain (reads only the end of the last segment)."""
    for seg in reversed(layout.segments(root, chain)):
        with open(seg, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - 65536))
            tail = f.read()
        for line in reversed(tail.split(b"\n")[:-1]):
            try:
                return int(json.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
    return 0


class SinkWorker(threading.Thread):
    def __init__(
        self,
        root: Path,
        s: SinkSettings,
        chains: list[str] | None,
        stop: threading.Event,
        poll_s: float,
        sink: Sink | None = None,
    ) -> None:
        super().__init__(name=f"audit-sink-{s.name}", daemon=True)
        self.root, self.s, self.stop_event, self.poll_s = root, s, stop, poll_s
        self.sink = sink or make_sink(s)
        self.cursor_path = layout.cursor_path(root, s.name)
        self.committed: Position = self._load()
        self.reader = Reader(root, chains)
        self.reader.seek(self.committed)
        self.unconfirmed: list[tuple[float, Position]] = []
        self.delivered = 0
        self._last_commit = 0.0
        self._last_lag = 0.0

    def _load(self) -> Position:
        return layout.read_cursor(self.cursor_path)

    def _commit(self, pos: Position, force: bool = False) -> None:
        self.committed = pos
        now = time.monotonic()
        if force or now - self._last_commit >= 0.25:
            self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
            layout.write_atomic(self.cursor_path, json.dumps({"sink": self.s.name, "chains": pos}).encode())
            self._last_commit = now

    def lag(self) -> int:
        chains = self.reader.fixed if self.reader.fixed is not None else layout.chain_names(self.root)
        return sum(max(0, chain_last_seq(self.root, c) - self.committed.get(c, {}).get("seq", 0)) for c in chains)

    def run(self) -> None:
        backoff = self.s.backoff_min_s
        while not self.stop_event.is_set():
            self._confirm()
            now = time.monotonic()
            if now - self._last_lag > 0.5:
                tm.SINK_LAG.labels(self.s.name).set(self.lag())
                self._last_lag = now
            batch = self.reader.read(self.s.batch_size)
            if not batch:
                self.stop_event.wait(self.poll_s)
                continue
            try:
                self.sink.send(batch)
            except Exception as e:
                tm.SINK_ERRORS.labels(self.s.name).inc()
                log.warning("audit sink %s: %s (retry in %.1fs)", self.s.name, e, backoff)
                self.sink.reset()
                self.unconfirmed.clear()
                self._commit_acked(batch, getattr(e, "acked", 0))
                self.reader.seek(self.committed)
                self.stop_event.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(backoff * 2, self.s.backoff_max_s)
                continue
            backoff = self.s.backoff_min_s
            tm.SINK_DELIVERED.labels(self.s.name).inc(len(batch))
            self.delivered += len(batch)
            pos = json.loads(json.dumps(self.reader.pos))
            if self.sink.stream and self.s.replay_window_s > 0:
                self.unconfirmed.append((time.monotonic(), pos))
            else:
                self._commit(pos)
        self._confirm(final=True)
        self.reader.close()
        self.sink.reset()

    def _commit_acked(self, batch: list[dict[str, Any]], acked: int) -> None:
        """A sink that acknowledges each event (relp) failed after the first ``acked`` of ``batch``: the cursor
        moves past those, so the retry starts at the first event not acknowledged."""
        if acked <= 0 or self.sink.stream:
            return
        pos = json.loads(json.dumps(self.committed))
        for ev in batch[:acked]:
            at = getattr(ev, "at", None)
            if at is None:
                return  # not read from the journal here: keep the whole batch for the retry
            pos[at[0]] = {"segment": at[1], "offset": at[2], "seq": at[3]}
        tm.SINK_DELIVERED.labels(self.s.name).inc(acked)
        self.delivered += acked
        self._commit(pos, force=True)

    def _confirm(self, final: bool = False) -> None:
        """Stream sinks: positions older than the replay window on a still-open connection are delivered."""
        if not self.unconfirmed:
            if final:
                self._commit(self.committed, force=True)
            return
        if not self.sink.alive():
            self.unconfirmed.clear()
            self.sink.reset()
            self.reader.seek(self.committed)
            return
        horizon = time.monotonic() - self.s.replay_window_s
        done = [p for t, p in self.unconfirmed if t <= horizon]
        if done:
            self.unconfirmed = [(t, p) for t, p in self.unconfirmed if t > horizon]
            self._commit(done[-1], force=final)
        elif final:
            self._commit(self.committed, force=True)


class Forwarder:
    """Delivers ``<audit.dir>`` to every configured sink. Run exactly one per audit.dir (e.g. in worker 0)."""

    def __init__(
        self,
        settings: AuditSettings,
        chains: list[str] | None = None,
        poll_s: float = 0.2,
        sinks: dict[str, Sink] | None = None,
    ) -> None:
        self.root = Path(settings.dir)
        self._stop = threading.Event()
        self.workers = [
            SinkWorker(self.root, s, chains, self._stop, poll_s, (sinks or {}).get(s.name)) for s in settings.sinks
        ]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in flight; cursors are saved. Blocking: call via asyncio.to_thread."""
        self._stop.set()
        for w in self.workers:
            w.join(timeout)

    def lag(self) -> dict[str, int]:
        return {w.s.name: w.lag() for w in self.workers}
