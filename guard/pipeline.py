"""The request path, top to bottom: the stages of guard.stages run in order (docs/architecture.md).

identity -> parse -> route -> policy -> screens_prompt -> content -> quota -> audit "exchange.started"
(durable) -> upstream_first_byte -> answer (response screens) -> completed: audit "exchange.completed"

``Pipeline`` is the ASGI app of the public listener: it makes the Exchange, runs the stages, times each in
one place, and answers any refusal in the client API's own error shape, recorded.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any

from guard import gc_tuning, heavy, telemetry
from guard.accesslog import AccessLog, open_log
from guard.audit import overlap
from guard.client_watch import ClientGone
from guard.errors import GuardError, unavailable
from guard.exchange import REQUEST_KEY, Exchange
from guard.identity import ANONYMOUS
from guard.quota import hook as quota
from guard.screens.base import ScreenSet
from guard.stages import LISTING, STAGES
from guard.stages.base import (
    LARGE_BODY,
    SKIPPED,
    Flow,
    Receive,
    Send,
    Services,
    Stage,
    decision,
    header,
    model_label,
    ours,
    send_error,
    throttled,
)
from guard.telemetry import stage as stage_histogram
from guard.tracing import parse_traceparent

__all__ = ["Pipeline", "ScreenSet", "Services"]
log = logging.getLogger("guard.pipeline")


def _trace_id(traceparent: bytes | None) -> str:
    """The caller's W3C trace id, kept so the exchange joins the caller's trace; a new one otherwise."""
    parent = parse_traceparent(traceparent.decode("latin-1")) if traceparent is not None else None
    return parent[0] if parent else os.urandom(16).hex()


# What the driver runs per stage: its ``run``, its name if timed, and whether ``run`` is a coroutine function
# (a stage that never awaits, such as route or policy, is called as a plain function: no coroutine per call).
Step = tuple[Callable[[Flow], Any], str | None, bool]


def _steps(stages: Sequence[Stage]) -> tuple[Step, ...]:
    """Each stage's step; a stage that is not ``active`` in this configuration (``Quota`` without
    ``quotas:``) is left out. A plain stage marked ``heavy`` (its work grows with the body: route walks
    every message) runs in a worker thread for bodies over ``LARGE_BODY``, so a megabyte of small messages
    does not hold the event loop (tests/bench/bench_hostile.py)."""
    return tuple(
        (_off_loop(s.run), s.name if s.timed else None, True)
        if getattr(s, "heavy", False) and not inspect.iscoroutinefunction(s.run)
        else (s.run, s.name if s.timed else None, inspect.iscoroutinefunction(s.run))
        for s in stages
        if getattr(s, "active", True)
    )


def _off_loop(run: Callable[[Flow], Any]) -> Callable[[Flow], Awaitable[Any]]:
    async def step(flow: Flow) -> Any:
        if flow.ex.body_bytes > LARGE_BODY:
            return await heavy.run(run, flow)
        return run(flow)

    return step


class Pipeline:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._access_log: AccessLog | None = open_log(svc.config.access_log_file) if svc.config.access_log else None
        made: dict[type[Stage], Stage] = {}
        for cls in (*STAGES, *LISTING):
            if cls not in made:
                made[cls] = cls(svc)  # type: ignore[call-arg]
        first = STAGES[0]
        assert LISTING[0] is first  # both paths start by knowing who calls which endpoint
        self._first = _steps([made[first]])
        self._path = _steps([made[c] for c in STAGES[1:]])
        self._listing = _steps([made[c] for c in LISTING[1:]])

    async def _run(self, flow: Flow) -> bool:
        """The stages in order, each timed one timed here: its duration is recorded when it ends (not when it
        raises, nor when it had nothing to do). True once the request went upstream (its end is then
        ``exchange.completed``); False for a listing."""
        ex = flow.ex
        stage_ms, stage_times = ex.stage_ms, ex.stage_times  # the Exchange's own dicts, never replaced
        steps = self._first
        listing = False
        while True:
            for run, timed, coro in steps:
                if timed is None:
                    if coro:
                        await run(flow)
                    else:
                        run(flow)
                    continue
                t0 = perf_counter()
                if (await run(flow) if coro else run(flow)) is not SKIPPED:  # record(ex, timed, t0), inline
                    t1 = perf_counter()
                    stage_ms[timed] = (t1 - t0) * 1000
                    stage_times[timed] = (t0, t1)
                    stage_histogram(timed).observe(t1 - t0)
            if steps is not self._first:
                return not listing
            listing = ex.operation == "models"  # the endpoint is known: a listing, or a model call
            steps = self._listing if listing else self._path

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        req = scope.get(REQUEST_KEY)  # guard.server: the request's id, and who records it (ours)
        rid = req["id"] if req else os.urandom(12).hex()
        ex = Exchange(request_id=rid, api="", operation="", model="", path=scope["path"], body={})
        ex.claim = req
        ex.client_ip = (scope.get("client") or ("",))[0]
        tp = header(scope["headers"], b"traceparent")
        tracing = self.svc.tracing
        if tracing is not None:
            ex.wall_ns = time.time_ns()
            ex.span, ex.trace_id, ex.traceparent = tracing.start(tp.decode("latin-1") if tp else None, ex.wall_ns)
        else:
            ex.trace_id = _trace_id(tp)
        started = False
        try:
            flow = Flow(ex, scope, receive, send)
            started = await self._run(flow)
        except GuardError as e:  # after exchange.started, the record is exchange.completed (not .denied)
            await self._refuse(ex, e, send, started or ex.audit_started)
        except ClientGone:
            await self._after(ex, started or ex.audit_started, {"status": 499, "reason": "client_disconnected"})
        except Exception:
            log.exception("internal error handling request %s", ex.request_id)
            await self._refuse(ex, GuardError(500, "internal error", "server_error", "internal_error"), send, started)
        finally:
            if ex.body_bytes > LARGE_BODY:  # deferred by guard.stages.request when it read the body
                gc_tuning.resume()
            if quota.TICKET in ex.context:  # after the answer: settle tokens, free slots (errors included)
                await quota.finish(self.svc.quotas, ex)
            telemetry.child(telemetry.REQUEST_SECONDS, ex.api or "none", ex.operation or "none").observe(
                time.perf_counter() - ex.started
            )
            if tracing is not None:
                tracing.finish(ex, ex.outcome or {})
            if self._access_log is not None:
                self._access_log.record(ex, ex.outcome or {}, decision(ex))
            if ex.body_bytes > LARGE_BODY:  # a megabyte of messages is freed in pieces, off the event loop
                handed = [ex.body, flow.prompt]
                ex.body, flow.prompt = {}, None
                heavy.release(handed)

    async def refused_by_protocol(
        self, rid: str, status: int, msg: str, code: str, tls: dict[str, Any] | None, client_ip: str
    ) -> GuardError | None:
        """A request the HTTP layer refused before it became an exchange (guard.server): its
        ``exchange.denied`` record (stage ``request``) and its count. Returns the error to answer instead
        when the record could not be written (503 ``audit_unavailable``), else None."""
        ex = Exchange(request_id=rid, api="", operation="", model="", path="", body={})
        ex.client_ip = client_ip
        ex.principal = (tls or {}).get("guard.principal") or ANONYMOUS
        ex.trace_id = os.urandom(16).hex()
        answer: GuardError | None = None
        try:
            await self._after(ex, False, {"status": status, "reason": code, "error_type": "invalid_request_error"})
        except GuardError as je:
            answer = je
        telemetry.child(telemetry.REQUESTS, "none", "none", "", "none", str(answer.status if answer else status)).inc()
        if self._access_log is not None:
            self._access_log.record(ex, {"status": answer.status if answer else status, "reason": code}, "none")
        return answer

    async def _refuse(self, ex: Exchange, e: GuardError, send: Send, started: bool) -> None:
        if not ours(ex):
            return
        try:  # an error answer, too, waits for the exchange's durable start record (audit.start_record)
            await overlap.settle(ex)
        except Exception:
            e = overlap.refusal()
        outcome = {"status": e.status, "reason": e.code or e.type, "error_type": e.type}
        try:
            await self._after(ex, started, outcome)
        except GuardError as je:  # the refusal itself could not be recorded: refuse harder, never unrecorded
            e = je
        await send_error(send, e, ex)
        telemetry.child(
            telemetry.REQUESTS, ex.api or "none", ex.operation or "none", model_label(ex), decision(ex), str(e.status)
        ).inc()

    async def _after(self, ex: Exchange, started: bool, outcome: dict[str, Any]) -> None:
        if not ours(ex):
            return
        ex.outcome = outcome
        kind = "exchange.completed" if started else "exchange.denied"
        try:  # the start record goes first
            await overlap.settle(ex)
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            throttled.error("record", "audit record for %s failed: %s", ex.request_id, err)
        try:
            await self.svc.recorder.finished(ex, kind, outcome)
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            throttled.error("record", "audit record for %s failed: %s", ex.request_id, err)
            if not started:
                raise unavailable("audit journal unavailable; request refused", "audit_unavailable") from None
