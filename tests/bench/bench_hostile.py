"""Hostile inputs against everyone else: p99 latency of ordinary small chat requests, alone and while other
clients send ~1 MB hostile prompts in a loop, in ONE run (Guard with the shipped filters, plain HTTP with
identity from a trusted XFCC header, the built-in model server upstream).

Phases alternate quiet, hostile, quiet, hostile; each phase runs the same paced client (tests/bench/
paced_client.py in its own process: 4 connections, 25 requests/s each). The figure is p99 under hostile load
over p99 without it (goal: at most 2x). Hostile bodies cycle through the families that made backtracking
patterns super-linear: unterminated PEM headers, dotted token runs, AKIA runs, digit runs with separators,
x@x@ runs, dotted-quad runs, nested-quantifier bait. Each is answered (blocked, passed, or 503 over the
screening budget): the counts by status are reported.

Run: python -m tests.bench.bench_hostile  |  BENCH_ONLY=hostile python -m tests.bench.run
Environment: BENCH_QUICK=1 for shorter phases.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.bench.common import CHAT_BODY, PY, XFCC, free_port, process

MB = 1 << 20


def hostile_bodies(size: int = MB) -> dict[str, bytes]:
    """One chat body per hostile family, each about ``size`` bytes of prompt."""
    unit = {
        "pem_unterminated": "-----BEGIN PRIVATE KEY-----\n",
        "pem_type_words": "-----BEGIN RSA RSA RSA RSA ",
        "pem_pairs": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        "jwt_dots": "eyJa.",
        "jwt_like": "eyJaaaaaaaaa.eyJaaaaaaaa.",
        "akia_run": "AKIA",
        "card_digits": "4111 1111 ",
        "phone_digits": "+1 (0) 12-",
        "dotted_quads": "1.2.3.",
        "at_run": "x@",
        "email_parts": "a.b@c.",
        "bearer_run": "bearer a.",
        "nested_bait": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
    }
    out = {}
    for name, u in unit.items():
        text = u * (size // len(u))
        out[name] = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": text}],
                                "max_tokens": 8}).encode()
    return out


def _guard(d: Path, upstream: str, port: int, admin: int) -> Path:
    from guard.demo.stack import screening_filters
    from tests.bench.run import guard_config

    path = guard_config(d, upstream, False, port, admin, filters="shipped")
    cfg = yaml.safe_load(path.read_text())
    cfg["filters"]["dir"] = str(screening_filters(d / "filters", upstream))
    cfg["limits"] = {"max_body_bytes": 4 * MB}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _paced(url: str, seconds: float) -> dict[str, Any]:
    out = subprocess.run([PY, "-m", "tests.bench.paced_client", url + "/v1/chat/completions", CHAT_BODY,
                          json.dumps({"x-forwarded-client-cert": XFCC}), "4", "25", str(seconds)],
                         capture_output=True, text=True, check=True, timeout=seconds + 60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _hostile_loop(url: str, bodies: dict[str, bytes], stop: threading.Event, statuses: Counter[str],
                  worst: list[float], offset: int) -> None:
    names = sorted(bodies)
    i = offset
    with httpx.Client(timeout=60, headers={"x-forwarded-client-cert": XFCC, "content-type": "application/json"}) as c:
        while not stop.is_set():
            name = names[i % len(names)]
            i += 1
            t = time.perf_counter()
            try:
                r = c.post(url + "/v1/chat/completions", content=bodies[name])
                code = r.json().get("error", {}).get("code", "") if r.status_code != 200 else ""
                statuses[f"{r.status_code} {code}".strip()] += 1
            except httpx.HTTPError as e:
                statuses[type(e).__name__] += 1
            worst[0] = max(worst[0], time.perf_counter() - t)


def _warm_pool(url: str, log: Path, timeout: float = 40.0) -> None:
    """One large prompt starts the PII worker processes; wait until Guard logs that they are ready."""
    body = json.dumps({"model": "bench-model", "max_tokens": 8, "messages": [
        {"role": "user", "content": "Plain words for the warm-up. " * 2000}]}).encode()
    httpx.post(url + "/v1/chat/completions", content=body, timeout=60,
               headers={"x-forwarded-client-cert": XFCC, "content-type": "application/json"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and b"screening processes ready" not in log.read_bytes():
        time.sleep(0.5)


def run(quick: bool = False) -> dict[str, Any]:
    phase = 6.0 if quick else 10.0
    hostile_clients = 2
    bodies = hostile_bodies()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as es:
        d = Path(tmp)
        up_port, port, admin = free_port(), free_port(), free_port()
        es.enter_context(process([PY, "-m", "uvicorn", "guard.demo.modelserver:ModelServer", "--factory", "--port",
                                  str(up_port), "--log-level", "warning", "--no-access-log"], up_port))
        upstream = f"http://127.0.0.1:{up_port}"
        cfg = _guard(d, upstream, port, admin)
        es.enter_context(process([PY, "-m", "guard.cli", "serve", "--config", str(cfg)], port, log=d / "guard.log",
                                 wait=60))
        url = f"http://127.0.0.1:{port}"
        _paced(url, 2.0)  # warm-up: screens loaded, connections pooled
        _warm_pool(url, d / "guard.log")
        quiet: list[dict[str, Any]] = []
        loud: list[dict[str, Any]] = []
        statuses: Counter[str] = Counter()
        worst = [0.0]
        for k in range(2):
            quiet.append(_paced(url, phase))
            stop = threading.Event()
            threads = [threading.Thread(target=_hostile_loop, args=(url, bodies, stop, statuses, worst, j * 5 + k),
                                        daemon=True) for j in range(hostile_clients)]
            for t in threads:
                t.start()
            time.sleep(0.5)  # the hostile load is running before the measured phase starts
            loud.append(_paced(url, phase))
            stop.set()
            for t in threads:
                t.join(90)
    p99_quiet = max(q["p99_ms"] for q in quiet)
    p99_loud = max(q["p99_ms"] for q in loud)
    return {"phase_s": phase, "quiet": quiet, "hostile": loud, "hostile_clients": hostile_clients,
            "hostile_body_bytes": MB, "hostile_statuses": dict(statuses), "hostile_worst_s": round(worst[0], 3),
            "p99_quiet_ms": p99_quiet, "p99_hostile_ms": p99_loud, "p99_ratio": round(p99_loud / p99_quiet, 2)}


def row(r: dict[str, Any]) -> str:
    """The markdown table row for docs/benchmarks.md."""
    p50q = max(q["p50_ms"] for q in r["quiet"])
    p50h = max(q["p50_ms"] for q in r["hostile"])
    return (f"| hostile inputs (2 clients, 1 MB bodies, 13 families) | p50 {p50q:.1f} -> {p50h:.1f} ms | "
            f"p99 {r['p99_quiet_ms']:.1f} -> {r['p99_hostile_ms']:.1f} ms | **{r['p99_ratio']}x** p99 (goal <= 2x) |")


def main() -> int:
    r = run(quick=os.environ.get("BENCH_QUICK") == "1")
    print(json.dumps(r, indent=2))
    print("| scenario | ordinary p50 quiet -> hostile | ordinary p99 quiet -> hostile | ratio |")
    print("|---|---|---|---|")
    print(row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
