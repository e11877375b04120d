"""Guard's processes run with the collector tuned (guard.gc_tuning): start-up objects frozen, gen0 threshold
raised, so concurrent traffic does not keep triggering collections (python_gc_collections_total on /metrics)."""

from __future__ import annotations

import asyncio
import functools
import gc
import operator

import httpx

from guard import gc_tuning
from tests.ops.test_metrics import scrape, total


def test_tune_freezes_what_is_alive_and_raises_gen0_threshold():
    before = gc.get_threshold()
    try:
        gc_tuning.tune()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gc_tuning.GEN0_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_served_guard_does_not_collect_under_concurrent_traffic(guard_process, tmp_path):
    """800 requests, 16 at a time, through a real `guard serve`. With CPython's default threshold (700) this
    load triggers about 9 gen0 collections in the worker here; tuned, none."""
    (tmp_path / "no-filters").mkdir()
    g = guard_process(filters={"dir": str(tmp_path / "no-filters")})
    gen0 = lambda m: total(m, "python_gc_collections_total", generation="0")  # noqa: E731
    before = gen0(scrape(g.admin_url))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}

    async def drive() -> list[int]:
        async with httpx.AsyncClient(
            base_url=g.url, verify=g.ssl(), timeout=20, limits=httpx.Limits(max_connections=16)
        ) as c:

            async def one(k: int) -> list[int]:
                return [(await c.post("/v1/chat/completions", json=body)).status_code for _ in range(50)]

            return functools.reduce(operator.iadd, await asyncio.gather(*(one(k) for k in range(16))), [])

    codes = asyncio.run(drive())
    assert codes == [200] * 800
    collections = gen0(scrape(g.admin_url)) - before
    assert collections <= 1, f"{collections} gen0 collections for 800 requests"
