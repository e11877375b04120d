"""No input can stall the event loop: hostile prompts against the RUNNING proxy (shipped filters, real mTLS).

Each family once made a backtracking pattern run for tens of seconds to minutes on the event loop (or is the
same kind of bait for another screen): many unterminated PEM headers, long dotted token runs, AKIA runs,
digit runs with separators, ``x@x@`` runs, dotted quads, nested-quantifier bait; and hostile by shape: many
small messages, many tools with deeply nested schemas, long prose for the safety screen's judge. Now every
configured pattern runs on RE2 (linear time), large bodies are parsed and screened off the event loop under
a per-request budget, and Llama Guard judges long prompts in windows of bounded size (refusing, by default,
a prompt that needs more than ``max_windows``), so each hostile prompt gets its answer (blocked, passed,
refused, or 503 over budget) in bounded time while an ordinary request sent meanwhile is answered promptly.
The bounds are generous (seconds): speed figures are in tests/bench/bench_hostile.py, not here.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.demo.llama_guard_standin import StandIn, StandInThread
from guard.demo.stack import screening_filters
from tests.bench.bench_hostile import hostile_bodies
from tests.conftest import GuardHandle, start_guard
from tests.hardening.conftest import error_field, events, metric
from tests.steering_cases import HARM

MB = 1 << 20
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
            "prompt_too_long",
        ), err
    assert hostile["seconds"] < 30, f"{family}: {hostile['seconds']:.1f} s to answer"


def test_a_prompt_of_many_judge_windows_does_not_hold_others_up(big_guard: GuardHandle) -> None:
    """Prose just under the default window limit (30 windows of 12000 characters, each one judge call): answered
    after all its windows are judged, while an ordinary request sent meanwhile is answered promptly."""
    prose = "The committee met on Tuesday to review the quarterly figures and plan the next steps. "
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prose * (30 * 11000 // len(prose))}]}
    hostile: dict[str, Any] = {}
    th = threading.Thread(target=_post, args=(big_guard, json.dumps(body).encode(), hostile))
    th.start()
    time.sleep(0.05)
    with big_guard.client(timeout=30) as c:
        t = time.monotonic()
        r = c.post("/v1/chat/completions", json=ORDINARY)
        ordinary_s = time.monotonic() - t
    th.join(60)
    assert not th.is_alive() and r.status_code == 200, r.text
    assert ordinary_s < 5, f"an ordinary request waited {ordinary_s:.1f} s behind a many-window prompt"
    assert hostile["status"] in (200, 503), hostile  # judged whole and passed, or over the screening budget
    if hostile["status"] == 503:
        assert hostile["json"]["error"]["code"] == "screen_budget_exceeded", hostile


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


# --- Llama Guard on long prompts: windows, the window limit, bounded judge requests --------------------------

WINDOW, MAX_WINDOWS = 4000, 8
PROSE = "The committee met on Tuesday to review the quarterly figures and plan the next steps. "


@pytest.fixture(scope="module")
def judged(
    pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GuardHandle, StandIn]]:
    """Guard with the shipped filters, Llama Guard (the stand-in judge server, recording what it is sent) with
    prompt windows of 4000 characters, at most 8 of them."""
    si = StandIn()
    judge = StandInThread(si)
    tmp = tmp_path_factory.mktemp("windows")
    filters = screening_filters(tmp / "filters", judge.url)
    safety = filters / "safety.yaml"
    shipped = "prompt: {enabled: true, action: block}"
    assert shipped in safety.read_text()
    safety.write_text(
        safety.read_text().replace(
            shipped, f"prompt: {{enabled: true, action: block, window_chars: {WINDOW}, max_windows: {MAX_WINDOWS}}}"
        )
    )
    h = start_guard(
        pki_dir,
        model_server[1],
        tmp,
        filters={"dir": str(filters)},
        limits={"max_body_bytes": 4 << 20, "screen_budget_ms": 20000},  # a busy test box: judge sizes matter here
    )
    yield h, si
    h.stop()
    judge.stop()


def _record(g: GuardHandle, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rec = next((e for e in events(g.config.audit.dir) if e.get("request_id") == rid), None)
        if rec is not None:
            return rec
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {rid}")


def _judge_chars(si: StandIn, since: int) -> list[int]:
    """The size of each judge request's conversation since ``since`` requests."""
    return [sum(len(m["content"]) for m in body["messages"]) for _, body in si.requests[since:]]


def test_a_long_prompt_is_judged_in_windows_to_its_end(judged: tuple[GuardHandle, StandIn]) -> None:
    """Harm in the last sentence of a prompt six windows long: refused unsafe_content; the judge got several
    requests, none larger than a window and its context."""
    g, si = judged
    n = len(si.requests)
    text = PROSE * (5 * WINDOW // len(PROSE)) + HARM
    with g.client(timeout=30) as c:
        r = c.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsafe_content", r.text
    sizes = _judge_chars(si, n)
    assert len(sizes) >= 5 and max(sizes) <= WINDOW + 2000 + 16, sizes


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_prompt_needing_too_many_windows_is_refused_and_audited_without_a_judge_call(
    judged: tuple[GuardHandle, StandIn], path: str
) -> None:
    """A megabyte of prose needs far more than 8 windows: 400 prompt_too_long in the client API's own error
    shape with a request id, an exchange.denied record naming the safety screen's code, and no judge call."""
    g, si = judged
    n = len(si.requests)
    model = "llama3:8b" if path == "/api/chat" else "gpt-4o-mini"
    body = {"model": model, "messages": [{"role": "user", "content": PROSE * (MB // len(PROSE))}], "stream": False}
    with g.client(timeout=60) as c:
        r = c.post(path, json=body)
    assert r.status_code == 400, r.text
    # in the client API's own shape: OpenAI's {"error": {...}}, Ollama's {"error": "text", "code": ...}
    assert error_field(r, "code") == "prompt_too_long", r.text
    if path != "/api/chat":
        assert error_field(r, "type") == "guard_policy_violation", r.text
    assert "too long for the safety screen" in error_field(r, "message"), r.text
    rec = _record(g, r.headers["x-guard-request-id"])
    assert rec["type"] == "exchange.denied" and rec["outcome"]["status"] == 400, rec
    assert "prompt_too_long" in str(rec), rec
    assert len(si.requests) == n, "the judge was called for a prompt refused as too long"


def test_many_small_messages_reach_the_judge_bounded(judged: tuple[GuardHandle, StandIn]) -> None:
    """A quarter megabyte in three thousand small messages: answered, and every judge request stays small (the
    last turn, judged, plus bounded context; the answer judged with a bounded prompt)."""
    g, si = judged
    n = len(si.requests)
    body = json.loads(hostile_bodies(MB // 4)["many_messages"])
    body["model"] = "gpt-4o-mini"
    with g.client(timeout=60) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    sizes = _judge_chars(si, n)
    assert sizes and max(sizes) <= WINDOW + 2000 + 64, sizes
