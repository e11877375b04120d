"""Quota overhead per request, in-process (no uvicorn, no load generator): Pipeline driven with an ASGI
scope against a real upstream (nginx with a fixed completion, else the built-in model server), N sequential
requests per variant, alternating rounds, median kept:
  none    no ``quotas:`` section
  memory  a tier with requests, tokens per minute and per day and a concurrency limit, memory backend
  keeper  the same, memory backend as several workers use it: the counters in a keeper process asked over
          a unix socket (guard.quota.local); its CPU is reported apart (``keeper_proc_cpu_us``)
  redis   the same tier in a redis-server on loopback (skipped when redis-server is missing)
Reports CPU per request of the Guard process and wall time per request (Redis: one round trip to admit,
one to settle after the answer), and both as ratios to ``none`` measured in the same run. The audit recorder
writes nothing here (its cost is bench_pipeline_cpu's), so the ratios are over a smaller base than a real
deployment's: an upper bound on the relative cost. ``memory_calls_us`` times the memory backend's calls for
one request alone (admit, account, headers, settle; less the same loop's Exchange construction; the least
of three timings), as a share of the least CPU per request without quotas of the rounds;
``keeper_calls_us`` the same calls against the keeper (this process's CPU, round trip included).
Run: python -m tests.bench.bench_quota [--quick]   or   BENCH_ONLY=quota python -m tests.bench.run
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.bench.common import free_port, wait_port
from tests.bench.guard_noaudit import NullRecorder
from tests.bench.inproc import ChatRequests, fixed_upstream

TIER = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12, "tokens_per_day": 10**12, "concurrent": 10_000}


def _proc_cpu_us(pid: int | None) -> float:
    """CPU time (user + system) a process has used, in microseconds."""
    if pid is None:
        return 0.0
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") * 1e6


async def _measure(cfg_path: Path, n: int, keeper: tuple[int, str] | None = None) -> tuple[float, float, float]:
    from guard.config import load_config
    from guard.pipeline import Pipeline
    from guard.quota import local
    from guard.runtime import Runtime

    local.SOCKET = keeper[1] if keeper else None  # as a worker forked by the supervisor sees it
    rt = Runtime(load_config(cfg_path), recorder=NullRecorder())
    rt.load()
    svc = rt.services()
    pipe = Pipeline(svc)
    requests = ChatRequests()
    await requests.run(pipe, 200)
    assert requests.statuses == {200}, f"warm-up answers {requests.statuses}"
    kpid = keeper[0] if keeper else None
    w, k = time.perf_counter(), _proc_cpu_us(kpid)
    cpu_us = await requests.cpu_us(pipe, n)
    wall_us = (time.perf_counter() - w) / n * 1e6
    keeper_us = (_proc_cpu_us(kpid) - k) / n
    await svc.upstreams.close()
    if svc.quotas is not None:
        await svc.quotas.close()
    local.SOCKET = None
    return cpu_us, wall_us, keeper_us


def quota_calls_us(n: int = 20_000, keeper: str | None = None) -> float:
    """The memory backend's calls for one request (admit, account, headers, settle), timed alone: the cost
    of quotas without the noise of a difference between two whole-request measurements. ``keeper``: the
    socket of a keeper process to ask instead (the backend of several workers)."""
    import asyncio

    from guard.exchange import Exchange
    from guard.identity import Principal
    from guard.quota import hook
    from guard.quota.core import Quotas
    from guard.quota.local import LocalBackend
    from guard.quota.settings import QuotaSettings
    from guard.screens.base import Segment

    q = Quotas(QuotaSettings(tiers={"default": TIER}), backend=LocalBackend(keeper, 1.0) if keeper else None)
    prompt = [Segment("Say hello to the benchmark, please.", "user", "content", ("messages", 0, "content"))]
    who = Principal(subject="CN=bench-app,OU=apps,O=Example", cn="bench-app")
    upstream = [(b"content-type", b"application/json")]

    async def go() -> float:
        t = time.process_time()
        for _ in range(n):
            ex = Exchange(
                request_id="r",
                api="openai",
                operation="chat",
                model="m",
                path="/v1/chat/completions",
                body={"model": "m", "messages": []},
                principal=who,
            )
            await hook.admit(q, ex, prompt)
            hook.merge_headers(ex, upstream)
            outcome = {"status": 200, "usage": {"input_tokens": 8, "output_tokens": 3}}
            ex.outcome = outcome
            hook.account(ex, outcome)
            await hook.finish(q, ex)
        took = time.process_time() - t
        t = time.process_time()  # the same loop without the quota calls: what the Exchange itself costs
        for _ in range(n):
            ex = Exchange(
                request_id="r",
                api="openai",
                operation="chat",
                model="m",
                path="/v1/chat/completions",
                body={"model": "m", "messages": []},
                principal=who,
            )
            ex.outcome = {"status": 200, "usage": {"input_tokens": 8, "output_tokens": 3}}
        took -= time.process_time() - t
        await q.close()
        return took / n * 1e6

    return asyncio.run(go())


def _variant(base: Path, name: str, redis_url: str | None) -> Path:
    cfg = yaml.safe_load(base.read_text())
    cfg["policy"]["watch"] = False
    if name in ("memory", "keeper"):
        cfg["quotas"] = {"tiers": {"default": TIER}}
    elif name == "redis":
        cfg["quotas"] = {"backend": redis_url, "tiers": {"default": TIER}}
    p = base.with_name(f"quota-{name}.yaml")
    p.write_text(yaml.safe_dump(cfg))
    return p


def run(quick: bool = False) -> dict[str, Any]:
    import uvloop

    from guard.quota import local
    from tests.bench.run import guard_config

    n = 500 if quick else 1500
    procs: list[subprocess.Popen] = []
    keeper = local.start_keeper()
    local.wait_ready(keeper[1])
    with tempfile.TemporaryDirectory() as tmp, fixed_upstream(Path(tmp)) as url:
        d = Path(tmp)
        redis_url = None
        rs = shutil.which("redis-server") or "/usr/bin/redis-server"
        if Path(rs).exists():
            rport = free_port()
            procs.append(
                subprocess.Popen(
                    [rs, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
                    stdout=subprocess.DEVNULL,
                )
            )
            wait_port(rport)
            redis_url = f"redis://127.0.0.1:{rport}/0"
        try:
            base = guard_config(d, url, False, free_port(), free_port())
            variants = ["none", "memory", "keeper"] + (["redis"] if redis_url else [])
            cfgs = {v: _variant(base, v, redis_url) for v in variants}
            cpu: dict[str, list[float]] = {}
            wall: dict[str, list[float]] = {}
            kcpu: list[float] = []
            for _round in range(3):
                for v in variants:
                    c, w, kc = uvloop.run(_measure(cfgs[v], n, keeper if v == "keeper" else None))
                    cpu.setdefault(v, []).append(c)
                    wall.setdefault(v, []).append(w)
                    if v == "keeper":
                        kcpu.append(kc)
                    print(f"  {v:7s} {c:7.1f} us CPU, {w:7.1f} us wall per request", file=sys.stderr)
            keeper_calls = quota_calls_us(keeper=keeper[1])
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
            import os
            import signal

            os.kill(keeper[0], signal.SIGTERM)
            os.waitpid(keeper[0], 0)
    out: dict[str, Any] = {"requests_per_variant": n, "rounds": 3}
    for v, xs in cpu.items():
        out[f"{v}_cpu_us"] = round(statistics.median(xs), 1)
        out[f"{v}_wall_us"] = round(statistics.median(wall[v]), 1)
    for v in cpu:
        if v != "none":
            out[f"{v}_cpu_ratio"] = round(out[f"{v}_cpu_us"] / out["none_cpu_us"], 3)
            out[f"{v}_wall_ratio"] = round(out[f"{v}_wall_us"] / out["none_wall_us"], 3)
            out[f"{v}_added_wall_us"] = round(out[f"{v}_wall_us"] - out["none_wall_us"], 1)
    # the share: the least of three timings of the calls over the least request CPU of the rounds (on a busy
    # machine, medians of a few rounds move by tens of percent; the least of each is the cost undisturbed)
    out["memory_calls_us"] = round(min(quota_calls_us() for _ in range(3)), 1)
    out["none_cpu_min_us"] = round(min(cpu["none"]), 1)
    out["memory_calls_pct_of_none"] = round(out["memory_calls_us"] / out["none_cpu_min_us"] * 100, 1)
    out["keeper_proc_cpu_us"] = round(statistics.median(kcpu), 1)
    out["keeper_calls_us"] = round(keeper_calls, 1)
    out["keeper_calls_pct_of_none"] = round(keeper_calls / out["none_cpu_min_us"] * 100, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
