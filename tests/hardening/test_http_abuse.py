"""HTTP abuse against the running server (issue 8, item 2), over real mTLS with a valid client certificate.

Every hostile request gets a clean 4xx (OpenAI error shape, request id) or a closed connection — never a 500,
never a hang — while a well-behaved client keeps being served (its latency is measured and printed), and the
process's open file descriptors and RSS come back to about their baseline afterwards. Guard runs in this
process (guard_factory), so /proc/self is Guard's, plus the attackers' own sockets, which are closed first."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import ssl
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard import server
from tests.hardening.conftest import events, metric, tls_socket
from tests.ops.conftest import guard_process  # noqa: F401 - the fixture: Guard as a subprocess

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"


@pytest.fixture
def fast_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short read timeouts so the slow-client tests take seconds (defaults: 10 s headers, 30 s body)."""
    monkeypatch.setattr(server._TLSHttpTools, "header_timeout_s", 1.5)
    monkeypatch.setattr(server._TLSHttpTools, "body_timeout_s", 2.0)


def _read_all(s: ssl.SSLSocket, limit: float = 10.0) -> bytes:
    """Everything until the server closes (or ``limit`` seconds: the test then fails on the content)."""
    s.settimeout(limit)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    return out


def _answered(s: ssl.SSLSocket, wait: float = 0.1) -> bool:
    """Wait up to ``wait`` seconds; True once the server has sent something (or closed)."""
    return bool(select.select([s], [], [], wait)[0])


def _first_line(resp: bytes) -> str:
    return resp.split(b"\r\n", 1)[0].decode("latin-1")


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else 0


def _assert_error(resp: bytes, status: int, code: str) -> None:
    assert _status(resp) == status, resp[:200]
    head, _, body = resp.partition(b"\r\n\r\n")
    assert b"x-guard-request-id: " in head and b"connection: close" in head
    assert json.loads(body)["error"]["code"] == code


MALFORMED = {
    # request smuggling: a body length that two parsers could read differently is refused, never guessed
    "content_length_and_transfer_encoding": HEAD + b"content-length: 66\r\ntransfer-encoding: chunked\r\n\r\n" + BODY,
    "duplicate_content_length": HEAD + b"content-length: 66\r\ncontent-length: 71\r\n\r\n" + BODY,
    "duplicate_equal_content_length": HEAD + b"content-length: 66\r\ncontent-length: 66\r\n\r\n" + BODY,
    "transfer_encoding_not_chunked_last": HEAD + b"transfer-encoding: chunked, identity\r\n\r\n" + BODY,
    "negative_content_length": HEAD + b"content-length: -1\r\n\r\n" + BODY,
    "space_before_colon": HEAD + b"content-length : 66\r\n\r\n" + BODY,
    "obsolete_line_folding": HEAD + b"x-folded: a\r\n b\r\ncontent-length: 66\r\n\r\n" + BODY,
    "bare_lf": HEAD.replace(b"\r\n", b"\n") + b"content-length: 66\n\n" + BODY,
    "nul_in_header": HEAD + b"x-nul: a\x00b\r\ncontent-length: 66\r\n\r\n" + BODY,
}
TOO_LARGE = {
    "one_huge_header": HEAD + b"x-big: " + b"a" * 200_000 + b"\r\ncontent-length: 66\r\n\r\n" + BODY,
    "huge_url": b"POST /v1/chat/completions?" + b"q" * 100_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n",
    "too_many_headers": HEAD + b"".join(b"x-h%d: v\r\n" % i for i in range(200)) + b"content-length: 66\r\n\r\n" + BODY,
    "headers_just_under_64k_but_many": HEAD
    + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 400) for i in range(150))
    + b"\r\n",
}


