"""The stage driver (guard.pipeline over guard.stages), seen from outside: a running Guard with mTLS, the
built-in model server and a signed journal. Each timed stage's duration reaches the audit record once it
has ended, a stage that refused is not timed and stops the path, a stage with nothing to do (no prompt
screens) is not timed, and a listing runs its own, shorter list."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guard.stages import LISTING, STAGES, TIMINGS
from tests.audit.proxy_helpers import by_request, chat, journal_events


def _records(root: Path, rid: str, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The journal's ``kind`` event for request ``rid`` (a completion is written with the next group commit)."""
    deadline = time.monotonic() + timeout
    while True:
        found = by_request(journal_events(root)).get(rid, {})
        if kind in found or time.monotonic() > deadline:
            assert kind in found, (rid, kind, sorted(found))
            return found[kind]
        time.sleep(0.05)


def _guard(guard_factory: Callable[..., Any], tmp_path: Path, screens: bool) -> tuple[Any, Path]:
    root = tmp_path / "audit"
    kw: dict[str, Any] = {"audit": {"dir": str(root)}}
    if not screens:  # a filters folder with no profile: no prompt or response screens
        (tmp_path / "no-filters").mkdir()
        kw["filters"] = {"dir": str(tmp_path / "no-filters")}
    return guard_factory(**kw), root


def test_the_code_lists_each_stage_once_and_times_only_known_names() -> None:
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names)) and names[0] == "identity" and names[-1] == "completed"
    assert names.index("audit") < names.index("upstream_first_byte")  # durable before anything goes upstream
    assert [s.name for s in LISTING] == ["identity", "policy", "models"]
    assert {s.name for s in STAGES if s.timed} <= set(TIMINGS)


