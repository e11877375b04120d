"""CPU per request of the pipeline in-process, this tree against another checkout of Guard in the same run.

For a change to the request path: is it slower than what it replaces? ``BASE_TREE`` is a checkout of the
code to compare with (e.g. ``git worktree add /tmp/base HEAD~3``, or ``git archive``). Both drive the same
``Pipeline`` benchmark (tests/bench/bench_pipeline_cpu.py ``_measure``: N sequential Chat Completions through
the shipped policy and signed journal, against nginx with a fixed completion) in fresh processes,
alternating base and this tree for several rounds; the medians and their ratio are reported, and the ratio
of each tree's least disturbed run (its minimum: on a shared machine, other processes only ever add CPU).
Run: BASE_TREE=/path/to/base python -m tests.bench.bench_pipeline_ab [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.common import FIXED_COMPLETION, NGINX, ROOT, free_port, have, nginx_conf, wait_port

_ONE = """
import json, sys, uvloop
from tests.bench.bench_pipeline_cpu import _measure
us, _ = uvloop.run(_measure(sys.argv[1], __import__("pathlib").Path(sys.argv[2]), int(sys.argv[3])))
print(json.dumps(us))
"""


def _one(tree: Path, variant: str, cfg: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _ONE, variant, str(cfg), str(n)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    from tests.bench.run import guard_config

    base = Path(os.environ.get("BASE_TREE", "")).resolve()
    if not (base / "guard" / "pipeline.py").exists():
        raise SystemExit("BASE_TREE must name a checkout of Guard to compare with")
    if not have("nginx"):
        raise SystemExit("needs nginx for the fixed upstream")
    n, rounds = (1000, 4) if quick else (3000, 6)
    rounds = int(os.environ.get("BENCH_ROUNDS", rounds))
    seen: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        port = free_port()
        conf = nginx_conf(
            d / "ng",
            f"""  server {{ listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{FIXED_COMPLETION}'; }} }}""",
        )
        up = subprocess.Popen([NGINX, "-c", str(conf)])
        try:
            wait_port(port)
            cfg = guard_config(d, f"http://127.0.0.1:{port}", False, free_port(), free_port())
            for r in range(rounds):
                order = (("base", base), ("this", ROOT)) if r % 2 == 0 else (("this", ROOT), ("base", base))
                for variant in ("full", "bare"):
                    for label, tree in order:
                        us = _one(tree, variant, cfg, n)
                        seen[label].setdefault(variant, []).append(us)
                        print(f"  {label:4s} {variant:5s} {us:7.1f} us CPU per request", file=sys.stderr)
        finally:
            up.terminate()
            up.wait(10)
    out: dict[str, Any] = {"requests_per_run": n, "rounds": rounds}
    for variant in ("full", "bare"):
        b = statistics.median(seen["base"][variant])
        t = statistics.median(seen["this"][variant])
        bmin, tmin = min(seen["base"][variant]), min(seen["this"][variant])
        out[variant] = {
            "base_us": round(b, 1),
            "this_us": round(t, 1),
            "ratio_this_to_base": round(t / b, 3),
            # the least disturbed run of each: on a busy machine the fairer estimate of the code's own cost
            "ratio_of_minimums": round(tmin / bmin, 3),
        }
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
