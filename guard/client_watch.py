"""Noticing that the client of a streamed answer went away, whatever Guard is waiting for at that moment.

A streamed answer waits on two things: the upstream's next bytes, and the stream screens (a Llama Guard
window in ``stream_mode: hold`` waits for its verdict, which may take seconds, while the upstream goes on
writing). A client that leaves during either wait must stop both: Guard closes the upstream connection,
which is how the model server learns to stop generating. ``ClientWatch`` reads the ASGI ``receive()`` for
``http.disconnect`` in a task of its own for the whole response; ``until_gone(aw)`` awaits ``aw`` and, if
the client leaves meanwhile, interrupts it (the request's task is cancelled at that await only) and raises
ClientGone. Nothing else the request's task awaits is interrupted (sends, audit, quota accounting): the
departure is noticed at the next ``until_gone``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


class ClientWatch:
    def __init__(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._waiting = False  # the request's task is inside until_gone
        self._interrupted = False  # ... and this watch cancelled it there
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._waiting and self._task is not None and not self._interrupted:
            self._interrupted = True
            self._task.cancel()

    async def until_gone(self, aw: Awaitable[T]) -> T:
        """``await aw``, or ClientGone as soon as the client has left (``aw`` is then cancelled)."""
        if self.gone:
            if asyncio.iscoroutine(aw):
                aw.close()
            raise ClientGone()
        self._waiting = True
        try:
            result = await aw
        except asyncio.CancelledError:
            if self._take_interrupt():
                raise ClientGone() from None
            raise  # cancelled for another reason (shutdown): not ours to swallow
        finally:
            self._waiting = False
        if self._take_interrupt():  # ``aw`` swallowed the cancellation; the client is gone all the same
            raise ClientGone()
        return result

    def _take_interrupt(self) -> bool:
        if not self._interrupted:
            return False
        self._interrupted = False
        task = self._task
        # our cancel() is withdrawn; another one made meanwhile (shutdown) still stands and is raised
        return task is None or task.uncancel() == 0

    def close(self) -> None:
        self._watcher.cancel()
