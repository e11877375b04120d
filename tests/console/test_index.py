"""The console's index: brought up to date incrementally, rebuilt when the journal changes under it, and
selecting exactly what an export or evidence pack with the same filters selects."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from guard.audit.export import Filter, export
from guard.console.index import Index, Query
from tests.bench.bench_console import event

N = 3000


def _journal(root: Path, n: int = N, start: int = 0, seg: str = "0000000000000001.jsonl") -> Path:
    d = root / "chains" / "bench-w0"
    d.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(start)
    with open(d / seg, "a") as f:
        f.writelines(json.dumps(event(i, 10 * N, rnd), separators=(",", ":")) + "\n" for i in range(start, start + n))
    return d / seg


def test_update_reads_only_what_was_appended_and_rebuilds_when_segments_go(tmp_path: Path) -> None:
    root = tmp_path / "audit"
    seg = _journal(root)
    idx = Index(tmp_path / "i.sqlite", root)
    assert idx.update() == N and idx.update() == 0
    with open(seg, "a") as f:
        f.write('{"torn": ')  # a line still being written is not indexed yet
    assert idx.update() == 0
    seg.write_bytes(seg.read_bytes()[: -len('{"torn": ')])
    _journal(root, 10, N)
    assert idx.update() == 10 and idx.count() == N + 10
    seg.rename(seg.with_name("0000000000000002.jsonl"))  # the segment it had read is gone
    assert idx.update() == N + 10 and idx.count() == N + 10
    (tmp_path / "i.sqlite").unlink()  # deleted under a running console: built again
    for p in tmp_path.glob("i.sqlite-*"):
        p.unlink()
    assert idx.update() == N + 10 and idx.count() == N + 10


QUERIES = [
    {"principal": "app-42"},
    {"principal": "CN=app-7,OU=team-7"},
    {"group": "team-3"},
    {"model": "model-1*"},
    {"decision": "blocked"},
    {"decision": "denied", "model": "internal-finance"},
    {"finding": "EMAIL_ADDRESS"},
    {"screen": "pii", "upstream": "azure"},
    {"api": "ollama", "rule": "policies/policy.csv:7"},
    {"type": "exchange.denied", "since": "2026-01-03", "until": "2026-01-05"},
]


@pytest.mark.parametrize("q", QUERIES, ids=[",".join(q) for q in QUERIES])
def test_a_search_selects_what_a_pack_with_the_same_filters_holds(tmp_path: Path, q: dict[str, str]) -> None:
    root = tmp_path / "audit"
    _journal(root)
    idx = Index(tmp_path / "i.sqlite", root)
    idx.update()
    from guard.audit.export import parse_time

    query = Query(**{k: parse_time(v) if k in ("since", "until") else v for k, v in q.items()})
    rows, total = idx.search(query, 10_000, 0)
    extra = {k: v for k, v in q.items() if k in Filter.EXTRA}
    flt = Filter(q.get("since"), q.get("until"), q.get("principal"), q.get("model"), q.get("decision"), **extra)
    out = io.StringIO()
    export(root, flt, "jsonl", out)
    exported = [json.loads(x) for x in out.getvalue().splitlines()]
    assert total > 0 and total == len(rows) == len(exported)
    assert sorted(r["seq"] for r in rows) == sorted(e["seq"] for e in exported)
