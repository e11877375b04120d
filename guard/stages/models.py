"""The model listing (``GET /v1/models``, ``GET /api/tags``): after the access decision for model ``*`` (who
may list at all), exactly the models this principal may use through the API it asks with (guard.stages.catalog),
recorded as ``exchange.completed`` before the listing is sent."""

from __future__ import annotations

import json
import time
from typing import ClassVar

from guard import telemetry
from guard.apis.wire import WIRE
from guard.errors import unavailable
from guard.exchange import Exchange
from guard.stages import catalog
from guard.stages.base import Flow, Services, header, send_json, throttled
from guard.stages.request import read_body


class ListModels:
    name: ClassVar[str] = "models"
    timed: ClassVar[bool] = False

    def __init__(self, svc: Services) -> None:
        self._svc, self._config, self._recorder = svc, svc.config, svc.recorder

    async def run(self, flow: Flow) -> None:
        ex = flow.ex
        if getattr(WIRE[ex.api], "CATALOG", False):  # the API's own catalogue endpoints (guard.stages.catalog)
            raw = b""
            if flow.scope["method"] == "POST":
                declared = header(flow.scope["headers"], b"content-length")
                raw = await read_body(flow.receive, self._config.limits.max_body_bytes, declared)
            status, data = await catalog.answer(self._svc, ex, flow.env or {}, flow.scope["path"], raw)
            ex.outcome = {"status": status}
            await self._listed(ex)
            await send_json(flow.send, status, data, ex)
            return
        names = list(await catalog.Catalog(self._svc, ex, flow.env or {}).usable())
        body = WIRE[ex.api].model_list(names, int(time.time()))
        ex.outcome = {"status": 200}
        await self._listed(ex)
        await send_json(flow.send, 200, json.dumps(body).encode(), ex)

    async def _listed(self, ex: Exchange) -> None:
        """The record of a catalogue request, durable before the answer goes out."""
        try:
            await self._recorder.finished(ex, "exchange.completed", ex.outcome or {})
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            throttled.error("record", "audit record for %s failed: %s", ex.request_id, err)
            raise unavailable("audit journal unavailable; request refused", "audit_unavailable") from None
