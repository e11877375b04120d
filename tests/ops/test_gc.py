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


def test_deferral_keeps_the_collector_off_while_any_large_request_is_in_flight():
    d = gc_tuning._Deferral()
    assert gc.isenabled()
    try:
        d.defer()
        d.defer()
        assert not gc.isenabled()
        d.resume()
        assert not gc.isenabled()  # one large request still in flight
        d.resume()
        assert gc.isenabled()
        d.resume()  # an unmatched resume changes nothing
        assert gc.isenabled() and d.in_flight == 0
    finally:
        gc.enable()


def test_deferral_is_bounded_and_can_be_turned_off(monkeypatch):
    d = gc_tuning._Deferral()
    now = [1000.0]
    monkeypatch.setattr(gc_tuning.time, "monotonic", lambda: now[0])
    ran: list[int] = []
    monkeypatch.setattr(gc_tuning.gc, "collect", lambda *a: ran.append(1) or 0)
    try:
        d.max_s = 30
        d.defer()
        now[0] += 29
        d.defer()
        assert ran == []
        now[0] += 2  # deferred for longer than max_s: the next large request runs one full collection
        d.defer()
        assert ran == [1] and d.collections == 1 and not gc.isenabled()
        for _ in range(3):
            d.resume()
        assert gc.isenabled()
        d.max_s = 0  # limits.gc_defer_s: 0
        d.defer()
        assert gc.isenabled()
        d.resume()
    finally:
        gc.enable()


def _many_messages(n: int) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"part {i}"} for i in range(n)]}


def test_large_bodies_do_not_set_off_collections(guard_process, tmp_path):
    """A body of 10,000 small messages is tens of thousands of tracked objects alive for the request; with the
    collector running, each such request triggers collections that walk them all (pausing every other
    client). Guard defers automatic collection while such a request is in flight (limits.gc_defer_s);
    the same traffic through a Guard with gc_defer_s: 0 shows the collections it avoided."""
    (tmp_path / "no-filters").mkdir()
    counts = {}
    for defer_s in (30, 0):
        g = guard_process(filters={"dir": str(tmp_path / "no-filters")}, limits={"gc_defer_s": defer_s})
        m = scrape(g.admin_url)
        before = sum(total(m, "python_gc_collections_total", generation=str(k)) for k in range(3))

        async def drive(g=g) -> list[int]:
            async with httpx.AsyncClient(base_url=g.url, verify=g.ssl(), timeout=60) as c:

                async def one() -> list[int]:
                    body = _many_messages(10_000)
                    return [(await c.post("/v1/chat/completions", json=body)).status_code for _ in range(4)]

                return functools.reduce(operator.iadd, await asyncio.gather(*(one() for _ in range(3))), [])

        assert asyncio.run(drive()) == [200] * 12
        m = scrape(g.admin_url)
        counts[defer_s] = sum(total(m, "python_gc_collections_total", generation=str(k)) for k in range(3)) - before
    # between one client's requests no large body may be in flight, and the collector runs then: a few at most
    assert counts[0] >= 6, counts  # the same traffic with the deferral off: the test can tell them apart
    assert counts[30] <= counts[0] / 4, counts


def test_the_collector_comes_back_on_the_next_loop_turn_unless_another_large_request_came():
    """At the end of a large request its body is still referenced (the request's own frame): the collector
    comes back one loop turn later, when it no longer has that body to walk."""
    d = gc_tuning._Deferral()

    async def go() -> list[bool]:
        seen = []
        d.defer()
        d.resume()
        seen.append(gc.isenabled())  # still off in the same turn
        await asyncio.sleep(0)
        seen.append(gc.isenabled())
        d.defer()
        d.resume()
        d.defer()  # another large request before the turn ends: stays off
        await asyncio.sleep(0)
        seen.append(gc.isenabled())
        d.resume()
        await asyncio.sleep(0)
        seen.append(gc.isenabled())
        return seen

    try:
        assert asyncio.run(go()) == [False, True, False, True]
    finally:
        gc.enable()
