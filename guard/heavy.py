"""One worker thread for the work a large request body costs the serving process.

Bodies over 64 KB are parsed, cut into segments, screened and serialised in worker threads so that the event
loop keeps serving other clients (tests/bench/bench_hostile.py). Those threads still take the GIL from the
event loop in turns. With one thread per large request, two clients sending megabytes keep two or three
threads contending, and the event loop wins the GIL less often than against one. All of that work goes
through this single thread instead: large requests queue for it (the GIL would let only one of them run at a
time anyway), and ordinary requests on the event loop compete with one thread at most. The request's context
variables (its screening deadline: guard.screens.budget) go with the call, as with ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_POOL = ThreadPoolExecutor(1, thread_name_prefix="guard-heavy")


async def run(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` in the heavy-work thread, with the caller's context variables."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(_POOL, functools.partial(ctx.run, fn, *args))


__all__ = ["run"]
