"""Large denylist scans in the screening processes (the pool of guard.screens.pii.pool), off the serving
process's GIL.

RE2 runs in linear time, but its Python wrapper does Python work for every match: a megabyte of hostile text
with tens of thousands of candidate matches takes about half a second, and in a thread of the serving process
that time is spent holding the GIL in stretches of many milliseconds, which every other request's event loop
waits out. In a screening process it only takes a (lower-priority) core. Until the processes are ready, or
when they fail, large scans run in a thread as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import Any

from guard import heavy
from guard.screens import budget
from guard.screens.base import Segment
from guard.screens.packed import Packed, pack, unpack
from guard.screens.pii.pool import POOL
from guard.screens.pii.source import Source
from guard.screens.pii.source import digest as _digest

# text (None: unchanged, so a megabyte is not sent back), hits by rule, blocking rule names, redacted, the
# redactions as edits (guard.screens.edits)
Result = tuple[str | None, dict[str, int], list[str], bool, list[tuple[int, int, str]]]

log = logging.getLogger("guard.screens.denylist")
_screens: dict[tuple[str, str, str], Any] = {}


def load(src: Source) -> Any:
    """The DenylistScreen for ``src`` in this worker, while its file is the one the serving process loaded."""
    from guard.screens.denylist.screen import DenylistScreen
    from guard.screens.denylist.settings import load_denylist

    key = (src.path, src.digest, src.profile)
    if key not in _screens:
        if _digest(Path(src.path)) != src.digest:
            raise RuntimeError("the denylist settings file changed since it was loaded")
        while len(_screens) >= 8:
            del _screens[next(iter(_screens))]
        _screens[key] = DenylistScreen.from_settings(load_denylist(src.path), src.profile)
    return _screens[key]


def warm(src: Source) -> bool:
    """Load ``src``'s screen in a screening process before its first job (the pool's warm-up)."""
    load(src)
    return True


def scan_job(
    src: Source,
    direction: str,
    texts: Packed,
    deadline: float | None,
    kinds: list[str] | None = None,
) -> list[Result | None]:
    """Scan ``texts`` (as guard.screens.packed sends them; of Segment ``kinds``) in this worker under the
    request's screening deadline."""
    token = budget.set_deadline(deadline)
    try:
        screen = load(src)
        out: list[Result | None] = []
        for i, t in enumerate(unpack(texts)):
            s = screen.scan_segment(t, kinds[i] if kinds else "content", direction)
            if s.text == t and not (s.hits or s.block or s.redacted or s.edits):
                out.append(None)  # nothing found: one byte back (a tuple per clean message took 10 ms to read)
                continue
            out.append((None if s.text == t else s.text, s.hits, [c.rule.name for c in s.block], s.redacted, s.edits))
        return out
    finally:
        budget.reset_deadline(token)


async def in_process(src: Source, direction: str, segments: Sequence[Segment]) -> list[Result | None] | None:
    """The scans of ``segments`` done in a screening process; None when there is none ready (or it failed):
    then the caller scans in a thread. The request's screening deadline goes along."""
    pool = POOL.get(src, warm=warm)
    if pool is None:
        return None
    deadline = budget.deadline()
    job = await heavy.run(  # the job's arguments for many segments are built (and queued) off the event loop
        lambda: pool.submit(
            scan_job, src, direction, pack([s.text for s in segments]), deadline, [s.kind for s in segments]
        )
    )
    try:
        return await asyncio.wrap_future(job)
    except budget.BudgetExceeded:
        raise
    except Exception as e:
        log.warning("denylist screening process failed (%s); scanning in a thread", type(e).__name__)
        if isinstance(e, BrokenExecutor):
            POOL.broken()
        return None
