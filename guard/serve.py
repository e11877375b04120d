"""Running Guard: the public mTLS listener and the admin listener in one event loop, with signals."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any, Iterator

import uvicorn

from guard.app import GuardApp, admin_app
from guard.runtime import Runtime
from guard.server import protocol_class

log = logging.getLogger("guard.serve")


class _Server(uvicorn.Server):
    """uvicorn server whose signals Guard handles itself (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def public_server(rt: Runtime, http: str = "httptools", sockets: Any = None) -> _Server:
    cfg = rt.config
    app = GuardApp(rt.services(), rt)
    tls_front = rt.tls.front
    ucfg = uvicorn.Config(app, host=cfg.listen.host, port=cfg.listen.port, http=protocol_class(http),
                          ssl_context_factory=(lambda _c, _d: tls_front) if tls_front is not None else None,
                          lifespan="on", log_level="warning", access_log=False, server_header=False,
                          date_header=False, timeout_graceful_shutdown=cfg.shutdown_deadline_s or None,
                          timeout_keep_alive=30, limit_max_requests=None, h11_max_incomplete_event_size=65536)
    return _Server(ucfg)


def admin_server(rt: Runtime) -> _Server:
    cfg = rt.config
    ucfg = uvicorn.Config(admin_app(rt), host=cfg.admin.host, port=cfg.admin.port, lifespan="off",
                          log_level="warning", access_log=False)
    return _Server(ucfg)


async def serve(rt: Runtime, http: str = "httptools", ready: asyncio.Event | None = None,
                sockets: Any = None) -> int:
    """Serve until SIGTERM/SIGINT (graceful: in-flight requests finish up to the deadline) — SIGHUP reloads."""
    pub = public_server(rt, http)
    servers = [pub] + ([admin_server(rt)] if rt.config.admin.enabled else [])
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for s in servers:
            s.should_exit = True

    def hup() -> None:
        loop.create_task(rt.reload())

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        loop.add_signal_handler(signal.SIGHUP, hup)
    tasks = [asyncio.create_task(pub.serve(sockets=sockets))]
    tasks += [asyncio.create_task(s.serve()) for s in servers[1:]]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    if ready is not None:
        ready.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0 if all(s.started for s in servers) else 1
