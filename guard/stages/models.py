"""The model listing (``GET /v1/models``, ``GET /api/tags``): after the access decision for model ``*``, the
models routed by name, recorded as ``exchange.completed`` before the listing is sent."""

from __future__ import annotations

import json
import time
from typing import ClassVar

from guard import telemetry
from guard.apis.wire import WIRE
from guard.errors import unavailable
from guard.stages.base import Flow, Services, send_json, throttled


class ListModels:
    name: ClassVar[str] = "models"
    timed: ClassVar[bool] = False

    def __init__(self, svc: Services) -> None:
        self._config, self._recorder = svc.config, svc.recorder

    async def run(self, flow: Flow) -> None:
        ex = flow.ex
        names = [r.model for r in self._config.routes if not any(c in r.model for c in "*?[")]
        now = int(time.time())
        body = WIRE[ex.api].model_list(names, now)
        ex.outcome = {"status": 200}
        try:
            await self._recorder.finished(ex, "exchange.completed", ex.outcome)
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            throttled.error("record", "audit record for %s failed: %s", ex.request_id, err)
            raise unavailable("audit journal unavailable; request refused", "audit_unavailable") from None
        await send_json(flow.send, 200, json.dumps(body).encode(), ex.request_id)
