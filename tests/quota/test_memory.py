"""The quota counters themselves (memory backend, a fake clock): GCRA buckets, token settlement,
concurrency slots, tiers. The pipeline, Redis and real clients are in the other files of this folder."""

from __future__ import annotations

import asyncio

import pytest

from guard.config import ConfigError
from guard.quota import Quotas, Refusal, Ticket
from guard.quota.hook import UsageStripper, _duration, estimate_tokens, refusal_headers
from guard.quota.memory import MemoryBackend
from guard.quota.settings import QuotaSettings


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(tiers: dict, **kw) -> tuple[Quotas, Clock]:
    clock = Clock()
    return Quotas(QuotaSettings(tiers=tiers, **kw), MemoryBackend(clock)), clock


def run(coro):
    return asyncio.run(coro)


def test_requests_per_minute_admits_the_limit_then_refuses_with_retry_after():
    q, clock = make({"default": {"requests_per_minute": 3}})

    async def go():
        got = [await q.admit("alice", "default", 1) for _ in range(4)]
        return got

    got = run(go())
    assert [type(g) for g in got] == [Ticket, Ticket, Ticket, Refusal]
    r = got[3]
    assert (r.status, r.code, r.counter, r.tier) == (429, "rate_limit_exceeded", "requests_per_minute", "default")
    assert 19.9 < r.retry_after_s <= 20.0  # one request comes back every 60/3 s
    assert r.admission.counters["requests_per_minute"].remaining == 0
    clock.t += 20.0
    assert isinstance(run(q.admit("alice", "default", 1)), Ticket)
    assert isinstance(run(q.admit("bob", "default", 1)), Ticket), "counters are per principal"


def test_tokens_are_reserved_then_settled_with_real_usage():
    q, clock = make({"default": {"tokens_per_minute": 1000}})

    async def go():
        t = await q.admit("alice", "default", 900)
        assert isinstance(t, Ticket) and t.reserved == 900
        r = await q.admit("alice", "default", 200)  # 900 reserved: 200 more do not fit
        assert isinstance(r, Refusal) and r.counter == "tokens_per_minute"
        await q.settle(t, 100)  # it used only 100: 800 come back
        t2 = await q.admit("alice", "default", 800)
        assert isinstance(t2, Ticket)
        await q.settle(t2, 1500)  # it used far more than reserved: the bucket is over
        r2 = await q.admit("alice", "default", 1)
        assert isinstance(r2, Refusal)
        return r2

    r2 = run(go())
    assert r2.retry_after_s > 30  # 600 tokens over: 36 s at 1000/min before one more fits
    clock.t += r2.retry_after_s + 0.01
    assert isinstance(run(q.admit("alice", "default", 1)), Ticket)


def test_every_counter_must_admit_and_a_refusal_charges_none():
    q, _ = make({"default": {"requests_per_minute": 100, "tokens_per_day": 50}})

    async def go():
        assert isinstance(await q.admit("a", "default", 40), Ticket)
        r = await q.admit("a", "default", 40)
        assert isinstance(r, Refusal) and r.counter == "tokens_per_day"
        use = await q.usage("a")
        return use

    use = run(go())
    c = use["principals"]["a"]["default"]
    assert c["requests_per_minute"]["used"] == 1, "the refused request was not counted"
    assert c["tokens_per_day"]["used"] == 40


def test_concurrency_slots_are_held_until_settled_and_streams_have_their_own():
    q, clock = make({"default": {"concurrent": 2, "concurrent_streams": 1}}, lease_s=60)

    async def go():
        a = await q.admit("a", "default", 1, stream=True)
        s2 = await q.admit("a", "default", 1, stream=True)
        assert isinstance(a, Ticket) and isinstance(s2, Refusal) and s2.counter == "concurrent_streams"
        b = await q.admit("a", "default", 1)
        c = await q.admit("a", "default", 1)
        assert isinstance(b, Ticket) and isinstance(c, Refusal) and c.counter == "concurrent"
        await q.release(a)
        await q.release(a)  # twice is harmless
        assert isinstance(await q.admit("a", "default", 1, stream=True), Ticket)
        # a slot a crashed holder never released frees itself after lease_s
        assert isinstance(await q.admit("a", "default", 1), Refusal)
        clock.t += 61
        assert isinstance(await q.admit("a", "default", 1), Ticket)

    run(go())


