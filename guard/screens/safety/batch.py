"""Dynamic micro-batching: concurrent async callers, one worker thread that owns the model.

A batch starts with the first waiting job and takes whatever else is queued, up to ``max_batch``; it waits
at most ``max_wait_ms`` for more only while the queue is empty. Under load, jobs pile up while the model
runs, so batches fill without waiting; alone, a job waits at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

Job = tuple[Any, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class MicroBatcher:
    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        max_batch: int = 16,
        max_wait_ms: float = 1.0,
        name: str = "guard-batcher",
    ) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.name = name
        self.q: queue.Queue[Job | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.batches = 0  # observable: how many batches ran, and how many jobs they held
        self.jobs = 0

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._start()
        self.q.put((item, fut, loop))
        return await fut

    def _start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self.thread.start()

    def close(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.q.put(None)
            self.thread.join(timeout=10)

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                job = self.q.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = self.q.get(timeout=left)
                except queue.Empty:
                    break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self.q.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            live = [j for j in batch if not j[1].cancelled()]
            if live:
                self._execute(live)
            if stop:
                return

    def _execute(self, batch: list[Job]) -> None:
        self.batches += 1
        self.jobs += len(batch)
        try:
            results = list(self.fn([j[0] for j in batch]))
            if len(results) != len(batch):
                raise RuntimeError("batch function returned a wrong number of results")
        except BaseException as e:
            for _, fut, loop in batch:
                loop.call_soon_threadsafe(_fail, fut, e)
            return
        for (_, fut, loop), r in zip(batch, results, strict=False):
            loop.call_soon_threadsafe(_done, fut, r)


def _done(fut: asyncio.Future[Any], r: Any) -> None:
    if not fut.done():
        fut.set_result(r)


def _fail(fut: asyncio.Future[Any], e: BaseException) -> None:
    if not fut.done():
        fut.set_exception(e)
