"""Merkle-log audit benchmark (BENCH_ONLY=merkle; ``python -m tests.bench.bench_merkle [--quick]``).

In one run, on one machine:
  * appends: events/s through the journal (``audit.sealer: thread``, durability fsync, 256 concurrent
    appends) with signed checkpoints every 1,000 events;
  * verify: ``verify_dir`` on one chain of N events (1,000,000; 50,000 with --quick / BENCH_QUICK=1) in the
    current format (hashes, links, the tree and its signed checkpoints) and the same N events in the earlier
    format (every event signed; verified one signature at a time through ``cryptography``), one process and
    one per CPU (BENCH_MERKLE_JOBS=1,2 to choose; BENCH_MERKLE_EVENTS=N for another size): events/s and the
    ratio new/old;
  * receipts: time to build a receipt (inclusion proof + checkpoint) for a random leaf from the journal on
    disk (``guard.audit.proofs.receipt``: what ``GET /audit/v1/proof`` runs, HTTP excluded), first call (reads
    the chain), first call of a new reader once closed segments have a leaf cache, and warm (median, p99),
    and ``verify_receipt`` offline;
  * with ``OLD_TREE=/path`` (a checkout of the code that signed every event and checked the signatures with
    its own C batch verifier, its extensions built in place), instead of the earlier format verified here:
    that code, in a subprocess with
    ``PYTHONPATH=OLD_TREE``, writes a journal of about N events through its own ``Journal`` and verifies it
    with its own ``verify_dir`` (every signature), one process and one per CPU; the report gives events/s,
    events per CPU-second and the ratio current/old for each (best of ``BENCH_MERKLE_REPEAT``, default 2).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from guard.audit import event as ev
from guard.audit import layout, logtree
from guard.audit import note as notes
from guard.audit.merkle import CompactRange
from guard.audit.proofs import _READERS, receipt, verify_receipt
from guard.audit.seal import GENESIS, Signer, load_public_keys
from guard.audit.verify import verify_dir
from tests.bench.bench_audit import _event, bench_append

SEGMENT = 64 << 20
EVERY = 1000


def write_chain(root: Path, n: int, signed_events: bool, signer: Signer) -> None:
    """One chain ``w1`` of ``n`` events with a checkpoint event every ``EVERY``: the current format (signed
    checkpoint notes beside the segments) or the earlier one (every line signed, a signed head record)."""
    d = layout.chains_dir(root) / "w1"
    d.mkdir(parents=True, exist_ok=True)
    note_signer = notes.Signer(logtree.origin_for("w1"), signer.private)
    tree = CompactRange()
    prev, last_cp, since, seq = GENESIS, "", 0, 0
    out, size, seg_first = [], 0, 1
    recs: list[str] = []
    f = open(d / layout.segment_name(1), "wb")  # noqa: SIM115
    template = _event(0)

    def seal(e: dict[str, Any]) -> None:
        nonlocal prev, seq, size, f, seg_first
        seq += 1
        if signed_events:
            line, prev = signer.seal_line(e, "w1", seq, prev)
        else:
            line, prev, leaf = signer.seal_event(e, "w1", seq, prev)
            tree.append(leaf)
        out.append(line)
        size += len(line)
        if len(out) >= 4096:
            f.write(b"".join(out))
            out.clear()
            if size >= SEGMENT:
                f.close()
                f = open(d / layout.segment_name(seq + 1), "wb")  # noqa: SIM115
                size = 0

    for i in range(n):
        e = dict(template, request_id=f"req-{i}", id=ev.uuid7())
        seal(e)
        since += 1
        if since == EVERY - 1:
            seal(ev.checkpoint("w1", seq, prev, since, last_cp, "count"))
            last_cp, since = prev, 0
            if not signed_events:
                recs.append(
                    json.dumps(
                        {
                            "size": seq,
                            "note": notes.Checkpoint(note_signer.name, seq, tree.root()).sign([note_signer]),
                            "range": [],
                        }
                    )
                )
    seal(ev.checkpoint("w1", seq, prev, since, last_cp, "close", final=True))
    f.write(b"".join(out))
    f.close()
    if signed_events:
        rec = {"chain": "w1", "seq": seq, "head": prev, "final": True, "time": ev.utc_now(), "key_id": signer.key_id}
        layout.write_atomic(d / "HEAD.json", signer.seal_line(dict(rec), "w1", seq, prev)[0])
    else:
        text = notes.Checkpoint(note_signer.name, seq, tree.root()).sign([note_signer])
        recs.append(json.dumps({"size": seq, "note": text, "range": []}))
        (d / logtree.NOTES).write_text("\n".join(recs) + "\n")
        (d / logtree.LATEST).write_text(text)


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the machine is shared: wall time understates)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _verify(root: Path, keys: dict[str, Any], jobs: int, repeat: int = 1) -> dict[str, Any]:
    """``verify_dir`` over ``root``, the fastest of ``repeat`` runs."""
    best: dict[str, Any] = {}
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        rep = verify_dir(root, keys, jobs=jobs)
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        assert rep.ok and rep.chains[0].status == "intact", rep.to_dict()
        if not best or dt < best["seconds"]:
            best = {
                "events": rep.events,
                "seconds": round(dt, 2),
                "events_per_s": round(rep.events / dt),
                "events_per_cpu_s": round(rep.events / cpu),
            }
    return best


# Runs inside OLD_TREE: its own journal writes the events (every one signed), its own verify_dir checks them.
_OLD_SIDE = """
import json, sys, tempfile
from pathlib import Path
from tests.bench.bench_audit import bench_append, bench_verify
n, jobs, repeat = int(sys.argv[1]), [int(j) for j in sys.argv[2].split(",")], int(sys.argv[3])
with tempfile.TemporaryDirectory(prefix="bench-old-") as tmp:
    root = Path(tmp) / "audit"
    bench_append(root, n)
    segs = list(root.rglob("*.jsonl"))
    out = {"bytes": sum(p.stat().st_size for p in segs)}
    for j in jobs:
        r = bench_verify(root, j, "all", repeat)
        out[str(j)] = {"events": r["events"], "seconds": r["seconds"], "events_per_s": r["verify_events_per_s"],
                       "events_per_cpu_s": r["verify_events_per_cpu_s"]}
