"""``GET /audit/v1/proof?log=<log id>&index=<leaf index>[&wait=<seconds>][&witnessed=K]`` on the admin listener:
the receipt (with ``witnessed``: to the first checkpoint K witnesses cosigned, guard.audit.witnessed_receipts)
of one journal event (guard.audit.proofs.receipt) as JSON. When no signed checkpoint covers the leaf yet,
a checkpoint is forced if this worker writes that chain, else the request waits for the next one (at most
``wait`` seconds, default the checkpoint interval plus a second, at most 30): 503 with Retry-After if none came.
Errors in the OpenAI error shape: 400 bad parameters, 404 no such log or leaf."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse, Response

from guard.audit.logtree import chain_of, origin_for
from guard.audit.proofs import ProofError, receipt
from guard.errors import error_body


def _error(status: int, msg: str, code: str, **headers: str) -> Response:
    kind = "invalid_request_error" if status < 500 else "service_unavailable"
    return Response(error_body(msg, kind, code), status_code=status, media_type="application/json", headers=headers)


async def proof_response(runtime: Any, params: Mapping[str, str]) -> Response:
    settings = runtime.config.audit if runtime is not None else None
    if settings is None or not getattr(runtime.config, "audit", None):
        return _error(404, "no audit journal configured", "not_found")
    log = params.get("log", "")
    try:
        index = int(params.get("index", ""))
        wait = float(params.get("wait", min(settings.checkpoint_seconds + 1.0, 30.0)))
        witnessed = int(params.get("witnessed", "0"))  # K: a checkpoint K witnesses cosigned (witnessed_receipts)
    except ValueError:
        return _error(400, "index must be an integer and wait a number of seconds", "invalid_parameter")

    def make() -> dict[str, Any]:
        if witnessed > 0:
            from guard.audit.witnessed_receipts import witnessed_receipt

            return witnessed_receipt(root, log, index, witnessed)
        return receipt(root, log, index)

    if chain_of(log) is None or index < 0 or not 0 <= wait <= 30 or witnessed < 0:
        return _error(400, "log must be a log id (x-guard-audit-leaf), index >= 0, wait 0..30 s", "invalid_parameter")
    root = settings.dir
    journal = getattr(runtime, "journal", None)
    forced = False
    deadline = time.monotonic() + wait
    while True:
        try:
            return JSONResponse(await asyncio.to_thread(make))
        except ProofError as e:
            msg = str(e)
        if "no audit log" in msg or "index must" in msg:
            return _error(404, msg, "not_found")
        if (
            journal is not None
            and not forced
            and origin_for(getattr(journal, "chain", "")) == log
            and index < getattr(journal, "seq", 0)
        ):
            forced = True
            with contextlib.suppress(Exception):  # an unhealthy journal: wait for its own checkpoint instead
                await asyncio.to_thread(journal.checkpoint_now)
            continue
        if time.monotonic() >= deadline:
            retry = str(max(1, int(settings.checkpoint_seconds)))
            return _error(503, msg, "checkpoint_pending", **{"retry-after": retry})
        await asyncio.sleep(0.1)
