"""``audit.start_record``: when an exchange's ``exchange.started`` must be durable (with ``durability: fsync``).

- ``before_forward``: the pipeline waits for the fsync before the prompt goes upstream. No prompt ever
  leaves without its durable record; every request pays the fsync in its latency.
- ``overlap`` (default): the record is sealed and handed to the journal, and the prompt goes upstream while
  the fsync runs. The answer, or any error answer after that point, is released only once the record is
  durable: the first byte sent to the client (``gate``) waits for it, and a record that fails turns the
  answer into 503 ``audit_unavailable``. The model then has seen a prompt whose record failed: that is the
  trade, and why ``before_forward`` exists. A journal already known to be failing refuses the request
  before anything goes upstream, as in ``before_forward``.

With ``durability: batch`` neither waits (the record is written within ``batch_window_ms``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from guard import telemetry
from guard.audit.recovery import JournalError
from guard.errors import GuardError, unavailable

PENDING = "guard.audit.started_pending"  # Exchange.context: the future of exchange.started's durability

Send = Callable[[dict[str, Any]], Awaitable[None]]


def wanted(settings: Any) -> bool:
    return getattr(settings, "durability", "fsync") == "fsync" and getattr(settings, "start_record", "") == "overlap"


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved here too: a failure nobody awaited (client gone) is not an asyncio warning


def begin(recorder: Any, ex: Any) -> None:
    """Seal and hand over ``exchange.started`` without waiting for its fsync. Raises JournalError at once
    when the journal is known to be failing (nothing goes upstream then)."""
    journal = getattr(recorder, "journal", None)
    if journal is not None and not journal.healthy:
        raise JournalError("audit journal unavailable")
    fut = asyncio.ensure_future(recorder.started(ex))
    fut.add_done_callback(_retrieve)
    ex.context[PENDING] = fut


async def settle(ex: Any) -> None:
    """Wait until ``exchange.started`` is durable (no-op when it was awaited already or never overlapped).
    Raises what the journal raised."""
    fut = ex.context.pop(PENDING, None)
    if fut is not None:
        await fut


def refusal() -> GuardError:
    telemetry.FAIL_CLOSED.labels("audit").inc()
    return unavailable("audit journal unavailable; request refused", "audit_unavailable")


def gate(ex: Any, send: Send) -> Send:
    """``send`` that releases nothing to the client before ``exchange.started`` is durable. Only waits: the
    head's receipt is written by the one function that writes response heads (guard.stages.base.send_head),
    which settles the record first."""

    async def gated(message: dict[str, Any]) -> None:
        if PENDING in ex.context:
            try:
                await settle(ex)
            except Exception:
                raise refusal() from None
        await send(message)

    return gated
