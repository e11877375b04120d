"""Large request bodies read strictly without holding the serving process's GIL.

The strict reader (guard.apis.strictjson) runs ``json``'s C scanner with a hook per object: for a megabyte of
small objects that is tens of milliseconds in C code that never releases the GIL, so even in a worker thread
every other request's event loop waits it out. For bodies above ``guard.stages.base.LARGE_BODY`` the strict
reading (every refusal: duplicate or case-folded keys, NaN, overflowing numbers, lone surrogates, non-UTF-8)
runs in a helper process; only a body it accepted is then read in this process by orjson, about five times
faster, and in pieces where it has long arrays (guard.apis.body_pieces). For such a body both readers give the
same object: the strict reader refuses everything on which parsers could differ. Until the helper process is
ready (it starts on the first large body), or when it fails, or with ``limits.screen_processes: 0``, the
strict reader runs in a thread as before. The helper runs at a lower CPU priority than the serving process
(``limits.screen_priority``) and ends when that process is gone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
from typing import Any

import orjson

from guard import heavy
from guard.apis import body_pieces, strictjson
from guard.procs import helper_init

log = logging.getLogger("guard.apis.bodies")


def _ready() -> bool:
    return True


def check(raw: bytes, depth: int = 0) -> tuple[tuple[str, str, str] | None, body_pieces.Spans]:
    """In the helper process: why the strict reader refuses ``raw`` (code, message, JSON path), or None;
    with ``depth``, a body nested deeper is refused too (a walk over every value: here, not in the serving
    process). For an accepted body, where its long arrays' elements lie (guard.apis.body_pieces)."""
    try:
        _local(raw, depth)
    except strictjson.StrictJSONError as e:
        return (e.code, e.message, e.path), []
    return None, body_pieces.spans(raw)


def _local(raw: bytes, depth: int) -> Any:
    body = strictjson.loads(raw)
    if depth and not strictjson.depth_ok(body, depth, raw):
        raise strictjson.too_deep(depth)
    return body


class _Helper:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enabled = True  # limits.screen_processes > 0
        self.priority: int | str = "idle"  # limits.screen_priority
        self.pid = 0
        self.executor: cf.ProcessPoolExecutor | None = None
        self.ready = False

    def get(self) -> cf.ProcessPoolExecutor | None:
        """The helper when it has started; otherwise start it and return None."""
        if not self.enabled:
            return None
        with self.lock:
            if self.pid != os.getpid():  # first use, or a forked worker: a helper of its own
                self.pid, self.executor, self.ready = os.getpid(), None, False
            if self.ready:
                return self.executor
            if self.executor is None:
                self.executor = cf.ProcessPoolExecutor(
                    1,
                    multiprocessing.get_context("spawn"),
                    initializer=helper_init,
                    initargs=(os.getpid(), self.priority),
                )
                self.executor.submit(_ready).add_done_callback(self._started)
            return None

    def _started(self, fut: cf.Future[bool]) -> None:
        with self.lock:
            self.ready = fut.exception() is None

    def broken(self) -> None:
        with self.lock:
            old, self.executor, self.ready = self.executor, None, False
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)


HELPER = _Helper()


async def loads(raw: bytes, depth: int = 0) -> Any:
    """``strictjson.loads(raw)`` for a large body, off this process's GIL where a helper process is ready;
    with ``depth``, refused (StrictJSONError ``invalid_json``) when nested deeper than that."""
    ex = HELPER.get()
    if ex is None:
        return await heavy.run(_local, raw, depth)
    try:
        refused, pieces = await asyncio.wrap_future(ex.submit(check, raw, depth))
    except Exception as e:  # the helper died: read in a thread, start a new helper on the next large body
        log.warning("body reader process failed (%s); reading in a thread", type(e).__name__)
        HELPER.broken()
        return await heavy.run(_local, raw, depth)
    if refused is not None:
        raise strictjson.StrictJSONError(*refused)
    try:  # in pieces where it has long arrays: one parse of it all would hold the GIL for milliseconds
        return await (heavy.run(body_pieces.assemble, raw, pieces) if pieces else heavy.run(orjson.loads, raw))
    except orjson.JSONDecodeError:  # accepted by the strict reader: not expected; the strict reader decides
        return await heavy.run(_local, raw, depth)
