"""The baseline: a minimal Starlette + aiohttp reverse proxy (what DESIGN.md measured at 6,790 req/s).

Run: python -m tests.bench.baseline_proxy UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
session: aiohttp.ClientSession | None = None


async def proxy(request: Request) -> Response:
    global session
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    body = await request.body()
    resp = await session.post(UPSTREAM + request.url.path, data=body, headers={"content-type": "application/json"})
    if "event-stream" in resp.headers.get("content-type", ""):

        async def gen():
            async for chunk in resp.content.iter_any():
                yield chunk
            resp.release()

        return StreamingResponse(gen(), status_code=resp.status, media_type="text/event-stream")
    data = await resp.read()
    return Response(data, status_code=resp.status, media_type=resp.headers.get("content-type"))


app = Starlette(routes=[Route("/v1/chat/completions", proxy, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
