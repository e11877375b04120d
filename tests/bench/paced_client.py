"""Paced load with precise latencies: CONNS keep-alive connections, each sending one POST every 1/RATE s
(random start phase) and timing it from the write to the last byte of the answer. A small asyncio client
(pre-built request bytes, Content-Length framing): at a few hundred requests/s it takes a few percent of a
core, where hey (Go) adds milliseconds of its own and reports at 0.1 ms resolution.

Run: python -m tests.bench.paced_client URL BODY HEADERS_JSON CONNS RATE SECONDS [CERT KEY CA]  (prints a JSON
summary). RATE 0: each connection sends its next request as soon as the answer is in (closed loop, as
wrk does). An https URL is reached over TLS, presenting the client certificate CERT/KEY and checking the
server's against CA for the name localhost: Guard over mTLS with no proxy in between.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import sys
import time
from urllib.parse import urlsplit

import uvloop


async def _conn(
    host: str,
    port: int,
    req: bytes,
    period: float,
    end: float,
    lat: list[float],
    bad: list[int],
    tls: ssl.SSLContext | None = None,
) -> None:
    r, w = await asyncio.open_connection(host, port, ssl=tls, server_hostname="localhost" if tls else None)
    nxt = time.monotonic() + random.random() * period
    while True:
        nxt += period
        if nxt > end or (not period and time.monotonic() > end):
            break
        if period:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        t = time.perf_counter()
        w.write(req)
        status = await r.readline()
        length = 0
        while True:
            line = await r.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await r.readexactly(length)
        lat.append(time.perf_counter() - t)
        if status.split(b" ", 2)[1:2] != [b"200"]:
            bad[0] += 1
    w.close()


def main(
    url: str,
    body: str,
    headers: dict[str, str],
    conns: int,
    rate: float,
    seconds: float,
    cert: str | None = None,
    key: str | None = None,
    ca: str | None = None,
) -> dict[str, float]:
    u = urlsplit(url)
    tls = None
    if u.scheme == "https":
        tls = ssl.create_default_context(cafile=ca)
        tls.load_cert_chain(cert, key)  # type: ignore[arg-type]
    data = body.encode()
    head = (
        f"POST {u.path or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    )
    req = (head + "\r\n").encode() + data
    lat: list[float] = []
    bad = [0]

    async def run() -> None:
        end = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _conn(u.hostname or "127.0.0.1", u.port or 80, req, 1.0 / rate if rate > 0 else 0.0, end, lat, bad, tls)
                for _ in range(conns)
            )
        )

    uvloop.run(run())
    lat.sort()
    return {
        "requests": len(lat),
        "rps": round(len(lat) / seconds, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3),
        "non_2xx": bad[0],
        "lat_ms": [round(x * 1000, 3) for x in lat],  # every latency, sorted (callers pool phases)
    }


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(main(a[0], a[1], json.loads(a[2]), int(a[3]), float(a[4]), float(a[5]), *a[6:9])))
