"""Going upstream: ``exchange.started`` made durable first (audit), then the request sent to the route's
upstream or its fallbacks until a response head arrives (upstream_first_byte)."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from guard import heavy, telemetry
from guard.apis import strictjson, translate
from guard.audit import overlap
from guard.client_watch import ClientGone
from guard.errors import GuardError, unavailable
from guard.stages.base import LARGE_BODY, Flow, Services, ours, throttled
from guard.upstream import UpstreamUnreachable


class AuditStarted:
    """``exchange.started`` made durable (fsync) BEFORE anything goes upstream; journal failure -> 503."""

    name: ClassVar[str] = "audit"
    timed: ClassVar[bool] = True

    def __init__(self, svc: Services) -> None:
        self._recorder = svc.recorder
        self._overlap = overlap.wanted(svc.config.audit)  # audit.start_record: overlap

    async def run(self, flow: Flow) -> None:
        ex = flow.ex
        if not ours(ex):
            raise ClientGone()
        try:
            if self._overlap:  # durable while the model works; the answer waits for it (the gate)
                overlap.begin(self._recorder, ex)
                flow.send = overlap.gate(ex, flow.send)
            else:
                await self._recorder.started(ex)
            ex.audit_started = True
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            throttled.error("refusing", "audit journal failed, refusing %s: %s", ex.request_id, err)
            raise unavailable("audit journal unavailable; request refused", "audit_unavailable") from None


class Forward:
    """The judged body (never the client's bytes: guard.canonical) to the route's upstream, translated where
    the upstream speaks another API; the fallbacks when one is unreachable; until the response head."""

    name: ClassVar[str] = "upstream_first_byte"
    timed: ClassVar[bool] = True

    def __init__(self, svc: Services) -> None:
        self._upstreams = svc.upstreams

    async def run(self, flow: Flow) -> None:
        ex, route = flow.ex, flow.route
        assert route is not None
        if route.upstream_model:
            ex.body["model"] = route.upstream_model
        model = route.upstream_model or ex.model
        bodies: dict[str, bytes] = {}  # per upstream API: what was judged, never the client's bytes (canonical.py)
        tp = ex.traceparent or f"00-{ex.trace_id}-{os.urandom(8).hex()}-01"
        extra = {"x-guard-request-id": ex.request_id, "traceparent": tp, "content-type": "application/json"}
        resp = None
        for name, kind in zip((route.upstream, *route.fallbacks), flow.modes, strict=True):  # then fallbacks
            if kind not in bodies:
                if ex.body_bytes <= LARGE_BODY:
                    bodies[kind] = _serialise(kind, ex.body)
                else:
                    bodies[kind] = await heavy.run(_serialise, kind, ex.body)
            path = translate.upstream_path(kind, ex.path) if kind else ex.path
            target = self._upstreams.target(name, ex.api, ex.operation, path, model, flow.scope["headers"], extra)
            try:
                resp = await self._upstreams.send(target, "POST", bodies[kind])
                ex.upstream = name
                ex.translated = kind
                break
            except UpstreamUnreachable as e:
                last = e
        if resp is None:
            raise GuardError(502, str(last), "upstream_error", "upstream_unreachable")  # names no upstream
        flow.response = resp


def since_forward(flow: Flow) -> float:
    """When the request went upstream (the start of ``upstream_first_byte``), for ``upstream_total``."""
    span = flow.ex.stage_times.get("upstream_first_byte")
    return span[0] if span is not None else time.perf_counter()


def _serialise(kind: str, body: Any) -> bytes:
    """The upstream's body, serialised from what was judged (translated to another wire API if ``kind``):
    one orjson call, under a millisecond for a megabyte of messages."""
    return strictjson.dumps(translate.request(kind, body) if kind else body)
