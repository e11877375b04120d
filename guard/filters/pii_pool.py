"""Large PII scans in worker processes, so they never hold the serving process's GIL or its CPU.

Presidio's recognizers are Python: on a large hostile prompt (a megabyte of dotted quads, say) they spend
seconds in Python code. In a thread of the serving process that code holds the GIL, and every other
request's event loop waits its turn for it; in a worker process (lower CPU priority, ``nice``) it only takes
a core. tests/bench/bench_hostile.py measures the difference.

The pool is started on first need, one per serving process (a forked Guard worker starts its own). Until
its processes have loaded the PII settings, large scans run in a thread as before. A worker loads the
settings file itself and keeps it while the file's digest is unchanged. The request's screening deadline
travels with the job: the worker stops between pieces of text once it has passed.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.filters import budget

log = logging.getLogger("guard.filters.pii")
NICE = 5  # screening jobs yield CPU to the event loops of the serving processes


@dataclass(frozen=True)
class Source:
    """Where a profile comes from: the pii.yaml path and a digest of its bytes (a reload changes it)."""

    path: str
    digest: str
    profile: str


# --- in the worker process ------------------------------------------------------------------------------

_profiles: dict[tuple[str, str], Any] = {}


def _init() -> None:
    try:
        os.nice(NICE)
    except OSError:
        pass


def _load(src: Source) -> Any:
    from guard.filters.pii_profile import load_pii_profiles

    key = (src.path, src.digest)
    if key not in _profiles:
        _profiles.clear()
        _profiles[key] = load_pii_profiles(src.path)
    return _profiles[key][src.profile]


def _warm(src: Source) -> bool:
    _load(src)
    return True


def scan_job(src: Source, direction: str, segs: list[tuple[str, str, str]], pseudonyms: Any,
          deadline: float | None) -> tuple[list[str], dict[str, int], Any]:
    """Scan ``segs`` (text, role, kind) in this worker: the rewritten texts, counts by type, pseudonyms."""
    from guard.filters.base import Segment
    from guard.filters.pii import ScanPass

    token = budget.set_deadline(deadline)
    try:
        scan = ScanPass(_load(src), direction, pseudonyms)
        texts = [scan.segment(Segment(t, role, kind, ())) for t, role, kind in segs]
        return texts, dict(scan.counts), pseudonyms
    finally:
        budget.reset_deadline(token)


# --- in the serving process -----------------------------------------------------------------------------

class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.size = 2  # limits.screen_processes; 0: large scans stay in threads
        self.pid = 0
        self.executor: cf.ProcessPoolExecutor | None = None
        self.ready: set[Source] = set()
        self.warming: set[Source] = set()

    def get(self, src: Source) -> cf.ProcessPoolExecutor | None:
        """The pool when its workers hold ``src``; otherwise start warming it and return None."""
        if self.size <= 0:
            return None
        with self.lock:
            if self.pid != os.getpid():  # first use, or a forked child: a pool of its own
                self.pid, self.executor, self.ready, self.warming = os.getpid(), None, set(), set()
            if src in self.ready and self.executor is not None:
                return self.executor
            if src not in self.warming:
                self.warming.add(src)
                if self.executor is None:
                    self.executor = cf.ProcessPoolExecutor(self.size, multiprocessing.get_context("spawn"),
                                                           initializer=_init)
                futs = [self.executor.submit(_warm, src) for _ in range(self.size)]
                threading.Thread(target=self._wait_warm, args=(src, futs), daemon=True).start()
            return None

    def _wait_warm(self, src: Source, futs: list[cf.Future[bool]]) -> None:
        done, _ = cf.wait(futs)
        ok = all(f.exception() is None for f in done)
        with self.lock:
            self.warming.discard(src)
            if ok:
                self.ready.add(src)
        if ok:
            log.info("PII screening processes ready (%d, profile %s)", len(futs), src.profile)
        else:
            log.warning("PII screening processes failed to load %s; large texts are scanned in threads", src.path)


POOL = _Pool()


def source_of(path: str | os.PathLike[str], profile: str) -> Source:
    import hashlib

    p = Path(path).resolve()
    return Source(str(p), hashlib.sha256(p.read_bytes()).hexdigest(), profile)
