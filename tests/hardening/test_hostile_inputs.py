"""No input can stall the event loop: hostile prompts against the RUNNING proxy (shipped filters, real mTLS).

Each family once made a backtracking pattern run for tens of seconds to minutes on the event loop (or is the
same kind of bait for another screen): many unterminated PEM headers, long dotted token runs, AKIA runs,
digit runs with separators, ``x@x@`` runs, dotted quads, nested-quantifier bait. Now every configured pattern
runs on RE2 (linear time) and large texts are screened off the event loop under a per-request budget, so
each hostile prompt gets its answer (blocked, passed, or 503 over budget) in bounded time while an ordinary
request sent meanwhile is answered promptly. The bounds are generous (seconds): speed figures are in
tests/bench/bench_hostile.py, not here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bench.bench_hostile import hostile_bodies
from tests.conftest import GuardHandle, start_guard
from tests.hardening.conftest import events, metric

SIZE = 384 * 1024  # per hostile prompt: a few hundred KB (the slow patterns took minutes at this size)
FAMILIES = hostile_bodies(SIZE)
ORDINARY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.fixture(scope="module")
def big_guard(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardHandle]:
    h = start_guard(
        pki_dir,
        model_server[1],
        tmp_path_factory.mktemp("hostile"),
        judge_url=model_server[1],
        limits={"max_body_bytes": 4 << 20},
    )
    yield h
    h.stop()


def _post(g: GuardHandle, body: bytes, out: dict[str, Any], timeout: float = 60) -> None:
    t = time.monotonic()
    with g.client(timeout=timeout) as c:
        r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    out.update(
        status=r.status_code,
        json=r.json(),
        rid=r.headers.get("x-guard-request-id"),
        seconds=time.monotonic() - t,
        done=time.monotonic(),
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_prompt_is_answered_and_others_are_not_held_up(big_guard: GuardHandle, family: str) -> None:
    hostile: dict[str, Any] = {}
    th = threading.Thread(target=_post, args=(big_guard, FAMILIES[family], hostile))
    th.start()
    time.sleep(0.05)  # the hostile body is on its way (or being screened) when the ordinary request goes out
    with big_guard.client(timeout=30) as c:
        t = time.monotonic()
        r = c.post("/v1/chat/completions", json=ORDINARY)
        ordinary_s = time.monotonic() - t
    th.join(60)
    assert not th.is_alive(), f"{family}: the hostile prompt got no answer within 60 s"
    assert r.status_code == 200, r.text
    assert ordinary_s < 5, f"{family}: an ordinary request waited {ordinary_s:.1f} s behind a hostile one"
    # Answered: passed, refused by a screen, or over the screening budget; always in the OpenAI error shape.
    assert hostile["status"] in (200, 400, 503), hostile
    assert hostile["rid"], hostile
    if hostile["status"] != 200:
        err = hostile["json"]["error"]
        assert err["code"] in (
            "secret_blocked",
            "denylisted",
            "pii_blocked",
            "unsafe_content",
            "screen_budget_exceeded",
        ), err
    assert hostile["seconds"] < 30, f"{family}: {hostile['seconds']:.1f} s to answer"


def test_pem_family_is_blocked_not_passed(big_guard: GuardHandle) -> None:
    """Many unterminated private-key headers (the pattern that once ran for minutes) still count as a key."""
    out: dict[str, Any] = {}
    _post(big_guard, FAMILIES["pem_unterminated"], out)
    assert out["status"] == 400 and out["json"]["error"]["code"] == "secret_blocked", out


def test_over_budget_fails_closed_with_503_audit_record_and_metric(guard_factory: Any) -> None:
    """A screening budget too small for any real screen: the request is refused 503 screen_budget_exceeded
    (OpenAI error shape, request id), its exchange.denied record names the code, the metric counts it."""
    g = guard_factory(limits={"max_body_bytes": 4 << 20, "screen_budget_ms": 1})
    before = metric(g.admin_url, "guard_fail_closed_total", component="screen_budget")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Plain words to screen. " * 8000}]}
    with g.client() as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "screen_budget_exceeded"
    rid = r.headers["x-guard-request-id"]
    deadline = time.monotonic() + 5
    rec = None
    while rec is None and time.monotonic() < deadline:
        rec = next((e for e in events(g.config.audit.dir) if e.get("request_id") == rid), None)
        time.sleep(0.05)
    assert rec is not None and rec["type"] == "exchange.denied", rec
    assert rec["outcome"]["status"] == 503 and "screen_budget_exceeded" in str(rec), rec
    assert metric(g.admin_url, "guard_fail_closed_total", component="screen_budget") == before + 1


def test_ordinary_requests_pass_within_the_default_budget(big_guard: GuardHandle) -> None:
    """The budget refuses only what runs past it: a 300 KB ordinary prompt is screened and answered."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "A long and harmless essay. " * 11000}]}
    with big_guard.client(timeout=30) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text


def test_many_hostile_clients_do_not_starve_an_ordinary_one(big_guard: GuardHandle) -> None:
    """Four clients send hostile prompts back to back; ordinary requests sent meanwhile all finish, each
    within a generous bound, and well before the hostile clients are done."""
    names = ["pem_unterminated", "dotted_quads", "at_run", "card_digits"]
    stop = threading.Event()
    answers: list[int] = []

    def loop(name: str) -> None:
        while not stop.is_set():
            out: dict[str, Any] = {}
            try:
                _post(big_guard, FAMILIES[name], out)
                answers.append(out["status"])
            except httpx.HTTPError:
                answers.append(0)

    threads = [threading.Thread(target=loop, args=(n,)) for n in names]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        worst = 0.0
        with big_guard.client(timeout=30) as c:
            for _ in range(10):
                t0 = time.monotonic()
                r = c.post("/v1/chat/completions", json=ORDINARY)
                worst = max(worst, time.monotonic() - t0)
                assert r.status_code == 200, r.text
    finally:
        stop.set()
        for t in threads:
            t.join(90)
    assert worst < 5, f"an ordinary request took {worst:.1f} s under hostile load"
    assert answers and all(s in (200, 400, 503) for s in answers), answers
