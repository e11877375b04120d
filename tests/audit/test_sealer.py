"""The sealer process (audit.sealer: process; what ``auto``, the default, picks with two CPUs per worker):
events sealed and written beside the worker.

Through the real proxy: the sealer killed under traffic fails requests closed (503 audit_unavailable, counted),
a new sealer resumes the same chain with a recovery checkpoint, and the journal verifies; the worker's
/metrics shows the fsyncs and events the sealer reports; ``sealer: thread`` writes the same journal in-process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from guard.audit.journal import Journal
from guard.audit.schema import journal_errors
from guard.audit.seal import keygen
from guard.audit.sealer import ProcessJournal
from tests.audit.proxy_helpers import by_request, chat, journal_events, metric, verify

ROUTES = [{"model": "gpt-*", "upstream": "local"}]


def _setup(tmp_path: Path, **kw: Any) -> tuple[dict[str, Any], Path]:
    priv, pub, _ = keygen(tmp_path / "audit-keys")
    return {
        "dir": str(tmp_path / "audit"),
        "signing_key": str(priv),
        "checkpoint_events": 20,
        "sealer": "process",
        **kw,
    }, pub


def _metrics(g: Any) -> str:
    return httpx.get(g.admin_url + "/metrics", timeout=10).text


def test_a_killed_sealer_refuses_requests_until_a_new_one_resumes_the_chain(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    audit, pub = _setup(tmp_path)
    g = guard_factory(routes=ROUTES, audit=audit)
    journal = g.runtime.journal
    assert isinstance(journal, ProcessJournal)
    first = journal._proc
    answered: list[str] = []
    with g.client("app") as c:
        for i in range(5):
            r = chat(c, f"before {i}")
            assert r.status_code == 200
            answered.append(r.headers["x-guard-request-id"])
        before = metric(_metrics(g), "guard_fail_closed_total", component="audit")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 5
        while journal.healthy and time.monotonic() < deadline:  # the worker notices the sealer is gone
            time.sleep(0.02)
        r = chat(c, "while the sealer is down")
        assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable", r.text
        assert metric(_metrics(g), "guard_fail_closed_total", component="audit") > before
        deadline = time.monotonic() + 15
        while True:  # a new sealer starts in the background and resumes the chain
            r = chat(c, "after")
            if r.status_code == 200:
                answered.append(r.headers["x-guard-request-id"])
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert journal._proc.pid != first.pid
        assert httpx.get(g.admin_url + "/readyz", timeout=10).status_code == 200
    g.stop()

    root = Path(audit["dir"])
    assert journal_errors(root) == []
    rc, doc = verify(root, pub)
    assert rc == 0 and doc["ok"], doc
    assert len(doc["chains"]) == 1 and doc["chains"][0]["closed"], doc  # one chain, continued, then closed
    events = journal_events(root)
    recs = by_request(events)
    assert not [rid for rid in answered if "exchange.started" not in recs.get(rid, {})]
    recovery = [
        e["checkpoint"] for e in events if e["type"] == "audit.checkpoint" and e["checkpoint"]["reason"] == "recovery"
    ]
    assert recovery and recovery[-1]["recovery"].get("unclean_stop") is True, recovery


def test_the_worker_reports_what_its_sealer_wrote_in_its_metrics(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    audit, _ = _setup(tmp_path, durability="fsync")
    g = guard_factory(routes=ROUTES, audit=audit)
    m0 = _metrics(g)
    with g.client("app") as c:
        for i in range(6):
            assert chat(c, f"hello {i}").status_code == 200
    m1 = _metrics(g)
    fsyncs = metric(m1, "guard_audit_fsync_duration_seconds_count") - metric(
        m0, "guard_audit_fsync_duration_seconds_count"
    )
    started = metric(m1, "guard_audit_events_total", type="exchange.started") - metric(
        m0, "guard_audit_events_total", type="exchange.started"
    )
    assert fsyncs >= 6 and started == 6  # fsync durability: each sequential request waited for its own fsync


def test_the_thread_sealer_writes_the_same_verifiable_journal(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    audit, pub = _setup(tmp_path, sealer="thread")
    g = guard_factory(routes=ROUTES, audit=audit)
    assert type(g.runtime.journal) is Journal
    with g.client("app") as c:
        ids = [chat(c, f"hello {i}").headers["x-guard-request-id"] for i in range(4)]
    g.stop()
    root = Path(audit["dir"])
    rc, doc = verify(root, pub)
    assert rc == 0 and doc["ok"] and doc["chains"][0]["closed"], doc
    recs = by_request(journal_events(root))
    assert all({"exchange.started", "exchange.completed"} <= set(recs[i]) for i in ids)


def test_events_with_values_marshal_refuses_are_made_plain_and_sealed(tmp_path: Path) -> None:
    """Guard's events travel to the sealer as marshal data; a subclass or foreign object in one is made plain
    first (its base value, or its str()): the event is sealed, not lost, and the journal verifies."""
    import enum

    from guard.audit.settings import AuditSettings

    class Level(enum.IntEnum):
        HIGH = 3

    class Tag(str):
        pass

    audit, pub = _setup(tmp_path)
    j = ProcessJournal(AuditSettings(**audit), "marshal-pickle")
    j.append_sync({"type": "config.loaded", "id": "e1", "plain": {"n": 1, "f": 0.25}})
    j.append_sync({"type": "config.loaded", "id": "e2", "level": Level.HIGH, "tag": Tag("blue"), "obj": Path("/x")})
    j.close()
    root = Path(audit["dir"])
    rc, doc = verify(root, pub)
    assert rc == 0 and doc["ok"], doc
    evs = {e.get("id"): e for e in journal_events(root)}
    assert evs["e1"]["plain"] == {"n": 1, "f": 0.25}
    assert evs["e2"]["level"] == 3 and evs["e2"]["tag"] == "blue" and evs["e2"]["obj"] == "/x"


def test_auto_picks_a_sealer_process_only_with_two_cpus_per_worker(monkeypatch: Any, tmp_path: Path) -> None:
    from guard.audit.settings import AuditSettings

    s = AuditSettings(dir=tmp_path)
    assert s.sealer == "auto"
    for cpus, workers, kind in (
        (2, 1, "process"),
        (2, 2, "thread"),
        (1, 1, "thread"),
        (8, 4, "process"),
        (8, 5, "thread"),
    ):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert s.sealer_for(workers) == kind, (cpus, workers)
    assert AuditSettings(dir=tmp_path, sealer="process").sealer_for(64) == "process"
    assert AuditSettings(dir=tmp_path, sealer="thread").sealer_for(1) == "thread"


def test_an_exchanges_facts_become_in_the_sealer_the_event_the_thread_journal_assembles(tmp_path: Path) -> None:
    """The worker hands the sealer process an exchange's facts, not its event (guard.audit.event.from_facts
    runs there): the record written is the one the thread journal writes for the same facts, and what the
    pipeline changes on the Exchange after the append is not in it. Facts that are not facts are refused
    (the append fails, as for a failed write) and the sealer keeps sealing."""
    import asyncio

    from guard.audit import event as ev
    from guard.audit.journal import JournalError
    from guard.audit.settings import AuditSettings
    from tests.audit.test_recorder import _ex

    audit, pub = _setup(tmp_path)
    thread_dir = tmp_path / "thread-audit"
    content = {"capture": "hash", "key_id": "k1", "prompt_hmac": "00" * 32}

    async def go(j: Any) -> None:
        ex = _ex("r1")
        await j.append_facts(ev.started_facts(ex, content))
        ex.stage_ms["upstream_total"] = 5.0  # after the append: belongs to exchange.completed only
        await j.append_facts(
            ev.completed_facts(ex, 200, "stop", 42, {"input_tokens": 3, "output_tokens": 2}, content, {"total": 7.25}),
            wait=False,
        )
        if isinstance(j, ProcessJournal):
            try:
                await j.append_facts(("exchange.started", 1, ("r2",)))
            except JournalError as e:
                assert "unusable exchange record" in str(e)
            else:
                raise AssertionError("malformed facts were accepted")
            await j.append_facts(ev.denied_facts(_ex("r3"), 403, "forbidden", "access"))

    for journal in (
        ProcessJournal(AuditSettings(**audit), "w1"),
        Journal(AuditSettings(**{**audit, "dir": str(thread_dir)}), "w1"),
    ):
        asyncio.run(go(journal))
        journal.close()
    rc, doc = verify(Path(audit["dir"]), pub)
    assert rc == 0 and doc["ok"], doc
    assert journal_errors(Path(audit["dir"])) == []

    def records(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
        skip = {"id", "time", "hash", "sig", "prev", "seq", "chain", "key_id"}
        return {
            (e["request_id"], e["type"]): {k: v for k, v in e.items() if k not in skip}
            for e in journal_events(root)
            if e.get("request_id")
        }

    process, thread = records(Path(audit["dir"])), records(thread_dir)
    assert set(process) == {("r1", "exchange.started"), ("r1", "exchange.completed"), ("r3", "exchange.denied")}
    assert process[("r1", "exchange.started")] == thread[("r1", "exchange.started")]
    assert process[("r1", "exchange.completed")] == thread[("r1", "exchange.completed")]
    started, completed = process[("r1", "exchange.started")], process[("r1", "exchange.completed")]
    assert "upstream_total" not in started["latency_ms"] and completed["latency_ms"]["upstream_total"] == 5.0
    assert completed["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert completed["outcome"] == {"status": 200, "bytes": 42, "finish_reason": "stop"}
    assert started["content"] == content and started["principal"]["cn"] == "a"
