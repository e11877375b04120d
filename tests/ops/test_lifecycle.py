"""Guard as a process: SIGTERM drains streams, SIGHUP reloads (a broken policy keeps the old one),
certificates rotate without a restart, and two workers each keep a verifiable audit chain."""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from guard import pki
from tests.ops.test_metrics import scrape, total


def _verify(audit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "guard.cli", "audit", "verify", str(audit), "--trust-local-keys", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


WORDS = " ".join(f"word{i:03d}" for i in range(200))  # longer than the default profile's stream hold-back


def test_sigterm_lets_a_long_stream_finish_then_records_guard_stopped(guard_process):
    g = guard_process()
    got: dict = {}
    first = threading.Event()

    def stream() -> None:
        text = ""
        with (
            g.client() as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": f"[[reply: {WORDS}]] [[delay_ms=15]]"}],
                },
            ) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                    first.set()
        got["text"] = text

    t = threading.Thread(target=stream)
    t.start()
    assert first.wait(30)  # text is arriving (past the screens' hold-back) while the upstream still sends
    assert t.is_alive()  # SIGTERM lands mid-stream
    assert g.stop(signal.SIGTERM) == 0
    t.join(10)
    assert got.get("text") == WORDS
    events = [e for e in g.events() if e["type"] != "audit.checkpoint"]
    assert events[-1]["type"] == "guard.stopped"
    assert any(e["type"] == "exchange.completed" and e.get("outcome", {}).get("status") == 200 for e in events)


def test_sighup_with_a_broken_policy_keeps_the_old_one(guard_process, tmp_path):
    rules = tmp_path / "policy.csv"
    shutil.copy(Path(__file__).resolve().parents[2] / "policies/policy.csv", rules)
    g = guard_process(
        policy={
            "model": str(Path(__file__).resolve().parents[2] / "policies/model.conf"),
            "rules": [str(rules)],
            "watch": False,
        }
    )
    with g.client() as c:
        assert (
            c.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            ).status_code
            == 200
        )
    rules.write_text("p, access, allow, chat, -, (((broken\n")
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(e["type"] == "policy.reload_failed" for e in g.events()):
        time.sleep(0.1)
    assert any(e["type"] == "policy.reload_failed" for e in g.events())
    with g.client() as c:  # still decided by the old policy
        assert (
            c.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            ).status_code
            == 200
        )
        assert (
            c.post(
                "/v1/chat/completions", json={"model": "internal-x", "messages": [{"role": "user", "content": "hi"}]}
            ).status_code
            == 403
        )
    assert g.stop() == 0


