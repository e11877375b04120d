"""Attacks on quotas through the running proxy: ways a client might get more than its tier allows, or
make the quota machinery answer something undocumented.

- hanging up mid-stream so the tokens are never counted;
- switching wire API (OpenAI <-> Ollama) or model to reach fresh counters;
- turning usage reporting off (``stream_options.include_usage: false``) so the stream reports nothing;
- hostile ``max_tokens`` values (huge, negative, wrong types) against the reservation arithmetic;
- a burst of concurrent requests racing the check (memory backend; Redis: tests/quota/test_quota_redis.py);
- endless streams in parallel (no or a tiny `max_tokens`) to spend past the token budget mid-answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from guard.demo.stack import ServerThread, free_port
from tests.audit.proxy_helpers import by_request, journal_events

CHAT = "/v1/chat/completions"


def _guard(guard_factory, tmp_path, tiers, **kw):
    (tmp_path / "nofilters").mkdir(exist_ok=True)
    return guard_factory(filters={"dir": str(tmp_path / "nofilters")}, quotas={"tiers": tiers}, **kw)


def _used(g, counter):
    p = httpx.get(g.admin_url + "/admin/quotas").json()["principals"]
    return sum(t.get("default", {}).get(counter, {}).get("used", 0) for t in p.values())


def _record(g, rid, kind, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rec = by_request(journal_events(Path(g.config.audit.dir))).get(rid, {}).get(kind)
        if rec is not None:
            return rec
        time.sleep(0.05)
    raise AssertionError(f"no {kind} record for {rid}")


def test_hanging_up_mid_stream_still_counts_tokens(guard_factory, tmp_path):
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_month": 1_000_000}})
    c = g.client()
    with c.stream(
        "POST",
        CHAT,
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "[[forever]] [[delay_ms=20]]"}]},
    ) as r:
        rid = r.headers["x-guard-request-id"]
        got = 0
        for chunk in r.iter_bytes():
            got += len(chunk)
            if got > 2000:
                break  # hang up: no usage chunk will ever come
    rec = _record(g, rid, "exchange.completed")
    assert rec["outcome"]["status"] == 499
    assert rec["decisions"]["quota"]["usage_estimated"] is True
    assert rec["usage"]["completion_tokens"] > 0
    # the month's bucket refills 0.4 tokens a second: allow a few for the time the test takes
    deadline = time.monotonic() + 3
    while _used(g, "tokens_per_month") < rec["usage"]["total_tokens"] - 3:
        assert time.monotonic() < deadline, "the hung-up stream's tokens were not counted"
        time.sleep(0.05)


def test_switching_api_or_model_shares_the_principals_counters(guard_factory, tmp_path):
    import ollama

    g = _guard(guard_factory, tmp_path, {"default": {"requests_per_minute": 3}})
    c = g.client()
    assert c.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    assert c.post(CHAT, json={"model": "other", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    oc = ollama.Client(host=g.url, verify=g.ssl_context())
    oc.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429
    r = c.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429 and "retry-after" in r.headers


def _usage_upstream(seen: list[dict]) -> tuple[ServerThread, str]:
    """An OpenAI-style upstream that sends the usage-only chunk exactly when asked (as OpenAI does)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            m = await receive()
            raw += m.get("body", b"")
            if not m.get("more_body"):
                break
        body = json.loads(raw)
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        ask = (body.get("stream_options") or {}).get("include_usage") is True
        for piece in ("one ", "two"):
            c = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            if ask:
                c["usage"] = None
            await send(
                {"type": "http.response.body", "body": b"data: " + json.dumps(c).encode() + b"\n\n", "more_body": True}
            )
        if ask:
            u = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [],
                "usage": {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100},
            }
            await send(
                {"type": "http.response.body", "body": b"data: " + json.dumps(u).encode() + b"\n\n", "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    port = free_port()
    th = ServerThread(
        lambda: [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))]
    ).start()
    return th, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("screened", [False, True], ids=["fast-path", "screened"])