print(json.dumps(out))
"""


def verify_old_tree(tree: Path, n: int, jobs_list: list[int], repeat: int) -> dict[str, Any]:
    """The old code's verify on a journal the old code wrote, in a subprocess that imports only ``tree``."""
    n_old = -(-n // 256) * 256  # its bench appends from 256 tasks, the same number each
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-c", _OLD_SIDE, str(n_old), ",".join(map(str, jobs_list)), str(repeat)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"old tree's verify failed: {done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    out["commit"] = head.stdout.strip() or "?"
    return out


def bench_receipts(root: Path, keys: list[Any], samples: int = 200) -> dict[str, Any]:
    log = logtree.origin_for("w1")
    size = sum(1 for seg in layout.segments(root, "w1") for _ in layout.iter_lines(seg))
    _READERS.clear()
    t0 = time.perf_counter()
    receipt(root, log, size // 2)
    cold = time.perf_counter() - t0
    _READERS.clear()  # a new process again: the closed segments' leaves now come from their leaf cache
    t0 = time.perf_counter()
    receipt(root, log, size // 3)
    cached = time.perf_counter() - t0
    rng = random.Random(1)
    warm, check = [], []
    for _ in range(samples):
        i = rng.randrange(size - 1)
        t0 = time.perf_counter()
        rec = receipt(root, log, i)
        warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        verify_receipt(rec, keys)
        check.append(time.perf_counter() - t0)
    warm.sort()
    return {
        "first_ms": round(cold * 1000, 1),
        "first_with_leaf_cache_ms": round(cached * 1000, 1),
        "warm_p50_ms": round(statistics.median(warm) * 1000, 2),
        "warm_p99_ms": round(warm[int(len(warm) * 0.99) - 1] * 1000, 2),
        "verify_receipt_ms": round(statistics.median(check) * 1000, 3),
        "proof_hashes": len(rec["inclusion_proof"]),
    }


def run(quick: bool = False) -> dict[str, Any]:
    quick = quick or os.environ.get("BENCH_QUICK") == "1"
    n = int(os.environ.get("BENCH_MERKLE_EVENTS", 0)) or (50_000 if quick else 1_000_000)
    cpus = len(os.sched_getaffinity(0))
    jobs_list = [int(j) for j in os.environ.get("BENCH_MERKLE_JOBS", "").split(",") if j] or sorted({1, cpus})
    out: dict[str, Any] = {"events": n, "cpus": cpus}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        out["append"] = bench_append(base / "append", 20_000 if quick else 100_000)
        keydir = base / "keys"
        from guard.audit.seal import keygen

        priv, pub, _ = keygen(keydir)
        signer = Signer.from_file(priv)
        keys = load_public_keys([pub])
        t0 = time.perf_counter()
        write_chain(base / "new", n, False, signer)
        out["write_new_s"] = round(time.perf_counter() - t0, 1)
        old_tree = os.environ.get("OLD_TREE")
        earlier = not old_tree  # with OLD_TREE, the old code's own journal and verifier stand for that format
        if earlier:
            t0 = time.perf_counter()
            write_chain(base / "old", n, True, signer)
            out["write_old_s"] = round(time.perf_counter() - t0, 1)
        repeat = int(os.environ.get("BENCH_MERKLE_REPEAT", 0)) or (2 if old_tree else 1)
        if old_tree:
            old_code = verify_old_tree(Path(old_tree), n, jobs_list, repeat)
            out["old_tree"] = {"path": old_tree, "commit": old_code["commit"], "bytes": old_code["bytes"]}
        out["new_bytes"] = sum(p.stat().st_size for p in (base / "new").rglob("*.jsonl"))
        for jobs in jobs_list:
            new = _verify(base / "new", keys, jobs, repeat)
            row = out[f"verify_jobs_{jobs}"] = {"new": new}
            if earlier:
                old = _verify(base / "old", keys, jobs)
                row.update(old=old, new_vs_old=round(new["events_per_s"] / old["events_per_s"], 1))
            if old_tree:
                prev = old_code[str(jobs)]
                row["old_tree"] = prev
                row["new_vs_old_tree"] = round(new["events_per_s"] / prev["events_per_s"], 2)
                row["new_vs_old_tree_per_cpu_s"] = round(new["events_per_cpu_s"] / prev["events_per_cpu_s"], 2)
        out["receipts"] = bench_receipts(base / "new", list(keys.values()))
    return out


if __name__ == "__main__":
    r = run(quick="--quick" in sys.argv)
    print(json.dumps(r, indent=2))
