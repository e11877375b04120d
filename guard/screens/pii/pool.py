"""Large PII scans in worker processes, so they never hold the serving process's GIL or its CPU.

Presidio's recognizers are Python: on a large hostile prompt (a megabyte of dotted quads, say) they spend
seconds in Python code. In a thread of the serving process that code holds the GIL, and every other
request's event loop waits its turn for it; in a worker process it only takes a core, at a lower CPU priority
(``limits.screen_priority``: SCHED_IDLE by default), so the serving process's event loop, and whatever else an
ordinary request waits on, gets a core first whenever it has work. A worker ends when its serving process is
gone (killed with -9, say). tests/bench/bench_hostile.py measures the difference.

The pool is started on first need, one per serving process (a forked Guard worker starts its own). Until
its processes have loaded the PII settings, large scans run in a thread as before. A worker loads the
settings file itself, only while its digest is the one the serving process loaded (else the job fails and
the scan runs in a thread). The request's screening deadline
travels with the job: the worker stops between pieces of text once it has passed.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guard.procs import helper_init
from guard.screens import budget
from guard.screens.base import Segment
from guard.screens.packed import Packed, unpack
from guard.screens.pii.profile import load_pii_profiles
from guard.screens.pii.scan import ScanPass
from guard.screens.pii.source import Source, source_of
from guard.screens.pii.source import digest as _digest

__all__ = ["POOL", "Source", "scan_job", "source_of"]

log = logging.getLogger("guard.screens.pii.screen")


# --- in the worker process ------------------------------------------------------------------------------

_profiles: dict[tuple[str, str], Any] = {}


def _load(src: Source) -> Any:
    key = (src.path, src.digest)
    if key not in _profiles:
        if _digest(Path(src.path)) != src.digest:  # edited since the serving process loaded it: not the same
            raise RuntimeError("the PII settings file changed since it was loaded")
        while len(_profiles) >= 4:  # the settings of a few Guards (or reloads); the oldest goes
            del _profiles[next(iter(_profiles))]
        _profiles[key] = load_pii_profiles(src.path)
    return _profiles[key][src.profile]


def _warm(src: Source) -> bool:
    _load(src)
    return True


def scan_job(
    src: Source,
    direction: str,
    texts: Packed,
    roles: list[str],
    kinds: list[str],
    pseudonyms: Any,
    deadline: float | None,
    edits: bool = False,
) -> tuple[list[Any], dict[str, int], Any]:
    """Scan the segments (``texts`` as guard.screens.packed sends them, with their ``roles`` and ``kinds``)
    in this worker: the rewritten texts (None: unchanged, so a megabyte is not sent back; with ``edits``, a
    segment that is not JSON text gets its edits instead: ScanPass.segment_edits), counts by type,
    pseudonyms."""
    token = budget.set_deadline(deadline)
    try:
        scan = ScanPass(_load(src), direction, pseudonyms)
        out: list[Any] = []
        for t, role, kind in zip(unpack(texts), roles, kinds, strict=True):
            seg = Segment(t, role, kind, ())
            got = scan.segment_edits(seg) if edits else scan.segment(seg)
            out.append(None if got == t else got)
        return out, dict(scan.counts), pseudonyms
    finally:
        budget.reset_deadline(token)


# --- in the serving process -----------------------------------------------------------------------------


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.size = 1  # limits.screen_processes; 0: large scans stay in threads
        self.priority: int | str = "idle"  # limits.screen_priority: the workers' CPU priority (guard.procs)
        self.pid = 0
        self.executor: cf.ProcessPoolExecutor | None = None
        self.ready: set[Source] = set()
        self.warming: set[Source] = set()

    def get(self, src: Source, warm: Callable[[Source], Any] = _warm) -> cf.ProcessPoolExecutor | None:
        """The pool when its workers hold ``src``; otherwise start warming it (``warm(src)`` in each worker,
        a module-level function: the PII settings by default, guard.screens.denylist.worker's for the
        denylist's large scans, which share these processes) and return None."""
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
                    self.executor = cf.ProcessPoolExecutor(
                        self.size,
                        multiprocessing.get_context("spawn"),
                        initializer=helper_init,
                        initargs=(os.getpid(), self.priority),
                    )
                futs = [self.executor.submit(warm, src) for _ in range(self.size)]
                threading.Thread(target=self._wait_warm, args=(src, futs), daemon=True).start()
            return None

    def broken(self) -> None:
        """A worker died (the pool is unusable): start a new pool on next need."""
        with self.lock:
            old, self.executor, self.ready, self.warming = self.executor, None, set(), set()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def _wait_warm(self, src: Source, futs: list[cf.Future[bool]]) -> None:
        done, _ = cf.wait(futs)
        errors = [e for e in (f.exception() for f in done) if e is not None]
        ok = not errors
        with self.lock:
            self.warming.discard(src)
            if ok:
                self.ready.add(src)
        if ok:
            log.info("screening processes ready (%d, %s profile %s)", len(futs), Path(src.path).name, src.profile)
        else:
            log.warning(
                "screening processes failed to load %s (%s); large texts are scanned in threads",
                src.path,
                str(errors[0])[:300],
            )


POOL = _Pool()