def test_malformed_and_oversized_requests_get_a_clean_4xx(guard_factory: Any) -> None:
    g = guard_factory()
    ctx = g.ssl_context("app")
    for name, raw in MALFORMED.items():
        with tls_socket(g.url, ctx) as s:
            s.sendall(raw)
            resp = _read_all(s)
        print(f"{name}: {_first_line(resp)}")
        _assert_error(resp, 400, "invalid_http_request")
    for name, raw in TOO_LARGE.items():
        with tls_socket(g.url, ctx) as s:
            with contextlib.suppress(ConnectionError, ssl.SSLError):  # refused before the client finished sending
                s.sendall(raw)
            resp = _read_all(s)
        print(f"{name}: {_first_line(resp)}")
        _assert_error(resp, 431, "headers_too_large")
    # the well-formed request on the same server is served
    with tls_socket(g.url, ctx) as s:
        s.sendall(HEAD + b"content-length: 66\r\nconnection: close\r\n\r\n" + BODY)
        assert _status(_read_all(s)) == 200


def _rid(resp: bytes) -> str:
    head = resp.partition(b"\r\n\r\n")[0].decode("latin-1")
    return next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.startswith("x-guard-request-id:"))


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_requests_refused_before_the_app_are_audited_under_their_request_id(guard_factory: Any, http: str) -> None:
    """Malformed or oversized requests never reach the pipeline, yet each one reached Guard: its answer (the
    OpenAI error shape, with both of uvicorn's HTTP implementations) and its exchange.denied record share a
    request id, with the status, the code, stage ``request`` and the client's certificate identity."""
    g = guard_factory(http=http)
    ctx = g.ssl_context("app")
    cases = [
        (MALFORMED["duplicate_content_length"], 400, "invalid_http_request"),
        (MALFORMED["nul_in_header"], 400, "invalid_http_request"),
    ]
    if http == "httptools":  # h11 has its own size limit (a 400) and no header-count limit
        cases.append((TOO_LARGE["too_many_headers"], 431, "headers_too_large"))
    seen = {}
    for raw, status, code in cases:
        with tls_socket(g.url, ctx) as s:
            s.sendall(raw)
            resp = _read_all(s)
        _assert_error(resp, status, code)
        seen[_rid(resp)] = (status, code)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        denied = {e["request_id"]: e for e in events(g.config.audit.dir) if e.get("type") == "exchange.denied"}
        if set(seen) <= set(denied):
            break
        time.sleep(0.05)
    for rid, (status, code) in seen.items():
        e = denied[rid]
        assert e["outcome"]["status"] == status and e["denial"] == {"stage": "request", "code": code}, e
        assert e["principal"]["cn"] == "billing-app" and e["client_ip"] == "127.0.0.1"
    assert metric(g.admin_url, "guard_requests_total", decision="none", status="400") >= 2
    from guard.audit.schema import journal_errors

    assert journal_errors(g.config.audit.dir) == []


def test_a_protocol_refusal_that_cannot_be_recorded_is_a_503(guard_factory: Any, tmp_path: Any) -> None:
    """Fail closed: when the journal cannot take the record, the refused request is answered 503
    audit_unavailable. The journal really fails here: its sealer process is killed, and until a new one has
    resumed the chain (no sooner than a second later) every record is refused. With a real full disk (a tmpfs,
    where the test may mount one) tests/audit/test_proxy_audit.py checks the same."""
    import signal

    g = guard_factory(audit={"dir": str(tmp_path / "audit"), "sealer": "process"})
    journal = g.runtime.journal
    journal._proc.kill()
    journal._proc.wait(10)
    deadline = time.monotonic() + 5
    while journal.healthy and time.monotonic() < deadline:  # the worker notices its sealer is gone
        time.sleep(0.02)
    assert not journal.healthy and journal._proc.returncode == -signal.SIGKILL
    with tls_socket(g.url, g.ssl_context("app")) as s:
        s.sendall(MALFORMED["bare_lf"])
        resp = _read_all(s)
    assert _status(resp) == 503, resp[:300]
    assert json.loads(resp.partition(b"\r\n\r\n")[2])["error"]["code"] == "audit_unavailable"


