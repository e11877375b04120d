"""guard.heavy: the work large bodies cost runs in one thread, with the caller's context variables."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

from guard import heavy

DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("deadline", default=0.0)


def test_large_body_work_runs_in_one_thread_one_call_at_a_time_with_the_callers_context() -> None:
    running, most, names = [0], [0], set()
    lock = threading.Lock()

    def work(k: int) -> tuple[int, float]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        names.add(threading.current_thread().name)
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return k, DEADLINE.get()

    async def request(k: int) -> tuple[int, float]:
        DEADLINE.set(float(k))  # each request's own deadline, as guard.screens.budget sets it
        return await heavy.run(work, k)

    async def go() -> list[tuple[int, float]]:
        return await asyncio.gather(*(request(k) for k in range(6)))

    out = asyncio.run(go())
    assert out == [(k, float(k)) for k in range(6)]
    assert most[0] == 1, "two large requests' work ran at once"
    assert len(names) == 1 and next(iter(names)).startswith("guard-heavy")
    assert threading.current_thread().name not in names


class _Leaf:
    """A weakly referenceable element, to see when the heavy thread has freed it."""


def _drain() -> None:
    asyncio.run(heavy.run(lambda: None))  # one thread, in order: once this ran, the release before it ran


def test_released_containers_are_freed_in_the_heavy_thread_and_shared_ones_left_whole() -> None:
    import weakref

    leaves = [_Leaf() for _ in range(1000)]
    refs = [weakref.ref(x) for x in leaves]
    body = {"model": "m", "messages": [{"n": i, "leaf": leaves[i]} for i in range(1000)]}
    segs = list(leaves)
    del leaves
    freed_in: list[str] = []
    weakref.finalize(refs[0](), lambda: freed_in.append(threading.current_thread().name))
    heavy.release([body, segs])
    del body, segs
    _drain()
    assert all(r() is None for r in refs)
    assert freed_in and freed_in[0].startswith("guard-heavy")

    kept = [_Leaf() for _ in range(500)]
    shared = {"messages": kept}
    heavy.release([shared])  # the caller still holds ``kept``: the list is let go, never emptied
    del shared
    _drain()
    assert len(kept) == 500 and all(isinstance(x, _Leaf) for x in kept)
