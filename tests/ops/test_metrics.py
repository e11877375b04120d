"""Prometheus metrics change as traffic flows; the admin endpoints are not on the public listener."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(m: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in m.items() if n == name and all(dict(ls).get(k) == v2 for k, v2 in labels.items()))


def chat(g, who: str, model: str, content: str) -> httpx.Response:
    with g.client(who) as c:
        return c.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}]})


def test_metrics_follow_allowed_denied_and_blocked_requests(guard_factory):
    g = guard_factory()
    before = scrape(g.admin_url)
    assert chat(g, "app", "llama-3-8b", "hello").status_code == 200
    assert chat(g, "app", "internal-x", "hello").status_code == 403
    assert chat(g, "app", "llama-3-8b", "My SSN: 536-90-4399 thanks").status_code == 400
    after = scrape(g.admin_url)
    assert (
        total(after, "guard_requests_total", decision="allow", status="200")
        - total(before, "guard_requests_total", decision="allow", status="200")
        >= 1
    )
    assert (
        total(after, "guard_requests_total", decision="deny", status="403")
        - total(before, "guard_requests_total", decision="deny", status="403")
        == 1
    )
    assert total(after, "guard_screen_results_total", screen="pii", action="block") > total(
        before, "guard_screen_results_total", screen="pii", action="block"
    )
    assert total(after, "guard_stage_duration_seconds_count", stage="policy") > total(
        before, "guard_stage_duration_seconds_count", stage="policy"
    )
    assert total(after, "guard_tokens_total") > total(before, "guard_tokens_total")


def test_sink_outage_shows_in_errors_and_lag(guard_factory, monkeypatch):
    from guard.demo.stack import free_port

    monkeypatch.setenv("HEC_TOKEN", "hec-token-value")
    g = guard_factory(
        audit={
            "sinks": [
                {
                    "name": "siem",
                    "type": "splunk_hec",
                    "url": f"http://127.0.0.1:{free_port()}",
                    "token_env": "HEC_TOKEN",
                    "backoff_min_s": 0.05,
                    "backoff_max_s": 0.2,
                }
            ]
        }
    )
    for _ in range(3):
        chat(g, "app", "llama-3-8b", "hello")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = scrape(g.admin_url)
        if (
            total(m, "guard_audit_sink_errors_total", sink="siem") > 0
            and total(m, "guard_audit_sink_lag_events", sink="siem") > 0
        ):
            break
        time.sleep(0.2)
    assert total(m, "guard_audit_sink_errors_total", sink="siem") > 0
    assert total(m, "guard_audit_sink_lag_events", sink="siem") > 0


def test_admin_endpoints_are_not_on_the_public_listener(guard):
    with guard.client() as c:
        for path in ("/metrics", "/healthz", "/readyz"):
            assert c.get(path).status_code == 404
        assert c.post("/admin/reload").status_code == 404
    assert httpx.get(guard.admin_url + "/healthz").status_code == 200
    r = httpx.get(guard.admin_url + "/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"policy": True, "journal": True, "upstream": True}


def test_admin_reload_token_is_required_when_configured(guard_factory, monkeypatch, tmp_path, capsys):
    """admin.reload_token_env: POST /admin/reload needs the bearer token (401 without it or with another);
    health and metrics stay open for probes and Prometheus; a configured but unset variable refuses to start."""
    from guard.cli import main
    from guard.config import ConfigError

    monkeypatch.setenv("GUARD_TEST_RELOAD_TOKEN", "s3cret-reload")
    g = guard_factory(admin={"reload_token_env": "GUARD_TEST_RELOAD_TOKEN"})
    url = g.admin_url + "/admin/reload"
    r = httpx.post(url, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert "s3cret" not in r.text
    assert httpx.post(url, headers={"authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert httpx.post(url, headers={"authorization": "Bearer s3cret-reload"}, timeout=10).status_code == 200
    assert httpx.get(g.admin_url + "/metrics", timeout=10).status_code == 200
    assert httpx.get(g.admin_url + "/healthz", timeout=10).status_code == 200

    monkeypatch.delenv("GUARD_TEST_RELOAD_TOKEN")
    with pytest.raises(ConfigError, match="GUARD_TEST_RELOAD_TOKEN is not set"):
        g.config.admin.reload_token()
    cfg = tmp_path / "guard.yaml"
    import yaml

    doc = g.config.model_dump(mode="json", exclude_none=True, exclude={"source"})
    cfg.write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    assert main(["serve", "--config", str(cfg)]) == 2
    assert "admin.reload_token_env: environment variable GUARD_TEST_RELOAD_TOKEN is not set" in capsys.readouterr().err


def test_tls_handshake_failures_are_counted_by_reason(guard):
    before = total(scrape(guard.admin_url), "guard_tls_handshake_failures_total", reason="no_certificate")
    try:
        with httpx.Client(base_url=guard.url, verify=guard.ssl_context(None)) as c:
            c.get("/v1/models")
    except httpx.HTTPError:
        pass
    time.sleep(0.2)
    after = total(scrape(guard.admin_url), "guard_tls_handshake_failures_total", reason="no_certificate")
    assert after == before + 1


def test_shared_metric_files_sum_a_parent_and_its_forked_worker(tmp_path):
    """Several workers: each process writes its own prometheus_client file (also after a fork, where the
    parent's series must not be written by the child), and the exposition sums them."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import os
        from guard import telemetry as t
        from prometheus_client import generate_latest
        t.child(t.REQUESTS, "openai", "chat", "m", "allow", "200").inc()
        t.stage("policy").observe(0.002)
        pid = os.fork()
        if pid == 0:
            t.child(t.REQUESTS, "openai", "chat", "m", "allow", "200").inc(2)
            t.stage("policy").observe(0.5)
            os._exit(0)
        os.waitpid(pid, 0)
        t.child(t.REQUESTS, "openai", "chat", "m", "allow", "200").inc()
        print(generate_latest(t.exposition_registry()).decode())
    """)
    env = {**__import__("os").environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    m = {}
    for fam in text_string_to_metric_families(out.stdout):
        for s in fam.samples:
            m[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert total(m, "guard_requests_total", status="200") == 4
    assert total(m, "guard_stage_duration_seconds_count", stage="policy") == 2
    assert total(m, "guard_stage_duration_seconds_bucket", stage="policy", le="0.0025") == 1
    assert abs(total(m, "guard_stage_duration_seconds_sum", stage="policy") - 0.502) < 1e-9
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
