"""Assembles Guard from its configuration: services, the public ASGI app and the admin app."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from guard import telemetry
from guard.config import Config
from guard.errors import error_body
from guard.pipeline import Pipeline, ScreenSet, Services
from guard.upstream import Upstreams

log = logging.getLogger("guard.app")


class GuardApp:
    """The public ASGI app: every HTTP request goes through the Pipeline. Lifespan starts and stops the
    services that run beside requests (journal, forwarder, policy watcher)."""

    def __init__(self, svc: Services, runtime: Any = None) -> None:
        self.svc = svc
        self.pipeline = Pipeline(svc)
        self.runtime = runtime

    async def refused_by_protocol(self, *args: Any) -> Any:
        """Called by guard.server for requests refused before they reach the app (see Pipeline)."""
        return await self.pipeline.refused_by_protocol(*args)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            await self.pipeline(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets are not part of any LLM API Guard serves
            return

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if self.runtime is not None:
                        await self.runtime.start()
                except Exception as e:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    if self.runtime is not None:
                        await self.runtime.stop()
                    await self.svc.upstreams.close()
                    if self.svc.quotas is not None:
                        await self.svc.quotas.close()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def admin_app(runtime: Any) -> Starlette:
    """Health, readiness, metrics and reload: loopback by default, never on the public port."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        checks = await runtime.readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(telemetry.exposition_registry()), media_type=CONTENT_TYPE_LATEST)

    token = runtime.config.admin.reload_token() if runtime is not None else None
    expected = f"Bearer {token}".encode() if token else None

    async def reload(request: Request) -> Response:
        if expected is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode("latin-1", "replace"), expected
        ):
            log.warning(
                "admin reload refused: missing or wrong token from %s", request.client.host if request.client else "?"
            )
            telemetry.POLICY_RELOADS.labels("unauthorized").inc()
            return Response(
                error_body(
                    "POST /admin/reload needs Authorization: Bearer <admin.reload_token_env>",
                    "invalid_request_error",
                    "unauthorized",
                ),
                status_code=401,
                media_type="application/json",
                headers={"www-authenticate": "Bearer"},
            )
        if getattr(runtime, "supervised", False):  # the workers share this socket: let the supervisor tell all
            import os
            import signal

            os.kill(os.getppid(), signal.SIGHUP)
            return JSONResponse({"ok": True, "forwarded": "SIGHUP to every worker"}, status_code=202)
        result = await runtime.reload(trigger="admin")
        return JSONResponse(result, status_code=200 if result.get("ok") else 422)

    async def quotas(request: Request) -> Response:
        """Current use per principal and tier (``?principal=`` for one); behind the reload token when set."""
        if expected is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode("latin-1", "replace"), expected
        ):
            return Response(
                error_body(
                    "GET /admin/quotas needs Authorization: Bearer <admin.reload_token_env>",
                    "invalid_request_error",
                    "unauthorized",
                ),
                status_code=401,
                media_type="application/json",
                headers={"www-authenticate": "Bearer"},
            )
        q = getattr(getattr(runtime, "services_built", None), "quotas", None)
        if q is None:
            return JSONResponse({"enabled": False, "principals": {}})
        from guard.quota.redis_backend import BackendDown

        try:
            return JSONResponse({"enabled": True, **await q.usage(request.query_params.get("principal"))})
        except BackendDown as e:
            return Response(
                error_body(str(e), "service_unavailable", "quota_unavailable"),
                status_code=503,
                media_type="application/json",
            )

    async def audit_proof(request: Request) -> Response:
        """A receipt: the inclusion proof of one journal event in the signed checkpoint that covers it
        (guard.audit.proofs), waiting for (or, for this worker's own chain, forcing) that checkpoint."""
        if expected is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode("latin-1", "replace"), expected
        ):
            return Response(
                error_body(
                    "GET /audit/v1/proof needs Authorization: Bearer <admin.reload_token_env>",
                    "invalid_request_error",
                    "unauthorized",
                ),
                status_code=401,
                media_type="application/json",
                headers={"www-authenticate": "Bearer"},
            )
        from guard.audit.receipts_http import proof_response

        return await proof_response(runtime, request.query_params)

    async def not_found(request: Request, exc: Exception) -> Response:
        return Response(
            error_body("not found", "invalid_request_error", "not_found"),
            status_code=404,
            media_type="application/json",
        )

    routes: list[Any] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/admin/reload", reload, methods=["POST"]),
        Route("/admin/quotas", quotas, methods=["GET"]),
        Route("/audit/v1/proof", audit_proof, methods=["GET"]),
    ]
    if runtime is not None and runtime.config.console.enabled:  # the compliance console: admin listener only
        from starlette.routing import Mount

        from guard.console.app import console_app

        routes.append(Mount("/console", app=console_app(runtime)))
    return Starlette(routes=routes, exception_handlers={404: not_found})


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_services(
    config: Config,
    policy: Any,
    recorder: Any,
    screens: Callable[[str], ScreenSet],
    clock: Callable[[], datetime] | None = None,
    tracing: Any = None,
) -> Services:
    from guard.quota.core import from_settings

    return Services(
        config=config,
        upstreams=Upstreams(config),
        policy=policy,
        recorder=recorder,
        screens=screens,
        clock=clock or utc_now,
        tracing=tracing,
        quotas=from_settings(config.quotas),
    )
