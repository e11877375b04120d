"""Audit benchmarks: journal appends (group-commit fsync, one core), forwarding to a local HEC receiver,
and verification. ``python -m tests.bench.bench_audit [--quick] [--verify-only | --append-only]`` prints a table and
JSON.

Appends are measured for both journals: the in-process one (``audit.sealer: thread``, writer and event loop
on one core) and the default sealer process pinned to one core (the worker's loop on the other). The paced
latency scenario is what the journal adds to a request at 16 connections.

Verification runs on a journal of its own (200,000 events; 20,000 with --quick) with one process and with
one per CPU, and through the ``guard audit verify`` command line (the Merkle-log comparison with the earlier
per-event signed format is tests/bench/bench_merkle.py).

Targets (issue 6): append >= 20,000 events/s, forwarder >= 20,000 events/s, verify >= 50,000 events/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from guard.audit import event as ev
from guard.audit.forwarder import Forwarder
from guard.audit.journal import Journal
from guard.audit.seal import load_public_keys
from guard.audit.settings import AuditSettings, SinkSettings
from guard.audit.verify import verify_dir
from tests.bench.common import proc_cpu

TARGETS = {"append_events_per_s": 20_000, "forward_events_per_s": 20_000, "verify_events_per_s": 50_000}
_RECEIVER = """
import sys, time
from tests.audit.receivers import Receiver
with Receiver(token="bench", parse=False) as rx:
    print(rx.port, flush=True)
    sys.stdin.read()
"""


def _event(i: int) -> dict[str, Any]:
    return ev.new_event(
        "exchange.completed",
        request_id=f"req-{i}",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        api="openai",
        operation="chat",
        model="gpt-4o",
        upstream="local",
        client_ip="10.1.2.3",
        stream=False,
        principal={
            "subject": "CN=app-a,OU=team-x",
            "cn": "app-a",
            "ou": ["team-x"],
            "spiffe_id": "",
            "fingerprint": "ab" * 32,
        },
        decisions={
            "access": {"effect": "allow", "rule": "p, team-x, gpt-*, chat", "policy_version": "v1"},
            "content": {"effect": "allow", "rule": "c1", "policy_version": "v1"},
        },
        screens=[
            {
                "name": "pii",
                "direction": "prompt",
                "status": "ok",
                "action": "allow",
                "blocked": False,
                "entities": {"EMAIL_ADDRESS": 1},
                "latency_ms": 2.125,
            },
            {
                "name": "safety",
                "direction": "response",
                "status": "ok",
                "action": "allow",
                "blocked": False,
                "score": 0.0125,
                "latency_ms": 9.5,
            },
        ],
        usage={"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
        outcome={"status": 200, "finish_reason": "stop", "bytes": 812},
        latency_ms={"access": 0.081, "screens": 11.625, "upstream": 42.25, "total": 55.5},
        content={"capture": "hash", "key_id": "0123456789abcdef", "prompt_hmac": "cd" * 32, "answer_hmac": "ef" * 32},
    )


def _append_all(j: Any, events: list[dict[str, Any]], concurrency: int) -> float:
    """Seconds to append ``events`` from ``concurrency`` asyncio tasks (each its own slice, in order)."""
    per = len(events) // concurrency

    async def run() -> float:
        async def worker(k: int) -> None:
            for e in events[k * per : (k + 1) * per]:
                await j.append(e)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return time.perf_counter() - t0

    return asyncio.run(run())


def bench_append(root: Path, n: int, concurrency: int = 256) -> dict[str, Any]:
    """Appends from ``concurrency`` asyncio tasks; events are pre-built, so this measures the journal."""
    j = Journal(AuditSettings(dir=root), "bench")
    events = [_event(i) for i in range(n)]
    per = n // concurrency
    c0 = _cpu()
    dt = _append_all(j, events, concurrency)
    cpu = _cpu() - c0
    j.close()
    from guard import telemetry as tm

    fsyncs = tm.AUDIT_FSYNC_SECONDS._sum.get(), sum(b.get() for b in tm.AUDIT_FSYNC_SECONDS._buckets)
    return {
        "events": per * concurrency,
        "seconds": round(dt, 3),
        "append_events_per_s": round(per * concurrency / dt),
        "cpu_seconds": round(cpu, 3),
        "append_events_per_cpu_s": round(per * concurrency / cpu),
        "fsyncs": int(fsyncs[1]),
        "events_per_fsync": round(per * concurrency / max(1, fsyncs[1]), 1),
    }


def bench_latency(root: Path, durability: str, n: int = 2000, concurrency: int = 16) -> dict[str, Any]:
    """Per-append latency (p50/p99 ms) at ``concurrency`` concurrent requests, as the request path sees it."""
    j = Journal(AuditSettings(dir=root, durability=durability), f"lat-{durability}")  # type: ignore[arg-type]
    lat: list[float] = []

    async def run() -> None:
        async def worker(k: int) -> None:
            for i in range(n // concurrency):
                e = _event(i)
                t0 = time.perf_counter()
                await j.append(e)
                lat.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))

    asyncio.run(run())
    j.close()
    lat.sort()
    return {
        "durability": durability,
        "concurrency": concurrency,
        "p50_ms": round(lat[len(lat) // 2], 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 3),
    }


def bench_append_process(root: Path, n: int, concurrency: int = 256, durability: str = "fsync") -> dict[str, Any]:
    """The default journal (audit.sealer: process): appends from ``concurrency`` tasks on one core, the sealer
    process (sealing, writing, group-commit fsync) pinned to the other: events/s is the sealer's, on one core."""
    from guard.audit.sealer import ProcessJournal

    cores = sorted(os.sched_getaffinity(0))
    j = ProcessJournal(AuditSettings(dir=root, durability=durability), "bench-process")  # type: ignore[arg-type]
    pid = j._proc.pid
    if len(cores) > 1:
        os.sched_setaffinity(pid, {cores[-1]})
    events = [_event(i) for i in range(n)]
    per = n // concurrency
    s0, c0 = proc_cpu(pid), _cpu()
    dt = _append_all(j, events, concurrency)
    sealer, worker = proc_cpu(pid) - s0, _cpu() - c0
    j.close()
    done = per * concurrency
    return {
        "events": done,
        "durability": durability,
        "seconds": round(dt, 3),
        "append_events_per_s": round(done / dt),
        "sealer_cpu_us_per_event": round(sealer / done * 1e6, 1),
        "worker_cpu_us_per_event": round(worker / done * 1e6, 1),
    }