def _two_pkis(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two independent CAs with a server and an app certificate each; ``tls/`` starts with the old ones."""
    tls, old, new = tmp_path / "tls", tmp_path / "old", tmp_path / "new"
    for d in (old, new):
        pki.init_ca(d, cn=f"CA {d.name}")
        pki.issue(d, "server", server=True, cn="localhost", san_dns=["localhost"], san_ip=["127.0.0.1"])
        pki.issue(d, "app", client=True, cn="billing-app", ou=["apps"])
    tls.mkdir()
    for f in ("server.pem", "server-key.pem", "ca.pem"):
        shutil.copy(old / f, tls / f)
    return tls, old, new


def _tls_config(tls: Path) -> dict[str, str]:
    return {"cert": str(tls / "server.pem"), "key": str(tls / "server-key.pem"), "client_ca": str(tls / "ca.pem")}


def test_rotated_server_certificate_and_ca_take_effect_on_the_next_handshake(guard_process, tmp_path):
    tls, old, new = _two_pkis(tmp_path)
    g = guard_process(tls=_tls_config(tls))

    def call(d: Path) -> int:
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(d / "app.pem"), str(d / "app-key.pem"))
        with httpx.Client(base_url=g.url, verify=ctx, timeout=10) as c:
            return c.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            ).status_code

    assert call(old) == 200
    with pytest.raises(httpx.HTTPError):
        call(new)
    ctx = ssl.create_default_context(cafile=str(old / "ca.pem"))  # a connection opened before the rotation
    ctx.load_cert_chain(str(old / "app.pem"), str(old / "app-key.pem"))
    keep = httpx.Client(base_url=g.url, verify=ctx, timeout=10)
    assert keep.get("/v1/models").status_code == 200
    for f in ("server.pem", "server-key.pem", "ca.pem"):
        shutil.copy(new / f, tls / f)
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if call(new) == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    assert call(new) == 200
    with pytest.raises(httpx.HTTPError):
        call(old)
    assert keep.get("/v1/models").status_code == 200  # open connections are not dropped
    keep.close()
    (tls / "server.pem").write_text("not a certificate")  # a broken file keeps the current context
    g.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert call(new) == 200
    assert g.stop() == 0


def test_two_workers_serve_requests_and_each_chain_verifies(guard_process):
    g = guard_process(workers=2)
    deadline = time.monotonic() + 20
    while sum(e["type"] == "guard.started" for e in g.events()) < 2:  # both workers are serving
        assert time.monotonic() < deadline, "a worker did not start"
        time.sleep(0.1)
    # The workers share one listening socket and the kernel hands each connection to whichever worker
    # accepts first, so a run of one-at-a-time connections can all land on one worker. Send from four
    # threads at once, a round at a time, until both workers' chains hold a completed exchange.
    sent = 0

    def post(_: int) -> int:
        with g.client() as c:
            return c.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"connection": "close"},
            ).status_code

    def chains() -> dict[str, int]:
        seen: dict[str, int] = {}
        for e in g.events():
            if e["type"] == "exchange.completed":
                seen[e["chain"]] = seen.get(e["chain"], 0) + 1
        return seen

    with ThreadPoolExecutor(4) as pool:
        while sent < 400:
            assert list(pool.map(post, range(20))) == [200] * 20
            sent += 20
            if sent >= 40 and len(chains()) == 2:
                break
    # Either worker answers the scrape with both workers' values summed, each histogram whole
    m = scrape(g.admin_url)
    assert total(m, "guard_requests_total", operation="chat", status="200") == sent
    assert total(m, "guard_request_duration_seconds_count", operation="chat") == sent
    assert total(m, "guard_request_duration_seconds_bucket", operation="chat", le="+Inf") == sent
    assert 0 < total(m, "guard_request_duration_seconds_sum", operation="chat") < sent * 10
    assert total(m, "guard_stage_duration_seconds_count", stage="policy") == sent
    assert g.stop() == 0
    done = chains()
    assert len(done) == 2, done  # both workers served requests
    assert sum(done.values()) == sent
    r = _verify(g.dir / "audit")
    assert r.returncode == 0, r.stdout + r.stderr


def test_tls_files_are_watched_and_reloaded_without_a_signal(guard_factory, tmp_path):
    """Certificate managers (cert-manager, Kubernetes secrets) replace files but cannot send SIGHUP."""
    tls, old, new = _two_pkis(tmp_path)
    g = guard_factory(tls=_tls_config(tls), policy={"watch_interval_s": 0.2})

    def status(d: Path) -> int:
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(d / "app.pem"), str(d / "app-key.pem"))
        with httpx.Client(base_url=g.url, verify=ctx, timeout=10) as c:
            return c.get("/v1/models").status_code

    assert status(old) == 200
    for f in ("server.pem", "server-key.pem", "ca.pem"):
        shutil.copy(new / f, tls / f)
    deadline = time.monotonic() + 10
    ok = False
    while time.monotonic() < deadline and not ok:
        try:
            ok = status(new) == 200
        except httpx.HTTPError:
            time.sleep(0.2)
    assert ok


def test_workers_refusing_a_broken_filters_file_stop_guard_with_exit_2(pki_dir, model_server, tmp_path):
    from guard.demo.stack import free_port, guard_config, write_config

    filters = tmp_path / "filters"
    filters.mkdir()
    (filters / "pii.yaml").write_text("profiles:\n  default:\n    entities:\n      EMAIL_ADDRESS: {prompt: shred}\n")
    cfg = guard_config(
        pki_dir,
        model_server[1],
        free_port(),
        free_port(),
        workers=2,
        filters={"dir": str(filters)},
        audit={"dir": str(tmp_path / "audit")},
    )
    p = subprocess.run(
        [sys.executable, "-m", "guard.cli", "serve", "--config", str(write_config(tmp_path / "guard.yaml", cfg))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "pii.yaml:4" in p.stderr