def test_slow_headers_and_slow_bodies_are_cut_off(guard_factory: Any, fast_timeouts: None) -> None:
    g = guard_factory()
    ctx = g.ssl_context("app")

    def idle() -> bytes:
        with tls_socket(g.url, ctx) as s:
            return _read_all(s)

    def trickle(first: bytes, byte: bytes) -> bytes:  # ``first``, then ``byte`` every 100 ms until answered
        with tls_socket(g.url, ctx) as s:
            s.sendall(first)
            t0 = time.monotonic()
            try:
                while time.monotonic() - t0 < 8 and not _answered(s):
                    s.sendall(byte)
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            return _read_all(s)

    def slowloris() -> bytes:  # a header byte every 100 ms, never the blank line
        return trickle(HEAD, b"x")

    def slow_body() -> bytes:  # headers at once, then a body byte every 100 ms
        return trickle(HEAD + b"content-length: 1000\r\n\r\n", b" ")

    answers: dict[str, bytes] = {}
    for fn, status in ((idle, 408), (slowloris, 408), (slow_body, 0)):
        t0 = time.monotonic()
        resp = answers[fn.__name__] = fn()
        took = time.monotonic() - t0
        print(f"{fn.__name__}: cut after {took:.2f} s, answer {_first_line(resp)!r}")
        assert took < 5, f"{fn.__name__} was not cut off in time"
        if status:
            _assert_error(resp, status, "request_timeout")
        else:
            assert resp == b""  # the app was reading the body: the connection is closed, nothing is sent
    # the slowloris request is recorded under the id it was answered with; the idle connection sent no
    # request, so there is nothing to record
    slow_rid = _rid(answers["slowloris"])
    denied = {e["request_id"]: e for e in events(g.config.audit.dir) if e.get("type") == "exchange.denied"}
    assert denied[slow_rid]["denial"] == {"stage": "request", "code": "request_timeout"}
    assert _rid(answers["idle"]) not in denied
    # the slow body reached the pipeline: it is recorded as a client that went away (499), not lost
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        gone = [
            e
            for e in events(g.config.audit.dir)
            if e.get("type") in ("exchange.denied", "exchange.completed") and json.dumps(e).count("client_disconnected")
        ]
        if gone:
            break
        time.sleep(0.1)
    assert gone, "the cut-off slow body left no audit record"


# --- a bounded mixed attack while a well-behaved client is measured ---------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    """RSS after a GC and glibc's malloc_trim: memory still referenced, not the allocator's freed high-water mark."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Prober(threading.Thread):
    """A well-behaved client: one keep-alive connection, one small request every 50 ms."""

    def __init__(self, g: Any) -> None:
        super().__init__(daemon=True)
        self.g = g
        self.stop = threading.Event()
        self.lat: list[float] = []
        self.statuses: list[int] = []

    def run(self) -> None:
        with self.g.client("app", timeout=15) as c:
            while not self.stop.is_set():
                t = time.perf_counter()
                try:
                    r = c.post("/v1/chat/completions", content=BODY, headers={"content-type": "application/json"})
                    self.statuses.append(r.status_code)
                except httpx.HTTPError as e:
                    self.statuses.append(-1)
                    print("well-behaved client error:", repr(e))
                self.lat.append((time.perf_counter() - t) * 1000)
                time.sleep(0.05)

    def report(self, label: str) -> dict[str, float]:
        lat = sorted(self.lat)
        out = {
            "n": len(lat),
            "p50_ms": statistics.median(lat),
            "p95_ms": lat[int(len(lat) * 0.95) - 1] if lat else 0,
            "max_ms": lat[-1] if lat else 0,
        }
        print(f"well-behaved client {label}: " + ", ".join(f"{k}={v:.1f}" for k, v in out.items()))
        return out


