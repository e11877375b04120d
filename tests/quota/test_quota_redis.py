"""Quotas shared through a real redis-server (started here on a free loopback port) by two Guard instances:
the limit holds across them under concurrent clients; Redis killed mid-run answers per ``on_error`` without
hanging; Redis restarted, admission recovers."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from guard.demo.stack import free_port
from tests.audit.proxy_helpers import by_request, journal_events, metric

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(
    not Path(REDIS).exists(), reason="redis-server is not installed (Debian package redis-server; make debian-deps)"
)
CHAT = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Redis:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None

    def start(self) -> Redis:
        self.proc = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket

        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.kill()


def _two(guard_factory, tmp_path, redis, tiers, on_error="block"):
    (tmp_path / "nofilters").mkdir(exist_ok=True)
    q = {
        "backend": redis.url,
        "on_error": on_error,
        "tiers": tiers,
        "timeout_ms": 2000,
    }  # generous: a loaded CI box must not read slowness as an outage
    return [guard_factory(filters={"dir": str(tmp_path / "nofilters")}, quotas=q) for _ in range(2)]


def test_sixteen_clients_on_two_guards_never_exceed_the_shared_limit(guard_factory, tmp_path, redis):
    limit = 20
    guards = _two(guard_factory, tmp_path, redis, {"default": {"requests_per_minute": limit}})
    clients = [guards[i % 2].client() for i in range(16)]

    def worker(c: httpx.Client) -> list[int]:
        return [c.post(CHAT, json=BODY).status_code for _ in range(5)]

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(16) as pool:
        codes = [code for got in pool.map(worker, clients) for code in got]
    elapsed = time.monotonic() - t0
    admitted = codes.count(200)
    # GCRA: a burst of `limit`, then limit/60 s more; the refill during the run is the only slack
    slack = int(elapsed * limit / 60) + 1
    assert set(codes) <= {200, 429}, codes
    assert limit <= admitted <= limit + slack, (admitted, elapsed)
    per_guard = [httpx.get(g.admin_url + "/admin/quotas").json()["principals"] for g in guards]
    assert per_guard[0] == per_guard[1] or per_guard[0].keys() == per_guard[1].keys(), "both read one store"


def test_redis_down_blocks_fast_then_recovers_after_restart(guard_factory, tmp_path, redis):
    g, _ = _two(guard_factory, tmp_path, redis, {"default": {"requests_per_minute": 1000}})
    c = g.client()
    assert c.post(CHAT, json=BODY).status_code == 200
    redis.kill()
    for _ in range(5):
        t = time.monotonic()
        r = c.post(CHAT, json=BODY)
        took = time.monotonic() - t
        assert r.status_code == 503 and r.json()["error"]["code"] == "quota_unavailable", r.text
        assert took < 2.0, f"a dead Redis must not hang requests ({took:.2f} s)"
    rec = by_request(journal_events(Path(g.config.audit.dir)))[r.headers["x-guard-request-id"]]
    assert rec["exchange.denied"]["decisions"]["quota"]["backend"] == "unavailable"
    assert rec["exchange.denied"]["denial"]["stage"] == "quota"
    redis.start()  # same port: the client reconnects after its backoff (at most 5 s)
    deadline = time.monotonic() + 10
    while c.post(CHAT, json=BODY).status_code != 200:
        assert time.monotonic() < deadline, "admission did not recover after Redis came back"
        time.sleep(0.2)


def test_redis_down_with_on_error_allow_admits_marked(guard_factory, tmp_path, redis):
    (tmp_path / "nofilters").mkdir()
    g = guard_factory(
        filters={"dir": str(tmp_path / "nofilters")},
        quotas={
            "backend": redis.url,
            "on_error": "allow",
            "timeout_ms": 200,
            "tiers": {"default": {"requests_per_minute": 1}},
        },
    )
    c = g.client()
    assert [c.post(CHAT, json=BODY).status_code for _ in range(2)] == [200, 429]
    redis.kill()
    r = c.post(CHAT, json=BODY)
    assert r.status_code == 200, "on_error: allow admits while the backend is down"
    deadline = time.monotonic() + 5
    while True:
        recs = by_request(journal_events(Path(g.config.audit.dir))).get(r.headers["x-guard-request-id"], {})
        if "exchange.completed" in recs or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert recs["exchange.started"]["decisions"]["quota"] == {
        "tier": "default",
        "effect": "allow",
        "backend": "unavailable",
    }
    m = httpx.get(g.admin_url + "/metrics").text
    assert metric(m, "guard_quota_decisions_total", result="unavailable_allowed") >= 1


def test_token_reservation_is_shared_and_settled(guard_factory, tmp_path, redis):
    a, b = _two(guard_factory, tmp_path, redis, {"default": {"tokens_per_day": 60}})
    used = 0
    codes = []
    for i in range(12):
        r = (
            (a if i % 2 else b)
            .client()
            .post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "[[reply: a b c d e f g h]]"}]})
        )
        codes.append(r.status_code)
        if r.status_code != 200:
            break
        used += r.json()["usage"]["total_tokens"]
    assert codes[-1] == 429 and codes.count(200) >= 2, codes
    q = httpx.get(a.admin_url + "/admin/quotas").json()["principals"]
    assert next(iter(q.values()))["default"]["tokens_per_day"]["used"] == used


def test_quota_show_cli_reads_redis(guard_factory, tmp_path, redis):
    import sys

    g, _ = _two(guard_factory, tmp_path, redis, {"default": {"requests_per_minute": 10}})
    assert g.client().post(CHAT, json=BODY).status_code == 200
    cfg = g.config.source
    p = subprocess.run(
        [sys.executable, "-m", "guard.cli", "quota", "show", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "billing-app" in p.stdout and "requests_per_minute" in p.stdout