def test_unknown_tier_fails_closed():
    q, _ = make({"default": {"requests_per_minute": 5}})
    r = run(q.admit("a", "gold", 1))
    assert isinstance(r, Refusal) and (r.status, r.code) == (503, "quota_tier_unknown")


def test_refusal_headers_follow_openai_names():
    q, _ = make({"default": {"requests_per_minute": 1, "tokens_per_minute": 100}})
    run(q.admit("a", "default", 10))
    r = run(q.admit("a", "default", 10))
    h = {k.decode(): v.decode() for k, v in refusal_headers(r)}
    assert h["retry-after"] == "60" and h["x-ratelimit-limit-requests"] == "1"
    assert h["x-ratelimit-remaining-requests"] == "0" and h["x-ratelimit-reset-requests"] == "1m0s"
    assert h["x-ratelimit-limit-tokens"] == "100" and h["x-ratelimit-remaining-tokens"] == "90"
    assert int(h["retry-after-ms"]) == 60000
    assert _duration(0.02) == "20ms" and _duration(1.5) == "1.5s" and _duration(3600) == "1h0m0s"


def test_estimate_heuristic():
    assert [estimate_tokens(n) for n in (0, 1, 4, 5, 400)] == [0, 1, 1, 2, 100]


def test_usage_stripper_takes_out_only_the_usage_chunk_and_keeps_its_numbers():
    s = UsageStripper("openai")
    stream = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    out = b"".join(s.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + s.finish()
    assert out == (b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\ndata: [DONE]\n\n')
    assert s.usage == {"input_tokens": 3, "output_tokens": 2}


@pytest.mark.parametrize(
    "quotas, msg",
    [
        ({"tiers": {"gold": {"requests_per_minute": 1}}}, "must define the tier 'default'"),
        ({"tiers": {"default": {"requests_per_minute": 0}}}, "greater than or equal to 1"),
        ({"tiers": {"default": {"request_per_minute": 5}}}, "unknown key"),
        ({"backend": "mysql://x", "tiers": {"default": {}}}, "redis://"),
        ({"on_error": "ignore", "tiers": {"default": {}}}, "block"),
        ({"tiers": {}}, "at least the tier 'default'"),
    ],
)
def test_config_errors_name_file_line_and_key(tmp_path, pki_dir, quotas, msg):
    from guard.config import load_config
    from guard.demo.stack import guard_config, write_config

    p = write_config(tmp_path / "guard.yaml", guard_config(pki_dir, "http://127.0.0.1:1", 1, 2, quotas=quotas))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    text = str(e.value)
    assert text.startswith(f"{p}:") and "quotas" in text and msg in text, text


def test_memory_backend_with_several_workers_is_accepted(tmp_path, pki_dir):
    """The workers share one keeper's counters (tests/quota/test_memory_workers.py runs them)."""
    from guard.config import load_config
    from guard.demo.stack import guard_config, write_config

    p = write_config(
        tmp_path / "guard.yaml",
        guard_config(pki_dir, "http://127.0.0.1:1", 1, 2, workers=2, quotas={"tiers": {"default": {"concurrent": 1}}}),
    )
    assert load_config(p).quotas.backend == "memory"


def test_spend_budget_prices_usage_per_model_and_fails_closed_without_a_price():
    q, _ = make(
        {"default": {"spend_per_day": 0.001}},  # 1000 millionths of the currency
        prices={"gpt-*": {"input": 1.0, "output": 2.0}},
    )  # per million tokens

    async def go():
        t = await q.admit("a", "default", 300, model="gpt-4o")
        assert isinstance(t, Ticket) and t.reserved_spend == 300
        await q.settle(t, (300, 200))  # 300 * 1 + 200 * 2
        use = (await q.usage("a"))["principals"]["a"]["default"]["spend_per_day"]
        assert use["used"] == pytest.approx(0.0007) and use["limit"] == 0.001
        r = await q.admit("a", "default", 400, model="gpt-4o")
        assert isinstance(r, Refusal) and r.counter == "spend_per_day" and r.status == 429
        r2 = await q.admit("a", "default", 1, model="llama-3")
        assert isinstance(r2, Refusal) and (r2.status, r2.code) == (503, "quota_price_unknown")

    run(go())


def test_spend_limit_needs_a_price_table():
    with pytest.raises(ValueError, match="price table"):
        QuotaSettings(tiers={"default": {"spend_per_month": 10}})