def test_timed_stages_reach_the_audit_record_once_they_have_ended(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    g, root = _guard(guard_factory, tmp_path, screens=True)
    with g.client("app") as c:
        r = chat(c, "Hello [[reply: hi there]]")
        assert r.status_code == 200, r.text
    rid = r.headers["x-guard-request-id"]
    started = _records(root, rid, "exchange.started")
    completed = _records(root, rid, "exchange.completed")
    # exchange.started is sealed by the audit stage (audit.start_record: overlap hands it over and lets the
    # fsync run while the model works, so the hand-off's own time may be in it): what ran before it
    assert set(started["latency_ms"]) - {"audit"} == {"identity", "parse", "route", "policy", "screens_prompt"}
    # exchange.completed: the rest, the response screens' part of the answer, and the recorder's total; it is
    # handed over before upstream_total ends (that one lives in the metrics and trace spans)
    later = {"audit", "upstream_first_byte", "screens_response", "total"}
    assert set(completed["latency_ms"]) == set(started["latency_ms"]) - {"audit"} | later
    assert all(v >= 0 for v in completed["latency_ms"].values())


def test_a_refusing_stage_is_not_timed_and_nothing_after_it_runs(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    g, root = _guard(guard_factory, tmp_path, screens=True)
    with g.client("app") as c:
        denied = chat(c, "Hi", model="internal-finance")  # OU apps may not use internal-* models
        unrouted = c.post("/v1/nowhere", json={})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "access_denied"
    assert unrouted.status_code == 404
    ev = _records(root, denied.headers["x-guard-request-id"], "exchange.denied")
    assert set(ev["latency_ms"]) == {"identity", "parse", "route"}  # policy refused: neither it nor later
    assert ev["denial"]["stage"] == "access"
    ev = _records(root, unrouted.headers["x-guard-request-id"], "exchange.denied")
    assert set(ev.get("latency_ms") or {}) == set()  # identity refused the unknown endpoint


def test_a_stage_with_nothing_to_do_is_not_timed_and_a_listing_runs_its_own_stages(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    g, root = _guard(guard_factory, tmp_path, screens=False)
    with g.client("app") as c:
        r = chat(c, "Hello [[reply: hi there]]")
        listing = c.get("/v1/models")
    assert r.status_code == 200 and listing.status_code == 200
    started = _records(root, r.headers["x-guard-request-id"], "exchange.started")
    assert set(started["latency_ms"]) - {"audit"} == {"identity", "parse", "route", "policy"}  # no prompt screen
    completed = _records(root, r.headers["x-guard-request-id"], "exchange.completed")
    assert set(completed["latency_ms"]) == {
        "identity",
        "parse",
        "route",
        "policy",
        "audit",
        "upstream_first_byte",
        "total",
    }
    done = _records(root, listing.headers["x-guard-request-id"], "exchange.completed")
    assert set(done["latency_ms"]) == {"identity", "policy", "total"} and done["model"] == "*"


def test_stages_that_never_await_are_plain_functions_and_the_rest_coroutines() -> None:
    """The driver calls a stage's ``run`` directly when it is a plain function (no coroutine per request) and
    awaits it otherwise; a stage that awaits anything must be a coroutine function, or the driver would drop
    its awaitable unawaited."""
    import inspect

    plain = {s.name for s in (*STAGES, *LISTING) if not inspect.iscoroutinefunction(s.run)}
    assert plain == {"identity", "route", "policy", "content"}, plain
    for cls in (*STAGES, *LISTING):
        src = inspect.getsource(cls.run)
        assert ("await " in src) == inspect.iscoroutinefunction(cls.run), cls.__name__


def test_heavy_plain_stages_run_in_a_worker_thread_for_large_bodies_only() -> None:
    """Route walks every message of the body (canonical.admit): for a body over LARGE_BODY it runs in a worker
    thread, so a megabyte of small messages does not hold the event loop; small bodies stay on the loop (no
    thread hop per ordinary request)."""
    import asyncio
    import threading
    from typing import ClassVar

    from guard.exchange import Exchange
    from guard.pipeline import _steps
    from guard.stages.base import LARGE_BODY, Flow
    from guard.stages.request import Route

    assert getattr(Route, "heavy", False)
    seen: list[str] = []

    class Heavy:
        name: ClassVar[str] = "heavy"
        timed: ClassVar[bool] = False
        heavy: ClassVar[bool] = True

        def run(self, flow: Flow) -> None:
            seen.append(threading.current_thread().name)

    [(run, _, coro)] = _steps([Heavy()])  # type: ignore[list-item]
    assert coro
    for size in (LARGE_BODY, LARGE_BODY + 1):
        ex = Exchange(request_id="r", api="openai", operation="chat", model="m", path="/", body={})
        ex.body_bytes = size
        asyncio.run(run(Flow(ex, {}, None, None)))  # type: ignore[arg-type]
    main = threading.main_thread().name
    assert seen[0] == main and seen[1] != main, seen


def test_prompt_screens_that_only_read_share_the_segments_and_writers_get_copies() -> None:
    """Llama Guard and the injection classifier never rewrite a segment: they read the prompt's segments
    themselves (no copy of a megabyte of messages per screen); PII and the denylist, which may rewrite, each
    get a copy when another screen runs beside them."""
    from guard.apis import openai
    from guard.screens.failmode import GuardedScreen
    from guard.screens.safety.screen import SafetyScreen
    from guard.stages.decide import _segments

    assert SafetyScreen.reads_only and GuardedScreen(type("S", (), {"name": "x", "reads_only": True})()).reads_only
    body = {"model": "m", "messages": [{"role": "user", "content": f"m{i}"} for i in range(5)]}
    segs, before, copies = _segments(openai, "chat", body, [True, True, False])
    assert before == [s.text for s in segs] and len(copies) == 3
    assert copies[2] is segs and copies[0] is not segs and copies[1] is not segs and copies[0] is not copies[1]
    assert [s.text for s in copies[0]] == before
    alone, _, one = _segments(openai, "chat", body, [True])
    assert one == [alone] and one[0] is alone  # a single screen rewrites the segments themselves: no copy