def bench_paced_latency(
    root: Path, sealer: str, durability: str, clients: int = 16, pause_ms: float = 4.0, seconds: float = 4.0
) -> dict[str, Any]:
    """What the journal adds to a request at 16 connections: 16 clients, each appending one event and then
    pausing a random time (exponential, mean ``pause_ms``: about the event rate the proxy reaches at 16
    connections, clients not in step), p50/p99 append latency."""
    import random

    rnd = random.Random(7)
    from guard.audit.sealer import ProcessJournal

    settings = AuditSettings(dir=root, durability=durability, sealer=sealer)  # type: ignore[arg-type]
    j = (
        ProcessJournal(settings, f"paced-{sealer}-{durability}")
        if sealer == "process"
        else Journal(settings, f"paced-{sealer}-{durability}")
    )
    lat: list[float] = []

    async def run() -> None:
        end = time.perf_counter() + seconds

        async def client(k: int) -> None:
            i = 0
            while time.perf_counter() < end:
                e = _event(i)
                t0 = time.perf_counter()
                await j.append(e)
                lat.append((time.perf_counter() - t0) * 1000)
                i += 1
                await asyncio.sleep(rnd.expovariate(1000 / pause_ms))

        await asyncio.gather(*(client(k) for k in range(clients)))

    asyncio.run(run())
    j.close()
    lat.sort()
    return {
        "sealer": sealer,
        "durability": durability,
        "clients": clients,
        "events_per_s": round(len(lat) / seconds),
        "p50_ms": round(lat[len(lat) // 2], 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 3),
    }


def bench_forward(root: Path, n_expected: int) -> dict[str, Any]:
    """Deliver the whole journal to a HEC receiver running in another process."""
    rx = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert rx.stdout
        port = int(rx.stdout.readline())
        os.environ["GUARD_BENCH_HEC_TOKEN"] = "bench"
        s = AuditSettings(
            dir=root,
            sinks=[
                SinkSettings(
                    name="hec",
                    type="splunk_hec",
                    url=f"http://127.0.0.1:{port}",
                    token_env="GUARD_BENCH_HEC_TOKEN",
                    batch_size=1000,
                )
            ],
        )
        fwd = Forwarder(s, poll_s=0.01)
        t0, c0 = time.perf_counter(), _cpu()
        fwd.start()
        w = fwd.workers[0]
        while w.delivered < n_expected and time.perf_counter() - t0 < 120:
            time.sleep(0.005)
        dt, cpu = time.perf_counter() - t0, _cpu() - c0  # the receiver's CPU is not counted (not reaped yet)
        fwd.stop()
        return {
            "events": w.delivered,
            "seconds": round(dt, 3),
            "forward_events_per_s": round(w.delivered / dt),
            "cpu_seconds": round(cpu, 3),
            "forward_events_per_cpu_s": round(w.delivered / cpu),
        }
    finally:
        rx.kill()
        rx.wait()


def bench_verify(root: Path, jobs: int, signatures: str = "all", repeat: int = 2) -> dict[str, Any]:
    """``verify_dir`` over the whole journal, best of ``repeat`` runs (the machine is shared)."""
    keys = load_public_keys([root / "keys"])
    best: dict[str, Any] = {}
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        rep = verify_dir(root, keys, jobs=jobs, signatures=signatures)
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        assert rep.ok
        if not best or dt < best["seconds"]:
            best = {
                "events": rep.events,
                "jobs": jobs,
                "signatures": signatures,
                "seconds": round(dt, 3),
                "verify_events_per_s": round(rep.events / dt),
                "cpu_seconds": round(cpu, 3),
                "verify_events_per_cpu_s": round(rep.events / cpu),
            }
    return best


def bench_verify_cli(root: Path, signatures: str = "checkpoints") -> dict[str, Any]:
    """``guard audit verify DIR --trust-local-keys --signatures S --json`` as an officer runs it (default jobs:
    all CPUs), interpreter start and key loading included."""
    guard = str(Path(sys.executable).with_name("guard"))
    cmd = [guard, "audit", "verify", str(root), "--trust-local-keys", "--signatures", signatures, "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    events = json.loads(p.stdout)["events"]
    return {
        "events": events,
        "signatures": signatures,
        "seconds": round(dt, 3),
        "verify_events_per_s": round(events / dt),
        "command": "guard audit verify DIR --trust-local-keys --signatures " + signatures,
    }


def verify_scenarios(root: Path, cpus: int) -> dict[str, Any]:
    """Both signature modes (they differ only for events of the earlier format), one process (pinned to one
    core) and one per CPU, and the command line."""
    out: dict[str, Any] = {}
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        out["verify_1core"] = bench_verify(root, 1)
        out["verify_checkpoints_1core"] = bench_verify(root, 1, "checkpoints", repeat=3)
    finally:
        os.sched_setaffinity(0, allowed)
    out["verify_all_cores"] = bench_verify(root, cpus)
    out["verify_checkpoints_all_cores"] = bench_verify(root, cpus, "checkpoints", repeat=3)
    out["verify_cli"] = bench_verify_cli(root, "all")
    out["verify_cli_checkpoints"] = bench_verify_cli(root)
    return out


def _cpu() -> float:
    """CPU seconds of this process and its reaped children: on a shared machine, wall time understates."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run(quick: bool = False, verify_only: bool = False, append_only: bool = False) -> dict[str, Any]:
    n = 20_000 if quick else 100_000
    n_verify = 20_000 if quick else 200_000
    cpus = len(os.sched_getaffinity(0))
    out: dict[str, Any] = {"cpus": cpus, "cpu": _cpu_name()}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        if not verify_only:
            root = Path(tmp) / "audit"
            allowed = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {min(allowed)})  # one core for the writer and the event loop together
            try:
                out["append"] = bench_append(root, n)
            finally:
                os.sched_setaffinity(0, allowed)
            total = out["append"]["events"] + 3
            out["append_process"] = bench_append_process(Path(tmp) / "process", n)
            out["forward"] = bench_forward(root, total)
            out["latency"] = [bench_latency(Path(tmp) / "lat", d) for d in ("fsync", "batch")]
            out["paced_latency"] = [
                bench_paced_latency(Path(tmp) / "paced", s, d)
                for s in ("process", "thread")
                for d in ("fsync", "batch")
            ]
            out["fsync_ms"] = _fsync_ms(Path(tmp))
        if append_only:
            out["targets"] = TARGETS
            return out
        vroot = Path(tmp) / "verify"
        bench_append(vroot, n_verify + 256)  # a journal for verification only (after the append figures are taken)
        out.update(verify_scenarios(vroot, cpus))
        segs = list(vroot.rglob("*.jsonl"))
        out["verify_journal"] = {
            "events": out["verify_1core"]["events"],
            "chains": 1,
            "segments": len(segs),
            "bytes": sum(p.stat().st_size for p in segs),
        }
    out["targets"] = TARGETS
    return out


def _fsync_ms(d: Path, n: int = 200) -> float:
    """What one fdatasync of a small append costs on this disk (the floor of durability: fsync)."""
    fd = os.open(d / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    t0 = time.perf_counter()
    for _ in range(n):
        os.write(fd, b"x" * 900 + b"\n")
        os.fdatasync(fd)
    os.close(fd)
    return round((time.perf_counter() - t0) / n * 1000, 3)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _table(r: dict[str, Any]) -> str:
    t = TARGETS["verify_events_per_s"]
    rows: list[tuple[str, int, Any, int]] = []
    if "append" in r:
        rows += [
            (
                "journal append, group-commit fsync, 1 core",
                r["append"]["append_events_per_s"],
                r["append"]["append_events_per_cpu_s"],
                TARGETS["append_events_per_s"],
            ),
            (
                "forwarder -> local HEC receiver",
                r["forward"]["forward_events_per_s"],
                r["forward"]["forward_events_per_cpu_s"],
                TARGETS["forward_events_per_s"],
            ),
        ]
    if "append_process" in r:
        a = r["append_process"]
        rows.append(
            (
                "journal append, sealer process on 1 core, fsync",
                a["append_events_per_s"],
                round(1e6 / a["sealer_cpu_us_per_event"]) if a["sealer_cpu_us_per_event"] else "",
                TARGETS["append_events_per_s"],
            )
        )
    for key, name in (
        ()
        if "verify_1core" not in r
        else (
            ("verify_1core", "verify --signatures all, --jobs 1 (1 core)"),
            ("verify_1core_one_by_one", "verify --signatures all, --jobs 1, one by one"),
            ("verify_1core_libsodium", "verify --signatures all, --jobs 1, libsodium only"),
            ("verify_all_cores", f"verify --signatures all, --jobs {r['cpus']}"),
            ("verify_checkpoints_1core", "verify --signatures checkpoints, --jobs 1 (1 core)"),
            ("verify_checkpoints_all_cores", f"verify --signatures checkpoints, --jobs {r['cpus']}"),
        )
    ):
        rows.append((name, r[key]["verify_events_per_s"], r[key]["verify_events_per_cpu_s"], t))
    lines = []
    if "verify_cli_checkpoints" in r:
        rows.append(
            ("`guard audit verify` CLI (signatures all), default jobs", r["verify_cli"]["verify_events_per_s"], "", t)
        )
        rows.append(
            (
                "`guard audit verify` CLI, checkpoints, default jobs",
                r["verify_cli_checkpoints"]["verify_events_per_s"],
                "",
                t,
            )
        )
        lines.append(
            f"verify journal: {r['verify_journal']['events']:,} events, "
            f"{r['verify_journal']['bytes'] / 2**20:.0f} MiB, {r['verify_journal']['segments']} segments"
        )
    lines += [
        f"{r['cpus']} CPUs ({r['cpu']})",
        f"{'scenario':<54}{'events/s':>12}{'per CPU-s':>12}{'target':>10}",
        "-" * 88,
    ]
    lines += [f"{name:<54}{v:>12,}{c if c == '' else f'{c:,}':>12}{tg:>10,}" for name, v, c, tg in rows]
    for x in r.get("latency", []):
        lines.append(
            f"append latency, durability={x['durability']}, {x['concurrency']} concurrent: "
            f"p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms"
        )
    for x in r.get("paced_latency", []):
        lines.append(
            f"append latency at ~{x['events_per_s']:,} events/s from {x['clients']} clients, sealer={x['sealer']}, "
            f"durability={x['durability']}: p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms"
        )
    if "signature_check" in r:
        x = r["signature_check"]
        lines.append(
            f"one signature check, 1 core: in batches {x['batch_us']} us, one by one (ed25519-zebra) "
            f"{x['zebra_us']} us, libsodium {x['libsodium_us']} us; batches {x['batch_vs_zebra']}x zebra, "
            f"{x['batch_vs_libsodium']}x libsodium; zebra {x['zebra_vs_libsodium']}x libsodium "
            f"(medians of {x['rounds']} interleaved rounds)"
        )
    if "fsync_ms" in r:
        lines.append(f"one fdatasync on this disk: {r['fsync_ms']} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    result = run(
        quick="--quick" in sys.argv, verify_only="--verify-only" in sys.argv, append_only="--append-only" in sys.argv
    )
    print(_table(result))
    print(json.dumps(result, indent=2))
