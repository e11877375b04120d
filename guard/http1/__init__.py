"""The HTTP/1.1 client Guard forwards with: a keep-alive connection pool per upstream, asyncio protocols, and
responses parsed by httptools (llhttp, the parser uvicorn's server side already uses).

Why not aiohttp's client (DESIGN.md chose it over httpx): under load it took 30% of a worker's CPU per
proxied request (py-spy, 16 connections), more than the whole audit trail. A reverse proxy needs
little of it (no cookies, redirects, proxies, decompression, multipart): one write per request, and the
response's head and body handed over as they arrive. This module does that and nothing else.
"""

from guard.http1.pool import Pool
from guard.http1.response import (
    _HIGH_WATER,
    KEEPALIVE_S,
    MAX_HEAD_BYTES,
    ConnectError,
    ProtocolError,
    ReadTimeout,
    Response,
    TooLarge,
)

__all__ = [
    "KEEPALIVE_S",
    "MAX_HEAD_BYTES",
    "_HIGH_WATER",
    "ConnectError",
    "Pool",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "TooLarge",
]
