"""Clients that leave mid-stream make Guard cancel the model server's stream, whatever Guard was doing with the
text at that moment: holding it (Llama Guard ``stream_mode: hold`` waits for a window's verdict, so nothing
has been sent yet), or passing it on (``monitor``), and with many clients leaving at once while other streams
run. An abandoned upstream stream that runs on costs the operator the model's time and a connection.

Real parts: Guard over mTLS (tests/conftest.py), the stand-in model server (it counts streams whose
connection closed before their end), python ssl and httpx as clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.demo.stack import screening_filters
from tests.hardening.conftest import metric, tls_socket

WORDS = 60
DELAY_MS = 40  # the whole answer takes WORDS * DELAY_MS = 2.4 s upstream
BOUND_S = 1.0  # a departed client's upstream stream must be cancelled within this


def _filters(tmp: Path, judge_url: str, mode: str) -> Path:
    d = screening_filters(tmp / f"filters-{mode}", judge_url)
    safety = d / "safety.yaml"
    assert "stream_mode: hold" in safety.read_text()
    safety.write_text(safety.read_text().replace("stream_mode: hold", f"stream_mode: {mode}"))
    return d


def _request(words: int = WORDS) -> bytes:
    body = json.dumps(
        {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": f"[[reply: {'word ' * words}]] [[delay_ms={DELAY_MS}]]"}],
        }
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )


def _leave_after(g: Any, seconds: float, words: int = WORDS) -> bytes:
    """Send a stream request, read the response head, wait ``seconds`` and close; what arrived by then."""
    s = tls_socket(g.url, g.ssl_context("app"))
    s.sendall(_request(words))
    s.settimeout(5)
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 ")
    time.sleep(seconds)
    s.settimeout(0.01)
    with contextlib.suppress(TimeoutError, ssl.SSLError, OSError):
        got += s.recv(65536)
    s.close()
    return got


def _wait_cancelled(ms: Any, at_least: int, bound: float) -> float:
    """Seconds until the model server counted ``at_least`` cancelled streams (or ``bound``: the test then fails)."""
    t0 = time.monotonic()
    while ms.cancelled < at_least and time.monotonic() - t0 < bound:
        time.sleep(0.01)
    return time.monotonic() - t0


@pytest.mark.parametrize("mode", ["hold", "monitor"])
def test_client_leaving_while_text_is_held_cancels_the_upstream(
    guard_factory: Any, model_server: Any, tmp_path: Path, mode: str
) -> None:
    """The client reads the response head, waits 300 ms (in ``hold`` mode no text has reached it: the answer
    is shorter than one Llama Guard window), and closes its connection: the model server's stream is
    cancelled within BOUND_S, long before the answer's 2.4 s, and the exchange is audited as a 499."""
    ms = model_server[0]
    g = guard_factory(filters={"dir": str(_filters(tmp_path, model_server[1], mode))})
    for how in ("close", "shutdown"):  # a plain close, and a TLS close_notify then close
        before, finished = ms.cancelled, ms.finished
        s = tls_socket(g.url, g.ssl_context("app"))
        s.sendall(_request())
        s.settimeout(5)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 ")
        time.sleep(0.3)
        s.settimeout(0.01)
        with contextlib.suppress(TimeoutError, ssl.SSLError, OSError):
            got += s.recv(65536)
        if mode == "hold":
            assert b"word" not in got.partition(b"\r\n\r\n")[2], "held text was sent before its verdict"
        if how == "shutdown":
            with contextlib.suppress(ssl.SSLError, OSError):
                s.unwrap()
        s.close()
        took = _wait_cancelled(ms, before + 1, BOUND_S + 2)
        print(f"{mode}/{how}: upstream stream cancelled {took * 1000:.0f} ms after the client left")
        assert ms.cancelled == before + 1 and took < BOUND_S, f"{mode}/{how}: not cancelled within {BOUND_S} s"
        assert ms.finished == finished
    deadline = time.monotonic() + 3
    while metric(g.admin_url, "guard_active_streams") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(g.admin_url, "guard_active_streams") == 0
    assert metric(g.admin_url, "guard_requests_total", status="499") >= 2


