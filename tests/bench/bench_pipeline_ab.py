"""CPU per request of the pipeline, this tree against another checkout of Guard, in one process and one run.

For a change to the request path: is it slower than what it replaces? ``BASE_TREE`` is a checkout of the
code to compare with (``git archive <commit> | tar -x -C /tmp/base``). Its ``guard`` package is copied under
the name ``guardbase`` (imports rewritten) so both load side by side: each builds a Runtime and a Pipeline
from the same guard.yaml (no journal: the audit trail has its own benchmarks), and both serve Chat
Completions against nginx with a fixed completion, in alternating batches of sequential requests. A batch
of each runs back to back, so load from other processes falls on both alike; the medians and the minimums of
the per-batch CPU per request are compared. Two policies: allow-all, and the shipped policy.
``BASE_TREE`` may also name a revision of this repository (``BASE_TREE=35094a1``: the request path before
the stages). Without it the benchmark is skipped (``make bench`` runs it as ``ab``).
Run: BASE_TREE=/path/to/base python -m tests.bench.bench_pipeline_ab [--quick]
     BASE_TREE=35094a1 BENCH_ONLY=ab python -m tests.bench.run
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.common import ROOT, free_port
from tests.bench.inproc import ChatRequests, fixed_upstream

PRE_STAGES = "35094a1"  # the request path before the stages and the WireAPI modules (guard/pipeline.py in one piece)

_IMPORTS = re.compile(r"\bfrom guard\b|\bimport guard\b|\"guard\.(?=[a-z_])")


def _copy_base(base: Path, into: Path) -> None:
    """BASE_TREE's guard package as ``guardbase``: its own imports and module-name strings rewritten."""
    shutil.copytree(base / "guard", into / "guardbase", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for p in (into / "guardbase").rglob("*.py"):
        text = p.read_text()
        p.write_text(_IMPORTS.sub(lambda m: m.group(0).replace("guard", "guardbase"), text))


class _NoAudit:
    capture = None

    async def started(self, ex: Any) -> None:
        pass

    async def finished(self, ex: Any, kind: str, outcome: dict[str, Any], wait: bool = True) -> None:
        pass


def _allow_all(pkg: str) -> Any:
    try:
        return importlib.import_module(f"{pkg}.doubles").AllowAll()
    except ModuleNotFoundError:  # a base tree that keeps AllowAll in runtime.py
        return importlib.import_module(f"{pkg}.runtime").AllowAll()


def _pipeline(pkg: str, cfg: Path, allow_all: bool) -> Any:
    runtime = importlib.import_module(f"{pkg}.runtime")
    conf = importlib.import_module(f"{pkg}.config").load_config(cfg)
    rt = runtime.Runtime(conf, recorder=_NoAudit(), policy=_allow_all(pkg) if allow_all else None)
    rt.load()
    return importlib.import_module(f"{pkg}.pipeline").Pipeline(rt.services())


def _base_config(cfg: Path) -> Path:
    """The same guard.yaml for the base tree, less the keys it does not know yet (``audit.start_record``: the
    benchmark records nothing)."""
    out = cfg.with_name("guard-base.yaml")
    out.write_text("".join(ln for ln in cfg.read_text().splitlines(True) if "start_record:" not in ln))
    return out


async def _compare(cfg: Path, batches: int, per: int, allow_all: bool) -> dict[str, Any]:
    pipes = {"base": _pipeline("guardbase", _base_config(cfg), allow_all), "this": _pipeline("guard", cfg, allow_all)}
    requests = ChatRequests()
    for p in pipes.values():  # warm up: pools, caches
        await requests.run(p, 300)
    gc.collect()
    gc.freeze()
    seen: dict[str, list[float]] = {"base": [], "this": []}
    for i in range(batches):
        for label in ("base", "this") if i % 2 == 0 else ("this", "base"):
            seen[label].append(await requests.cpu_us(pipes[label], per))
    gc.unfreeze()
    assert requests.statuses == {200}, requests.statuses
    b, t = statistics.median(seen["base"]), statistics.median(seen["this"])
    return {
        "base_us": round(b, 1),
        "this_us": round(t, 1),
        "ratio_this_to_base": round(t / b, 3),
        "ratio_of_minimums": round(min(seen["this"]) / min(seen["base"]), 3),
    }


def _base_tree(spec: str, into: Path) -> Path:
    """``BASE_TREE``: a checkout's directory, or a revision of this repository (extracted with git archive)."""
    if Path(spec).is_dir():
        return Path(spec).resolve()
    out = into / "base-tree"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", spec], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    import uvloop

    from tests.bench.run import guard_config

    spec = os.environ.get("BASE_TREE", "")
    if not spec:
        print(f"  skipped: set BASE_TREE (a checkout, or a revision such as {PRE_STAGES}) to compare", file=sys.stderr)
        return {"skipped": f"BASE_TREE not set (the pre-stages request path is {PRE_STAGES})"}
    batches, per = (20, 100) if quick else (40, 150)
    out: dict[str, Any] = {"base": spec if not Path(spec).is_dir() else Path(spec).name}
    out |= {"batches": batches, "requests_per_batch": per}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        base = _base_tree(spec, d)
        if not (base / "guard" / "pipeline.py").exists():
            raise SystemExit("BASE_TREE must name a checkout of Guard to compare with")
        _copy_base(base, d)
        sys.path.insert(0, str(d))
        try:
            with fixed_upstream(d, nginx_only=True) as url:
                cfg = guard_config(d, url, False, free_port(), free_port())
                for name, allow_all in (("allow_all_policy", True), ("shipped_policy", False)):
                    out[name] = uvloop.run(_compare(cfg, batches, per, allow_all))
                    print(f"  {name}: {out[name]}", file=sys.stderr)
        finally:
            sys.path.remove(str(d))
            for m in [m for m in sys.modules if m == "guardbase" or m.startswith("guardbase.")]:
                del sys.modules[m]
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
