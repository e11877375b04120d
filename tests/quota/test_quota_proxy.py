"""Quotas through the running proxy (memory backend): real mTLS, the official openai SDK, httpx, the
built-in model server's usage, the audit journal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.audit.proxy_helpers import by_request, journal_events, metric

CHAT = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parents[2]


def _guard(guard_factory, tmp_path, tiers, **kw):
    (tmp_path / "nofilters").mkdir(exist_ok=True)
    return guard_factory(filters={"dir": str(tmp_path / "nofilters")}, quotas={"tiers": tiers, **kw})


def _records(g, rid, kind, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        recs = by_request(journal_events(Path(g.config.audit.dir))).get(rid, {})
        if kind in recs or time.monotonic() > end:
            return recs.get(kind)
        time.sleep(0.05)


def test_openai_sdk_sees_rate_limit_error_with_headers_and_the_refusal_is_audited(guard_factory, tmp_path):
    g = _guard(guard_factory, tmp_path, {"default": {"requests_per_minute": 2, "tokens_per_minute": 100_000}})
    c = g.openai()
    for _ in range(2):
        ok = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert ok.headers["x-ratelimit-limit-requests"] == "2"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    r = e.value.response
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 30
    assert r.headers["x-ratelimit-limit-requests"] == "2" and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert r.headers["x-ratelimit-limit-tokens"] == "100000"
    assert e.value.code == "rate_limit_exceeded" and e.value.type == "rate_limit_error"
    rid = r.headers["x-guard-request-id"]
    denied = _records(g, rid, "exchange.denied")
    assert denied is not None, "every refusal is an audit record"
    assert denied["denial"] == {"stage": "quota", "code": "rate_limit_exceeded"}
    assert denied["decisions"]["quota"] == {"tier": "default", "effect": "deny", "counter": "requests_per_minute"}
    assert denied["decisions"]["access"]["effect"] == "allow"
    m = httpx.get(g.admin_url + "/metrics").text
    assert (
        metric(m, "guard_quota_decisions_total", tier="default", result="refused", counter="requests_per_minute") >= 1
    )
    # the admin endpoint shows the principal's use
    u = httpx.get(g.admin_url + "/admin/quotas").json()
    [(who, rows)] = u["principals"].items()
    assert "billing-app" in who
    row = rows["default"]
    assert row["requests_per_minute"]["used"] == 2 and row["requests_per_minute"]["remaining"] == 0


def test_token_budget_counts_the_model_servers_usage(guard_factory, tmp_path):
    """The model server reports usage (prompt chars/4, answer words); once the day's budget is spent,
    requests are refused by tokens_per_day."""
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_day": 60}})
    c = g.client()
    seen = []
    for _ in range(10):
        r = c.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "[[reply: a b c d e f g h]]"}]})
        seen.append(r.status_code)
        if r.status_code == 429:
            break
        seen_usage = r.json()["usage"]["total_tokens"]
    assert seen[-1] == 429 and seen.count(200) >= 2, seen
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens_per_day" in r.json()["error"]["message"]
    use = httpx.get(g.admin_url + "/admin/quotas").json()["principals"]
    used = next(iter(use.values()))["default"]["tokens_per_day"]["used"]
    assert used == seen.count(200) * seen_usage, "settled with the upstream's usage, not the estimate"


def test_policy_selects_the_tier(guard_factory, tmp_path):
    extra = tmp_path / "tiers.csv"
    extra.write_text("p, access, quota, *, gold, 'staff' in r.sub.ou\n")
    (tmp_path / "nofilters").mkdir()
    g = guard_factory(
        filters={"dir": str(tmp_path / "nofilters")},
        policy={"rules": [str(ROOT / "policies/policy.csv"), str(extra)]},
        quotas={"tiers": {"default": {"requests_per_minute": 1}, "gold": {"requests_per_minute": 3}}},
    )
    app, staff = g.client("app"), g.client("staff")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert [app.post(CHAT, json=body).status_code for _ in range(2)] == [200, 429]
    rs = [staff.post(CHAT, json=body) for _ in range(4)]
    assert [r.status_code for r in rs] == [200, 200, 200, 429]
    assert rs[0].headers["x-ratelimit-limit-requests"] == "3"
    rec = _records(g, rs[3].headers["x-guard-request-id"], "exchange.denied")
    assert rec["decisions"]["quota"]["tier"] == "gold"
    assert rec["decisions"]["access"]["quota_tier"] == "gold"
    # a reload (policy, filters, TLS) keeps the counters
    assert httpx.post(g.admin_url + "/admin/reload").status_code == 200
    assert staff.post(CHAT, json=body).status_code == 429


def test_stream_usage_is_asked_for_counted_and_hidden_from_a_client_that_did_not_ask(
    guard_factory, tmp_path, model_server
):
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_minute": 100_000}})
    c = g.client()
    n = model_server[0].requests if hasattr(model_server[0], "requests") else None
    with c.stream(
        "POST",
        CHAT,
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "[[reply: one two three]]"}]},
    ) as r:
        body = b"".join(r.iter_bytes())
        rid = r.headers["x-guard-request-id"]
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
    assert body.endswith(b"data: [DONE]\n\n")
    done = _records(g, rid, "exchange.completed")
    assert done["usage"]["total_tokens"] > 0 and "usage_estimated" not in done["decisions"]["quota"]
    del n


def test_upstream_rate_limit_headers_reach_the_client_unless_guard_is_stricter(guard_factory, tmp_path):
    """The model server sends no rate-limit headers; a stand-in upstream that does is started here."""
    import uvicorn

    from guard.demo.stack import ServerThread, free_port

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-ratelimit-limit-requests", b"10000"),
                    (b"x-ratelimit-remaining-requests", b"9999"),
                    (b"x-ratelimit-reset-requests", b"6ms"),
                    (b"x-ratelimit-limit-tokens", b"5"),
                    (b"x-ratelimit-remaining-tokens", b"3"),
                    (b"x-ratelimit-reset-tokens", b"1s"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    th = ServerThread(
        lambda: [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))]
    ).start()
    try:
        (tmp_path / "nofilters").mkdir()
        plain = guard_factory(upstream_url=f"http://127.0.0.1:{port}", filters={"dir": str(tmp_path / "nofilters")})
        r = plain.client().post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.headers["x-ratelimit-remaining-requests"] == "9999", "no quotas: the upstream's headers pass"
        g = guard_factory(
            upstream_url=f"http://127.0.0.1:{port}",
            filters={"dir": str(tmp_path / "nofilters")},
            quotas={"tiers": {"default": {"requests_per_minute": 5, "tokens_per_minute": 1000}}},
        )
        r = g.client().post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "5", "Guard's requests limit is stricter: its values"
        assert r.headers["x-ratelimit-remaining-requests"] == "4"
        assert r.headers["x-ratelimit-limit-tokens"] == "5", "the upstream's tokens limit is stricter: its values"
        assert r.headers["x-ratelimit-remaining-tokens"] == "3"
        assert r.headers.get_list("x-ratelimit-limit-requests") == ["5"], "never both"
    finally:
        th.stop()


def test_concurrent_limit_refuses_a_second_stream_while_the_first_runs(guard_factory, tmp_path):
    g = _guard(guard_factory, tmp_path, {"default": {"concurrent_streams": 1}})
    c = g.client()
    slow = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "[[reply: a b c d]] [[delay_ms=300]]"}],
    }
    with c.stream("POST", CHAT, json=slow) as r1:
        it = r1.iter_bytes()
        next(it)
        r2 = c.post(CHAT, json=slow)
        assert r2.status_code == 429 and r2.json()["error"]["code"] == "rate_limit_exceeded"
        assert "concurrent_streams" in r2.json()["error"]["message"]
        b"".join(it)
    deadline = time.monotonic() + 3
    while c.post(CHAT, json={**slow, "messages": [{"role": "user", "content": "hi"}]}).status_code != 200:
        assert time.monotonic() < deadline, "the slot was never released"
        time.sleep(0.05)


def test_quota_show_cli_asks_the_running_guard_for_memory_counters(guard_factory, tmp_path):
    import subprocess
    import sys

    g = _guard(guard_factory, tmp_path, {"default": {"requests_per_minute": 7}})
    assert (
        g.client().post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    )
    who = next(iter(httpx.get(g.admin_url + "/admin/quotas").json()["principals"]))
    p = subprocess.run(
        [sys.executable, "-m", "guard.cli", "quota", "show", "--config", str(g.config.source), "--principal", who],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "requests_per_minute: 1/7 used, 6 left" in p.stdout, p.stdout


def test_spend_budget_from_the_price_table(guard_factory, tmp_path):
    """The model server's usage (prompt chars/4, answer words) priced per model; a model without a price
    under a spend-limited tier is refused, never free."""
    (tmp_path / "nofilters").mkdir()
    g = guard_factory(
        filters={"dir": str(tmp_path / "nofilters")},
        quotas={
            "tiers": {"default": {"spend_per_day": 0.01}},
            "prices": {"priced-*": {"input": 100.0, "output": 400.0}},
        },
    )
    c = g.client()
    body = {"model": "priced-m", "messages": [{"role": "user", "content": "[[reply: a b c d e f g h i j]]"}]}
    codes = []
    for _ in range(10):
        r = c.post(CHAT, json=body)
        codes.append(r.status_code)
        if r.status_code != 200:
            break
    assert codes[-1] == 429 and codes.count(200) >= 1, codes
    assert "spend_per_day" in r.json()["error"]["message"]
    use = next(iter(httpx.get(g.admin_url + "/admin/quotas").json()["principals"].values()))["default"]
    assert 0.005 < use["spend_per_day"]["used"] <= 0.0101
    r = c.post(CHAT, json={**body, "model": "unpriced"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "quota_price_unknown"
