"""CPU per request of Guard's pipeline in-process (no uvicorn, no load generator): where the time goes.

Drives Pipeline with an ASGI scope against a real upstream (nginx with a fixed completion, else the
built-in model server), N sequential requests per variant (five alternating rounds, the median kept: the box
is noisy), and reports the worker process's CPU per request (its threads included) and, separately, the CPU
of the audit sealer process beside it (``sealer_us``; it runs on another core):
  full        shipped policy, signed journal (durability batch), metrics on
  no-metrics  as full, request-path metrics off
  no-journal  as full, audit recorder that writes nothing
  bare        no journal and an allow-all policy
Run: python -m tests.bench.bench_pipeline_cpu [N]
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.common import free_port, proc_cpu
from tests.bench.guard_noaudit import NullRecorder
from tests.bench.inproc import ChatRequests, fixed_upstream


async def _measure(variant: str, cfg_path: Path, n: int) -> tuple[float, float]:
    from guard import gc_tuning, telemetry
    from guard.config import load_config
    from guard.doubles import AllowAll
    from guard.pipeline import Pipeline
    from guard.runtime import Runtime

    telemetry.configure(variant != "no-metrics")
    rt = Runtime(
        load_config(cfg_path),
        recorder=NullRecorder() if variant in ("no-journal", "bare") else None,
        policy=AllowAll() if variant == "bare" else None,
    )
    rt.load()
    svc = rt.services()
    pipe = Pipeline(svc)
    requests = ChatRequests()
    await requests.run(pipe, 200)
    gc_tuning.tune()  # as `guard serve` runs (guard/gc_tuning.py)
    proc = getattr(rt.journal, "_proc", None)
    s0 = proc_cpu(proc.pid) if proc else 0.0
    us = await requests.cpu_us(pipe, n)
    sealer = ((proc_cpu(proc.pid) - s0) / n * 1e6) if proc else 0.0
    await svc.upstreams.close()
    if rt.journal is not None:
        rt.journal.close()
    gc.unfreeze()  # the next variant freezes its own start-up objects
    telemetry.configure(True)
    return us, sealer


def metric_calls_us(n: int = 200_000) -> float:
    """The request path's metric calls for one proxied request (7 stage histograms, the request histogram,
    the request counter, 2 token counters), timed alone: the cost of metrics without the noise of a
    difference between two whole-request measurements."""
    import timeit

    from guard import telemetry as t

    stages = ("identity", "parse", "route", "policy", "audit", "upstream_first_byte", "upstream_total")

    def one() -> None:
        for s in stages:
            t.child(t.STAGE_SECONDS, s).observe(0.0012)
        t.child(t.REQUEST_SECONDS, "openai", "chat").observe(0.003)
        t.child(t.REQUESTS, "openai", "chat", "bench-model", "allow", "200").inc()
        t.child(t.TOKENS, "bench-model", "input").inc(8)
        t.child(t.TOKENS, "bench-model", "output").inc(3)

    return timeit.timeit(one, number=n) / n * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    import uvloop

    from tests.bench.run import guard_config

    n = 1000 if quick else 3000
    with tempfile.TemporaryDirectory() as tmp, fixed_upstream(Path(tmp)) as url:
        cfg = guard_config(Path(tmp), url, False, free_port(), free_port())
        seen: dict[str, list[float]] = {}
        sealer: list[float] = []
        for _round in range(3 if quick else 5):  # alternate the variants, keep each one's median
            for variant in ("full", "no-metrics", "no-journal", "bare"):
                us, s_us = uvloop.run(_measure(variant, cfg, n))
                seen.setdefault(variant, []).append(us)
                if variant == "full":
                    sealer.append(s_us)
                print(
                    f"  {variant:11s} {us:7.1f} us CPU per request" + (f" (+ sealer {s_us:.1f})" if s_us else ""),
                    file=sys.stderr,
                )
    out: dict[str, Any] = {v: round(statistics.median(xs), 1) for v, xs in seen.items()}
    out["sealer_us"] = round(statistics.median(sealer), 1)
    out["journal_us"] = round(out["full"] - out["no-journal"], 1)
    out["metrics_us"] = round(out["full"] - out["no-metrics"], 1)
    out["policy_us"] = round(out["no-journal"] - out["bare"], 1)
    out["metric_calls_us"] = round(metric_calls_us(), 2)
    out["metric_calls_pct_of_full"] = round(out["metric_calls_us"] / out["full"] * 100, 2)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
