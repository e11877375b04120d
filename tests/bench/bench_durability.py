"""What the audit record's durability adds to each request, per ``audit.start_record`` mode, in one run.

`python -m tests.bench.bench_durability` (or BENCH_ONLY=durability python -m tests.bench.run). Guard runs as
`guard serve` (plain HTTP, identity from a trusted XFCC header, shipped policy, no screens) in front of the
built-in model server, which takes ``model_ms`` before it answers (the prompt carries its
``[[first_byte_ms=N]]`` directive: a model that works, as every real one does). One client, one request at a
time, for these variants started in turn in every round (tests/bench/run.py ``alternate`` order):
  unaudited        the same Guard recording nothing (tests/bench/guard_noaudit.py)
  before_forward   durability fsync; exchange.started durable before the prompt goes upstream
  overlap          durability fsync; the fsync runs while the model works, the answer waits for it (default)
  batch            durability batch: nothing waits for an fsync
Added latency: the median over rounds of each round's p50 minus the unaudited p50 of that round.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.bench.common import PY, XFCC, free_port, paced, process

QUICK = os.environ.get("BENCH_QUICK") == "1"
VARIANTS = (
    ("unaudited", {"unaudited": True}),
    ("before_forward", {"durability": "fsync", "start_record": "before_forward"}),
    ("overlap", {"durability": "fsync", "start_record": "overlap"}),
    ("batch", {"durability": "batch"}),
)


def _body(model_ms: int) -> str:
    msg = f"Say hello to the benchmark. [[first_byte_ms={model_ms}]]" if model_ms else "Say hello to the benchmark."
    return json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": msg}], "max_tokens": 16})


@contextmanager
def _guard(d: Path, up: str, kw: dict[str, Any]) -> Iterator[tuple[str, dict[str, str]]]:
    """`guard serve` over plain HTTP (identity from a trusted XFCC header), as tests/bench/run.py starts it,
    given longer to start (a loaded box)."""
    from tests.bench.run import guard_config

    kw = dict(kw)
    gport, admin = free_port(), free_port()
    unaudited = kw.pop("unaudited", False)
    cfg = guard_config(d, up, False, gport, admin, **kw)
    cmd = [PY, "-m", "tests.bench.guard_noaudit", str(cfg)] if unaudited else [str(Path(PY).parent / "guard"), "serve"]
    if not unaudited:
        cmd += ["--config", str(cfg)]
    with process(cmd, gport, log=d / f"guard-{gport}.log", wait=180):
        yield f"http://127.0.0.1:{gport}", {"x-forwarded-client-cert": XFCC}


def run(quick: bool = QUICK, model_ms: tuple[int, ...] | None = None) -> dict[str, Any]:
    """``model_ms``: the model's answer times to measure with (BENCH_MODEL_MS, comma-separated; default 0,5)."""
    from tests.bench.run import in_turn

    if model_ms is None:
        model_ms = tuple(int(x) for x in os.environ.get("BENCH_MODEL_MS", "0,5").split(",") if x.strip())

    rounds, seconds = (3, 3.0) if quick else (5, 6.0)
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "cpus": os.cpu_count(), "by_model_ms": {}}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as es:
        d = Path(tmp)
        port = free_port()
        cmd = [PY, "-m", "uvicorn", "guard.demo.modelserver:ModelServer", "--factory", "--port", str(port)]
        es.enter_context(process([*cmd, "--log-level", "warning", "--no-access-log"], port))
        up = f"http://127.0.0.1:{port}"
        for ms in model_ms:
            body = _body(ms)
            p50: dict[str, list[float]] = {}
            for k in range(rounds):
                for name, kw in in_turn(list(VARIANTS), k):
                    with _guard(d, up, kw) as (url, headers):
                        url += "/v1/chat/completions"
                        paced(url, body, headers, 1, 0, 1.0)  # warm-up
                        r = paced(url, body, headers, 1, 0, seconds)
                    assert r["non_2xx"] == 0, (name, r)
                    p50.setdefault(name, []).append(r["p50_ms"])
                    print(
                        f"  model {ms} ms {name:15s} p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms", file=sys.stderr
                    )
            base = p50["unaudited"]
            added = {
                name: round(statistics.median(a - b for a, b in zip(xs, base, strict=True)), 3)
                for name, xs in p50.items()
                if name != "unaudited"
            }
            out["by_model_ms"][str(ms)] = {"p50_ms": p50, "added_p50_ms": added}
            print(f"model {ms} ms: added p50 per request vs unaudited: {added}", file=sys.stderr)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
