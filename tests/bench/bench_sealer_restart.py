"""How long Guard refuses requests (503 audit_unavailable) after its sealer process is killed with -9.

`python -m tests.bench.bench_sealer_restart` (or BENCH_ONLY=restart python -m tests.bench.run). Guard runs as
`guard serve` (plain HTTP, identity from a trusted XFCC header, `audit.sealer: process`) in front of the
built-in model server or nginx; clients send chat completions throughout. Each round kills the sealer
(SIGKILL) and measures, from the kill (alternate rounds kill the standby sealer first, so the new sealer
starts cold, as it would without a standby: both in the same run):
  window_ms       until the last 503 was answered (the refusal window clients saw; 0 when none came)
  restarted_ms    until a new sealer process exists (started by the worker's supervising thread)
  refused         how many requests were refused in the round
at low traffic (2 clients, one request each every 100 ms) and moderate traffic (16 clients, back to back),
for durability fsync and batch. The docs promise a new sealer within a second.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import CHAT_BODY, PY, XFCC, free_port, process

QUICK = os.environ.get("BENCH_QUICK") == "1"


def _holds_chain(pid: int) -> bool:
    """The sealer writing the chain (it holds the chain's LOCK file open), not the one in standby."""
    try:
        return any(os.readlink(fd).endswith("/LOCK") for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _sealers(pid: int, active: bool = True) -> list[int]:
    """Sealer processes under ``pid``: the one writing the chain (``active``) or the standby."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:  # it exited meanwhile
            continue
        for task in tasks:
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            for c in kids:
                todo.append(c)
                try:
                    if b"guard.audit.sealer" in Path(f"/proc/{c}/cmdline").read_bytes() and _holds_chain(c) == active:
                        found.append(c)
                except OSError:
                    pass
    return found


def _clients(
    url: str, n: int, pause_s: float, stop: threading.Event, out: list[tuple[float, int]]
) -> list[threading.Thread]:
    headers = {"x-forwarded-client-cert": XFCC, "content-type": "application/json"}

    def one() -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/chat/completions", content=CHAT_BODY, headers=headers)
                    out.append((time.monotonic(), r.status_code))
                except httpx.HTTPError:
                    out.append((time.monotonic(), -1))
                if pause_s:
                    time.sleep(pause_s)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def scenario(d: Path, upstream: str, durability: str, clients: int, pause_s: float, rounds: int) -> dict[str, Any]:
    from tests.bench.run import guard_config

    port, admin = free_port(), free_port()
    cfg = guard_config(d, upstream, False, port, admin, durability=durability, sealer="process", policy="allow-all")
    url = f"http://127.0.0.1:{port}"
    out: list[tuple[float, int]] = []
    stop = threading.Event()
    rows: list[dict[str, float]] = []
    with process(
        [str(Path(PY).parent / "guard"), "serve", "--config", str(cfg)], port, log=d / f"guard-{port}.log"
    ) as p:
        deadline = time.monotonic() + 30
        while not _sealers(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        threads = _clients(url, clients, pause_s, stop, out)
        time.sleep(1.5)  # warm
        for k in range(2 * rounds):
            cold = k % 2 == 1  # alternate rounds: the standby is killed first, so a sealer starts cold
            for _ in range(200):  # the standby started after the last round is up (imports done or not)
                if _sealers(p.pid, active=False):
                    break
                time.sleep(0.01)
            (old,) = _sealers(p.pid)
            if cold:
                for sb in _sealers(p.pid, active=False):
                    os.kill(sb, signal.SIGKILL)
            start = len(out)
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            restarted = None
            while time.monotonic() - t0 < 10:
                if [s for s in _sealers(p.pid) if s != old]:
                    restarted = time.monotonic() - t0
                    break
                time.sleep(0.002)
            time.sleep(2.5)  # let the window close and traffic settle
            seen = out[start:]
            refused = [t for t, s in seen if s == 503 and t >= t0]
            others = sorted({s for _, s in seen} - {200, 503})
            rows.append(
                {
                    "start": "cold" if cold else "standby",
                    "window_ms": round((max(refused) - t0) * 1000, 1) if refused else 0.0,
                    "restarted_ms": round(restarted * 1000, 1) if restarted is not None else -1.0,
                    "refused": len(refused),
                    "answered": sum(1 for _, s in seen if s == 200),
                    "other_statuses": len(others),
                }
            )
        stop.set()
        for t in threads:
            t.join(15)
    out_rows: dict[str, Any] = {
        "durability": durability,
        "clients": clients,
        "pause_ms": pause_s * 1000,
        "rounds": rows,
    }
    for start_kind in ("standby", "cold"):
        sel = [r for r in rows if r["start"] == start_kind]
        out_rows[start_kind] = {
            "window_ms_median": statistics.median(r["window_ms"] for r in sel),
            "window_ms_max": max(r["window_ms"] for r in sel),
            "restarted_ms_median": statistics.median(r["restarted_ms"] for r in sel),
            "refused": [r["refused"] for r in sel],
        }
    out_rows["cold_over_standby"] = round(
        out_rows["cold"]["window_ms_median"] / max(1.0, out_rows["standby"]["window_ms_median"]), 2
    )
    return out_rows


def run(quick: bool = QUICK) -> dict[str, Any]:
    from tests.bench.run import _upstream

    rounds = 1 if quick else 3
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as es:
        d = Path(tmp)
        upstream, label = _upstream(d, es)
        for durability in ("fsync", "batch"):
            for name, clients, pause in (("low", 2, 0.1), ("moderate", 16, 0.0)):
                r = scenario(d, upstream, durability, clients, pause, rounds)
                r["traffic"] = name
                results.append(r)
                for kind in ("standby", "cold"):
                    x = r[kind]
                    print(
                        f"{durability:5} {name:8} clients={clients:2} {kind:7} refusal window median "
                        f"{x['window_ms_median']:7.1f} ms  max {x['window_ms_max']:7.1f} ms  new sealer after "
                        f"{x['restarted_ms_median']:6.1f} ms  refused/round {x['refused']}",
                        file=sys.stderr,
                    )
    return {"upstream": label, "cpus": os.cpu_count(), "scenarios": results}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
