"""Console search index: build rate from a journal (events/s) and filtered search latency at 1,000,000 events.

Build: a synthetic journal segment of N exchange events (the shape Guard writes; hashes and signatures are
placeholders: the index never checks them) is indexed by ``Index.update``, the path the console takes
(parse, facts, insert). Search: the index filled to SEARCH_N events (rows made with the same ``row_of``
straight from event dicts, without a journal file, to keep the run short), then each search the console
makes, timed as the console runs it (first page plus the total count), median of 5.

    .venv/bin/python tests/bench/bench_console.py [--quick]      (BUILD_N, SEARCH_N override the sizes)
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from guard.console import charts  # noqa: E402 - after the sys.path entry above (run as a script)
from guard.console.index import INDEXES, Index, Query, row_of  # noqa: E402

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SPAN_S = 90 * 86400  # a quarter
MODELS = [f"model-{i}" for i in range(20)] + ["gpt-4o", "llama3-70b", "internal-finance"]
FINDINGS = ["EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "PERSON"]


def event(i: int, n: int, rnd: random.Random) -> dict[str, Any]:
    t = T0 + SPAN_S * i // n
    us = rnd.randrange(1_000_000)
    p = rnd.randrange(500)
    r = rnd.random()
    typ = "exchange.denied" if r < 0.06 else "exchange.completed"
    screens = [
        {
            "name": "pii",
            "direction": "prompt",
            "status": "ok",
            "action": "pseudonymize",
            "blocked": False,
            "latency_ms": 0.4,
        }
    ]
    if rnd.random() < 0.1:
        screens[0]["entities"] = {rnd.choice(FINDINGS): 1}
    e: dict[str, Any] = {
        "schema_version": "1.0",
        "id": f"{i:08x}-0000-7000-8000-000000000000",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{us:06d}Z",
        "type": typ,
        "request_id": f"{i:024x}",
        "principal": {
            "subject": f"CN=app-{p},OU=team-{p % 25}",
            "cn": f"app-{p}",
            "ou": [f"team-{p % 25}"],
            "spiffe_id": "",
            "fingerprint": f"{p:064x}",
        },
        "client_ip": "10.0.0.1",
        "api": "openai" if p % 4 else "ollama",
        "operation": "chat",
        "model": rnd.choice(MODELS),
        "upstream": "local" if p % 3 else "azure",
        "stream": False,
        "decisions": {
            "access": {"effect": "allow", "rule": f"policies/policy.csv:{3 + p % 8}", "policy_version": "ab" * 32}
        },
        "screens": screens,
        "latency_ms": {"total": 1.2},
        "outcome": {"status": 200, "bytes": 300},
    }
    if typ == "exchange.denied":
        stage = "screen" if r < 0.03 else "access"
        e["denial"] = {"stage": stage, "code": "pii_blocked" if stage == "screen" else "access_denied"}
        e["outcome"] = {"status": 400 if stage == "screen" else 403, "bytes": 0}
        if stage == "screen":
            screens[0]["blocked"] = True
            screens[0]["entities"] = {"US_SSN": 1}
    e.update(chain="bench-w0", seq=i + 1, prev="0" * 64, key_id="0" * 16, hash="1" * 64, sig="A" * 86 + "==")
    return e


def build(tmp: Path, n: int) -> tuple[float, int]:
    root = tmp / "journal"
    seg = root / "chains" / "bench-w0" / "0000000000000001.jsonl"
    seg.parent.mkdir(parents=True)
    rnd = random.Random(1)
    with open(seg, "w") as f:
        f.writelines(json.dumps(event(i, n, rnd), separators=(",", ":")) + "\n" for i in range(n))
    idx = Index(tmp / "build.sqlite", root)
    t = time.perf_counter()
    added = idx.update()
    dt = time.perf_counter() - t
    t = time.perf_counter()
    again = idx.update()  # nothing new: the incremental path
    idx.close()
    return dt, added + 0 * again


def fill(tmp: Path, n: int) -> tuple[Index, float]:
    idx = Index(tmp / "search.sqlite", tmp / "nojournal")
    rnd = random.Random(2)
    t = time.perf_counter()
    for name in INDEXES:  # as a build from scratch does: rows first, indexes after
        idx.db.execute(f"DROP INDEX {name}")
    batch = []
    for i in range(n):
        batch.append(row_of(event(i, n, rnd), "bench-w0", "0000000000000001.jsonl", i * 900))
        if len(batch) == 50_000:
            idx.add_rows(batch)
            batch = []
    if batch:
        idx.add_rows(batch)
    idx.make_indexes()
    idx.db.execute("ANALYZE")  # as update() does after a build from scratch
    return idx, time.perf_counter() - t


def timed(fn: Any, reps: int = 5) -> tuple[float, Any]:
    out = None
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main() -> None:
    quick = "--quick" in sys.argv
    build_n = int(os.environ.get("BUILD_N", "20000" if quick else "200000"))
    search_n = int(os.environ.get("SEARCH_N", "50000" if quick else "1000000"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        dt, added = build(tmp, build_n)
        print(f"index build from a journal: {added} events in {dt:.1f} s = {added / dt:,.0f} events/s")
        idx, fill_s = fill(tmp, search_n)
        print(f"index filled to {idx.count():,} events in {fill_s:.1f} s (rows straight from event dicts)")
        day = "2026-02-14T00:00:00.000000Z", "2026-02-15T00:00:00.000000Z"
        searches = {
            "no filter (first page + count)": Query(),
            "principal, whole quarter": Query(principal="app-42"),
            "principal + one day": Query(principal="app-42", since=day[0], until=day[1]),
            "model + decision=denied": Query(model="internal-finance", decision="denied"),
            "decision=blocked + finding US_SSN": Query(decision="blocked", finding="US_SSN"),
            "group (OU), whole quarter": Query(group="team-7"),
            "finding EMAIL_ADDRESS + one day": Query(finding="EMAIL_ADDRESS", since=day[0], until=day[1]),
            "upstream + api + rule": Query(upstream="azure", api="ollama", rule="policies/policy.csv:5"),
        }
        base, _ = timed(lambda: idx.search(Query(), 50, 0))
        rows = []
        for name, q in searches.items():
            s, (_, total) = timed(lambda q=q: idx.search(q, 50, 0))
            rows.append((name, total, s))
            print(f"  search {name:<40} {total:>9,} match  {s * 1000:8.1f} ms  ({s / base:.1f}x the unfiltered page)")
        s, _ = timed(lambda: charts.over_time(idx, Query()), 3)
        print(f"  chart: exchanges per day by decision, whole quarter        {s * 1000:8.1f} ms")
        s2, _ = timed(lambda: charts.top(idx, Query(), "principal"), 3)
        print(f"  chart: top principals, whole quarter                       {s2 * 1000:8.1f} ms")
        month = Query(since="2026-03-02T00:00:00.000000Z")  # the charts page's default: the latest 30 days
        s3, _ = timed(lambda: charts.over_time(idx, month), 3)
        s4, _ = timed(lambda: charts.top(idx, month, "principal"), 3)
        print(f"  chart: per day by decision / top principals, latest 30 days    {s3 * 1000:8.1f} / {s4 * 1000:.1f} ms")
        worst = max(r[2] for r in rows)
        print(
            f"slowest filtered search at {idx.count():,} events: {worst * 1000:.0f} ms "
            f"({'under' if worst < 1 else 'OVER'} the 1 s goal)"
        )
        idx.close()


if __name__ == "__main__":
    main()
