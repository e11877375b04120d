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
import sys
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


def release(objs: list[Any]) -> None:
    """Let the heavy-work thread free ``objs`` (the caller hands over its last references: it keeps none).
    Freeing a megabyte of small messages is a cascade of deallocations that never lets the GIL go (3-6 ms
    wherever it happens); here long lists and dicts are emptied in pieces (``_PIECE`` items at a time), so
    the event loop gets the GIL between them. A container someone else still holds is only let go."""
    _POOL.submit(_release, objs)


_PIECE = 64  # items freed per step: a message or a tool with its nested schema each


def _release(objs: list[Any]) -> None:
    while objs:
        o = objs.pop()
        if sys.getrefcount(o) > 2:  # held elsewhere too (``o`` and the argument are ours): let it go whole
            continue
        if type(o) is dict:
            objs.extend(o.values())  # its values in turn: long ones in pieces
            o.clear()
        elif type(o) is list and len(o) > _PIECE:
            while o:
                del o[-_PIECE:]
        del o


__all__ = ["release", "run"]
