"""Waking whoever waits for a journal write: a thread (``_Waiter``) or an asyncio future on its own loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class _Waiter:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


def _wake(waiters: list[Any], err: BaseException | None, here: asyncio.AbstractEventLoop | None = None) -> None:
    """Settle waiters: a ``_Waiter`` is set; ``(loop, future)`` pairs are resolved on their loop, at once for
    ``here`` (the caller runs on it), through ``call_soon_threadsafe`` for any other."""
    by_loop: dict[Any, list[Any]] = {}
    for w in waiters:
        if isinstance(w, _Waiter):
            w.error = err
            w.done.set()
        else:
            by_loop.setdefault(w[0], []).append(w[1])
    for loop, futs in by_loop.items():
        if loop is here:
            _resolve(futs, err)
            continue
        try:  # noqa: SIM105 - runs per batch: try/except costs less than contextlib.suppress
            loop.call_soon_threadsafe(_resolve, futs, err)
        except RuntimeError:
            pass  # loop closed


def _resolve(futs: list[asyncio.Future[Any]], err: BaseException | None) -> None:
    for f in futs:
        if not f.done():
            if err is None:
                f.set_result(None)
            else:
                f.set_exception(err)


def _hash_of(line: bytes) -> str:
    i = line.rindex(b'"hash":"') + 8
    return line[i : i + 64].decode()
