"""Loopback stand-ins for SIEM endpoints (Splunk HEC, webhook), reused by tests/bench/bench_audit.py."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web

from guard.audit.sinks import webhook_signature_ok


def free_port() -> int:
    from guard.demo.stack import free_port as pick

    return pick()


class Receiver:
    """An aiohttp app on 127.0.0.1 in its own thread. ``failing`` makes it answer 503."""

    def __init__(self, token: str = "", secret: bytes = b"", parse: bool = True) -> None:
        self.token, self.secret, self.parse = token, secret, parse
        self.failing = False
        self.events: list[Any] = []
        self.count = 0
        self.requests = 0
        self.rejected = 0
        self.headers: list[dict[str, str]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/services/collector/event", self._hec)
        app.router.add_post("/hook", self._hook)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _hec(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.failing:
            return web.json_response({"text": "Server is busy", "code": 9}, status=503)
        if request.headers.get("Authorization") != f"Splunk {self.token}":
            self.rejected += 1
            return web.json_response({"text": "Invalid token", "code": 4}, status=403)
        body = await request.read()
        if self.parse:
            for line in body.split(b"\n"):
                item = json.loads(line)
                assert {"time", "event", "sourcetype"} <= set(item)
                self.events.append(item["event"])
        self.count += body.count(b"\n") + 1
        return web.json_response({"text": "Success", "code": 0})

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.failing:
            return web.Response(status=503)
        body = await request.read()
        self.headers.append(dict(request.headers))
        ok = webhook_signature_ok(
            self.secret,
            request.headers.get("X-Guard-Timestamp", ""),
            body,
            request.headers.get("X-Guard-Signature", ""),
        )
        if not ok:
            self.rejected += 1
            return web.Response(status=401)
        doc = json.loads(body)
        self.events.extend(doc["events"])
        self.count += doc["count"]
        return web.Response(status=204)
