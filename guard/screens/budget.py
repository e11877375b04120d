"""The screening budget: how long one request's screens may take before it is refused (fail closed).

The pipeline runs a request's prompt screens (and a whole answer's screens) under :func:`run`, which sets a
deadline in a context variable. Screens hand large texts to worker threads (``asyncio.to_thread`` copies the
context, so the deadline travels with them) and call :func:`check` between units of work (a rule, a piece of
text): past the deadline the work stops there instead of running on. The event loop never waits on it: at the
deadline the request is answered 503 ``screen_budget_exceeded``, audited and counted.

Texts up to ``INLINE_CHARS`` are screened on the event loop: with linear-time patterns that costs less than
the hop to a thread (tests/bench/bench_hostile.py measures both).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from guard import telemetry
from guard.errors import GuardError, unavailable

T = TypeVar("T")
INLINE_CHARS = 16_384  # texts up to this many characters in all are screened inline

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("guard_screen_deadline", default=None)


class BudgetExceeded(Exception):
    """The request's screening deadline passed; raised inside a screen to stop its work."""


def deadline() -> float | None:
    """The current request's screening deadline (time.monotonic, the same clock in every process)."""
    return _deadline.get()


def set_deadline(d: float | None) -> contextvars.Token[float | None]:
    return _deadline.set(d)


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    _deadline.reset(token)


def check() -> None:
    """Raise BudgetExceeded when the current request's screening deadline has passed."""
    d = _deadline.get()
    if d is not None and time.monotonic() > d:
        raise BudgetExceeded()


def inline(segments: Sequence[Any]) -> bool:
    """Whether texts this small are screened on the event loop rather than in a worker thread."""
    total = 0
    for s in segments:
        total += len(s.text)
        if total > INLINE_CHARS:
            return False
    return True


def exceeded(budget_ms: float) -> GuardError:
    telemetry.FAIL_CLOSED.labels("screen_budget").inc()
    return unavailable(
        f"screening this request took longer than its budget ({budget_ms:g} ms); request refused",
        "screen_budget_exceeded",
    )


async def run(make: Callable[[], Awaitable[T]], budget_ms: float) -> T:
    """Await ``make()`` with the screening deadline set; raise 503 screen_budget_exceeded once it passes.
    ``make`` creates the awaitable (and its tasks) inside the deadline's context."""
    token = _deadline.set(time.monotonic() + budget_ms / 1000)
    try:
        aw = asyncio.ensure_future(make())  # its task copies the context now, deadline included
    finally:
        _deadline.reset(token)
    try:
        return await asyncio.wait_for(aw, budget_ms / 1000)
    except (TimeoutError, BudgetExceeded):
        raise exceeded(budget_ms) from None