@pytest.mark.parametrize("mode", ["hold", "monitor"])
def test_bursts_of_departing_clients_all_cancel_their_upstreams(
    guard_factory: Any, model_server: Any, tmp_path: Path, mode: str
) -> None:
    """Three bursts of 20 httpx clients that leave after the response head and the first chunk or 200 ms,
    whichever comes first (``hold``: no text arrives before then; ``monitor``: the first chunk does), while
    10 full streams run: every one of the 60 upstream
    streams is cancelled, each within the bound, and the full streams end with [DONE]."""
    ms = model_server[0]
    g = guard_factory(filters={"dir": str(_filters(tmp_path, model_server[1], mode))})
    before = ms.cancelled
    req = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": f"[[reply: {'word ' * WORDS}]] [[delay_ms={DELAY_MS}]]"}],
    }

    async def run() -> tuple[list[str], list[float]]:
        async with httpx.AsyncClient(
            base_url=g.url, verify=g.ssl_context("app"), timeout=20, limits=httpx.Limits(max_connections=40)
        ) as c:

            async def full() -> str:
                async with c.stream("POST", "/v1/chat/completions", json=req) as r:
                    return "\n".join([line async for line in r.aiter_lines()])

            async def leave() -> None:  # after the response head: the first chunk or 200 ms, whichever first
                async with c.stream("POST", "/v1/chat/completions", json=req) as r:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(r.aiter_bytes().__anext__(), 0.2)

            fulls = asyncio.gather(*(full() for _ in range(10)))
            took = []
            for i in range(3):
                await asyncio.gather(*(leave() for _ in range(20)))
                t0 = time.monotonic()
                while ms.cancelled - before < 20 * (i + 1) and time.monotonic() - t0 < BOUND_S + 2:
                    await asyncio.sleep(0.01)
                took.append(time.monotonic() - t0)
            return await fulls, took

    done, took = asyncio.run(run())
    print(f"{mode}: {ms.cancelled - before}/60 cancelled; per burst, all within {[round(t, 2) for t in took]} s")
    assert ms.cancelled - before == 60 and all(t < BOUND_S for t in took), (ms.cancelled - before, took)
    for text in done:
        assert text.rstrip().endswith("data: [DONE]") and "content_filter" not in text, text[-300:]


def test_client_leaving_while_a_verdict_is_awaited_cancels_the_upstream(
    model_server: Any, guard_factory: Any, tmp_path: Path
) -> None:
    """Llama Guard in ``hold`` mode with a judge that takes 3 s a verdict: the first 80-character window is
    sent to the judge after about 0.6 s and the answer waits for it. The client leaves at 1 s, while Guard
    awaits that verdict and the model server is still writing (the answer takes 2.4 s): the upstream stream
    is cancelled within BOUND_S, not after the verdict (by which time the model server has finished)."""
    from guard.demo.llama_guard_standin import StandIn, StandInThread
    from tests.filters.test_safety_proxy import filters_dir

    judge = StandInThread(StandIn(ignore=r"\[\[.*?\]\]", delay_ms=3000))
    try:
        ms = model_server[0]
        g = guard_factory(
            filters={
                "dir": str(
                    filters_dir(
                        tmp_path,
                        judge.url,
                        prompt={"enabled": False},
                        response={"window_chars": 80, "stream_mode": "hold"},
                        fail={"timeout_ms": 10000},
                    )
                )
            }
        )
        before, finished = ms.cancelled, ms.finished
        got = _leave_after(g, 1.0)
        assert b"word" not in got.partition(b"\r\n\r\n")[2]  # nothing judged yet, nothing sent
        took = _wait_cancelled(ms, before + 1, BOUND_S + 3)
        print(f"slow verdict: upstream stream cancelled {took * 1000:.0f} ms after the client left")
        assert ms.cancelled == before + 1 and took < BOUND_S and ms.finished == finished
    finally:
        judge.stop()
