"""Guard's Pipeline driven in-process (no uvicorn, no load generator) with Chat Completions requests, for the
benchmarks of CPU per request (bench_pipeline_cpu, bench_pipeline_ab, bench_quota): the fixed upstream, the
ASGI request and the loop of sequential requests, in one place."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.bench.common import (
    CHAT_BODY,
    FIXED_COMPLETION,
    NGINX,
    XFCC,
    free_port,
    have,
    model_server_cmd,
    nginx_conf,
    wait_port,
)

App = Callable[..., Awaitable[None]]  # an ASGI app: (scope, receive, send)


@contextmanager
def fixed_upstream(d: Path, nginx_only: bool = False) -> Iterator[str]:
    """A model server on loopback that answers every request with ``FIXED_COMPLETION``: nginx when installed
    (its CPU is not this process's), else the built-in model server (``nginx_only``: refuse instead). Yields
    its URL; stopped on exit."""
    port = free_port()
    if have("nginx"):
        conf = nginx_conf(
            d / "ng",
            f"""  server {{ listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{FIXED_COMPLETION}'; }} }}""",
        )
        up = subprocess.Popen([NGINX, "-c", str(conf)])
    elif nginx_only:
        raise SystemExit("needs nginx for the fixed upstream")
    else:
        up = subprocess.Popen(model_server_cmd(port))
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        up.terminate()
        up.wait(10)


class ChatRequests:
    """Sequential ``POST /v1/chat/completions`` requests to an ASGI app, as sent by a client behind a trusted
    proxy that names it in ``x-forwarded-client-cert`` (XFCC); the statuses answered are kept in ``statuses``."""

    def __init__(self, body: bytes | None = None) -> None:
        self.body = CHAT_BODY.encode() if body is None else body
        self.statuses: set[int] = set()
        self.scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": "/v1/chat/completions",
            "client": ("127.0.0.1", 5555),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode()),
                (b"x-forwarded-client-cert", XFCC.encode()),
            ],
        }

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, m: dict[str, Any]) -> None:
        if m["type"] == "http.response.start":
            self.statuses.add(m["status"])

    async def run(self, app: App, n: int) -> None:
        scope, receive, send = self.scope, self.receive, self.send
        for _ in range(n):
            await app(scope, receive, send)

    async def cpu_us(self, app: App, n: int) -> float:
        """This process's CPU per request (its threads included) over ``n`` requests, in microseconds."""
        t = time.process_time()
        await self.run(app, n)
        return (time.process_time() - t) / n * 1e6