async def _attack(g: Any, ctx: ssl.SSLContext, idle_n: int, streams_n: int, bursts: int, burst_n: int) -> dict:
    port = int(g.url.rsplit(":", 1)[1])
    out: dict[str, Any] = {}

    async def open_idle() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 20
            )
        except (TimeoutError, OSError):
            return None

    # 1. many idle connections (TLS done, no request), opened 50 at a time
    t0 = time.monotonic()
    idle: list[Any] = []
    for i in range(0, idle_n, 50):
        idle += await asyncio.gather(*(open_idle() for _ in range(min(50, idle_n - i))))
    out["idle_opened"] = sum(1 for c in idle if c)
    out["idle_open_s"] = time.monotonic() - t0

    # 2. many concurrent streams, and 3. bursts of clients that go away mid-stream, while the idle ones sit
    async with httpx.AsyncClient(
        base_url=g.url, verify=ctx, timeout=20, limits=httpx.Limits(max_connections=streams_n + burst_n)
    ) as c:
        stream_req = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "[[reply: " + "word " * 20 + "]] [[delay_ms=40]]"}],
        }

        async def full_stream() -> tuple[int, bool, str]:
            async with c.stream("POST", "/v1/chat/completions", json=stream_req) as r:
                text = "".join([line async for line in r.aiter_lines()])
                return r.status_code, "[DONE]" in text, text[-160:]

        endless_req = {**stream_req, "messages": [{"role": "user", "content": "[[forever]] [[delay_ms=40]]"}]}

        async def leave_mid_stream() -> int:
            # an answer the model server writes until its client goes away; the client leaves after the
            # first chunk or 300 ms, whichever comes first (Llama Guard's default hold mode sends no text
            # before the first window is judged)
            async with c.stream("POST", "/v1/chat/completions", json=endless_req) as r:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(r.aiter_bytes().__anext__(), 0.3)
                return r.status_code

        full = asyncio.gather(*(full_stream() for _ in range(streams_n)))
        left = []
        for _ in range(bursts):
            left += await asyncio.gather(*(leave_mid_stream() for _ in range(burst_n)))
        out["streams"] = await full
        out["left"] = left

    # the idle connections: the server answers each with 408 after header_timeout_s and closes
    async def fate(conn: Any) -> bytes:
        reader, writer = conn
        try:
            return await asyncio.wait_for(reader.read(), 10)
        except (TimeoutError, OSError, ssl.SSLError):
            return b"?"
        finally:
            writer.close()

    fates = await asyncio.gather(*(fate(c) for c in idle if c))
    out["idle_408"] = sum(1 for f in fates if f.startswith(b"HTTP/1.1 408 "))
    return out


def test_mixed_attack_keeps_serving_and_returns_to_baseline(
    guard_factory: Any, monkeypatch: pytest.MonkeyPatch, model_server: Any
) -> None:
    monkeypatch.setattr(server._TLSHttpTools, "header_timeout_s", 4.0)
    g = guard_factory()
    ctx = g.ssl_context("app")
    with g.client() as c:  # warm up (pools, caches, lazy screens)
        for _ in range(5):
            assert (
                c.post("/v1/chat/completions", content=BODY, headers={"content-type": "application/json"}).status_code
                == 200
            )
    quiet = Prober(g)
    quiet.start()
    time.sleep(1.5)
    quiet.stop.set()
    quiet.join()
    base = quiet.report("before the attack")
    fd0, rss0 = _fds(), _rss_mb()
    cancelled0 = model_server[0].cancelled

    prober = Prober(g)
    prober.start()
    t0 = time.monotonic()
    got = asyncio.run(_attack(g, ctx, idle_n=400, streams_n=50, bursts=3, burst_n=30))
    attack_s = time.monotonic() - t0
    prober.stop.set()
    prober.join(20)
    during = prober.report(f"during the attack ({attack_s:.1f} s)")
    print({k: v for k, v in got.items() if k not in ("streams", "left")})

    assert got["idle_opened"] == 400
    assert got["idle_408"] == 400, "idle connections were not reaped by the header timeout"
    assert all(s[:2] == (200, True) for s in got["streams"]), [s for s in got["streams"] if s[:2] != (200, True)]
    assert all(s == 200 for s in got["left"]), got["left"]
    assert prober.statuses and all(s == 200 for s in prober.statuses), prober.statuses
    assert during["max_ms"] < 5000 and during["p50_ms"] < max(10 * base["p50_ms"], 500)

    # abandoned streams: Guard stops the upstream stream too, and nothing stays active
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        metric(g.admin_url, "guard_active_streams") > 0 or model_server[0].cancelled - cancelled0 < 90
    ):
        time.sleep(0.1)
    assert metric(g.admin_url, "guard_active_streams") == 0
    assert model_server[0].cancelled - cancelled0 >= 90
    # back to baseline: fds (Guard's and the attackers', all closed now) and RSS
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _fds() > fd0 + 10:
        time.sleep(0.2)
    fd1, rss1 = _fds(), _rss_mb()
    print(f"open fds: {fd0} before, {fd1} after; RSS: {rss0:.1f} MB before, {rss1:.1f} MB after")
    assert fd1 <= fd0 + 10
    assert rss1 <= rss0 * 1.15 + 20