@pytest.mark.parametrize("client_opts", [None, {"include_usage": False}, {"include_usage": True}])
def test_turning_usage_off_does_not_hide_a_streams_tokens(guard_factory, tmp_path, client_opts, screened):
    """Both stream paths: unscreened (bytes passed through) and screened (the denylist's stream screen
    parses every chunk)."""
    seen: list[dict] = []
    th, url = _usage_upstream(seen)
    try:
        kw = {}
        if screened:
            (tmp_path / "deny").mkdir()
            (tmp_path / "deny" / "denylist.yaml").write_text(
                (Path(__file__).resolve().parents[2] / "filters" / "denylist.yaml").read_text()
            )
            kw["filters"] = {"dir": str(tmp_path / "deny")}
        (tmp_path / "nofilters").mkdir(exist_ok=True)
        g = guard_factory(
            **{"filters": {"dir": str(tmp_path / "nofilters")}, **kw},
            quotas={"tiers": {"default": {"tokens_per_day": 10_000}}},
            upstream_url=url,
        )
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        if client_opts is not None:
            body["stream_options"] = client_opts
        with g.client().stream("POST", CHAT, json=body) as r:
            data = b"".join(r.iter_bytes())
            rid = r.headers["x-guard-request-id"]
        assert seen[-1]["stream_options"]["include_usage"] is True, "Guard asks the upstream for usage"
        events = [e for e in data.split(b"\n\n") if e]
        chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
        usage_events = [c for c in chunks if c.get("choices") == [] and c.get("usage")]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices")) == "one two"
        if client_opts == {"include_usage": True}:
            assert len(usage_events) == 1, "the client asked: it gets the usage chunk"
        else:
            assert usage_events == [], "the client did not ask: the usage chunk is not in its stream"
        assert events[-1] == b"data: [DONE]"
        rec = _record(g, rid, "exchange.completed")
        assert rec["usage"] == {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100}
        assert "usage_estimated" not in rec["decisions"]["quota"]
        assert _used(g, "tokens_per_day") == 100
    finally:
        th.stop()


@pytest.mark.parametrize("max_tokens", [10**15, 10**30, -5, 0, 1.5, "9", True, None, [1], {"a": 1}])
def test_hostile_max_tokens_get_documented_answers(guard_factory, tmp_path, max_tokens):
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_minute": 10_000}})
    r = g.client().post(
        CHAT, json={"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert r.status_code in (200, 400, 429), r.text
    assert "error" in r.json() or "choices" in r.json()
    if max_tokens == 10**15:  # a valid integer, far over the budget
        assert r.status_code == 429 and "more than the tokens_per_minute limit" in r.json()["error"]["message"]
    if max_tokens == 10**30:  # outside int64: refused by the strict body reader before any quota
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_a_concurrent_burst_never_gets_past_the_limit(guard_factory, tmp_path):
    g = _guard(guard_factory, tmp_path, {"default": {"requests_per_minute": 10}})

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=g.url, verify=g.ssl_context(), timeout=20) as c:
            rs = await asyncio.gather(
                *(c.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}) for _ in range(40))
            )
        return [r.status_code for r in rs]

    codes = asyncio.run(burst())
    assert set(codes) <= {200, 429}
    assert 10 <= codes.count(200) <= 11, codes  # the bucket refills 1 per 6 s: at most one more during the burst


def test_a_policy_naming_an_unconfigured_tier_refuses_to_start(guard_factory, tmp_path):
    from guard.config import ConfigError

    root = Path(__file__).resolve().parents[2]
    extra = tmp_path / "tiers.csv"
    extra.write_text("p, access, quota, *, platinum, 'staff' in r.sub.ou\n")
    with pytest.raises(ConfigError, match="tier 'platinum'"):
        _guard(
            guard_factory,
            tmp_path,
            {"default": {"requests_per_minute": 1}},
            policy={"rules": [str(root / "policies/policy.csv"), str(extra)]},
        )


@pytest.mark.parametrize("max_tokens", [None, 1])
def test_parallel_endless_streams_cannot_spend_more_than_the_budget_together(guard_factory, tmp_path, max_tokens):
    """Six streams at once that never end (no ``max_tokens``, or one that reserves almost nothing and that
    this upstream ignores): together they release no more text than the tier's tokens, each ends with the
    API's error event, and each is charged for what it released."""
    import math

    import openai

    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_day": 300}})
    prompt = "[[forever]] [[delay_ms=3]]"

    async def one(c) -> tuple[str, str]:
        got = []
        kw = {"max_tokens": max_tokens} if max_tokens else {}
        try:
            stream = await c.chat.completions.create(
                model="m", stream=True, **kw, messages=[{"role": "user", "content": prompt}]
            )
            async for ch in stream:
                got.append(ch.choices[0].delta.content or "" if ch.choices else "")
        except openai.RateLimitError:  # refused at admission once the budget is spent
            return "".join(got), "refused"
        except openai.APIError as e:
            assert e.code == "rate_limit_exceeded", e
            return "".join(got), "cut"
        return "".join(got), "ended"

    async def main():
        c = g.async_openai()
        return await asyncio.wait_for(asyncio.gather(*(one(c) for _ in range(6))), 30)  # uncut: fails here

    res = asyncio.run(main())
    assert all(how in ("cut", "refused") for _, how in res), res
    admitted = [t for t, how in res if how == "cut"]
    assert admitted and all(t.startswith("tick 0") for t in admitted)
    spent = sum(math.ceil(len(t) / 4) + math.ceil(len(prompt) / 4) for t in admitted)
    assert spent <= 300 + 1, f"{spent} tokens released against a budget of 300"
    assert _used(g, "tokens_per_day") >= spent - 1, "every stream was charged for what it released"