def test_read_timeouts_spare_a_long_response_with_a_pipelined_request(guard_factory: Any, fast_timeouts: None) -> None:
    """The header timer must not cut a connection whose previous response (a stream longer than the header
    and body timeouts) is still being sent while the client has pipelined part of its next request."""
    g = guard_factory()
    stream = json.dumps(
        {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "[[reply: a b c d e f g h]] [[delay_ms=400]]"}],
        }
    ).encode()
    with tls_socket(g.url, g.ssl_context("app")) as s:
        s.sendall(HEAD + b"content-length: %d\r\n\r\n" % len(stream) + stream)
        s.sendall(HEAD + b"content-length: 66\r\n")  # the next request's headers, unfinished for now
        resp = _read_all(s, limit=5)
    print(f"stream of {len(resp)} bytes, ends {resp[-40:]!r}")
    assert _status(resp) == 200 and b"data: [DONE]" in resp


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_attack_on_guard_as_a_process_with_default_timeouts(guard_process: Any) -> None:  # noqa: F811
    """The same attack on `guard serve` as its own process, with the shipped timeouts (10 s for headers):
    Guard's own RSS and open file descriptors, from /proc/PID, before and after."""
    g = guard_process()
    pid = g.proc.pid
    with g.client("app") as c:
        for _ in range(5):
            assert (
                c.post("/v1/chat/completions", content=BODY, headers={"content-type": "application/json"}).status_code
                == 200
            )
    fd0, rss0 = len(os.listdir(f"/proc/{pid}/fd")), _proc_rss_mb(pid)
    prober = Prober(g)
    prober.start()
    t0 = time.monotonic()
    got = asyncio.run(_attack(g, g.ssl("app"), idle_n=300, streams_n=30, bursts=2, burst_n=30))
    attack_s = time.monotonic() - t0
    prober.stop.set()
    prober.join(20)
    during = prober.report(f"during the attack on the process ({attack_s:.1f} s)")
    print({k: v for k, v in got.items() if k not in ("streams", "left")})
    assert got["idle_opened"] == 300 and got["idle_408"] == 300
    assert all(s[:2] == (200, True) for s in got["streams"]) and all(s == 200 for s in got["left"])
    assert prober.statuses and all(s == 200 for s in prober.statuses), prober.statuses
    assert during["max_ms"] < 5000
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(os.listdir(f"/proc/{pid}/fd")) > fd0 + 5:
        time.sleep(0.2)
    fd1, rss1 = len(os.listdir(f"/proc/{pid}/fd")), _proc_rss_mb(pid)
    print(f"guard process: open fds {fd0} before, {fd1} after; RSS {rss0:.1f} MB before, {rss1:.1f} MB after")
    assert fd1 <= fd0 + 5
    assert rss1 <= rss0 * 1.10 + 10
