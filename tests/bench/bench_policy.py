"""Policy decision latency: plain casbin.Enforcer against Guard's engine, at 20 to 10,000 rules.

Rule sets are the shipped policy plus generated rules of the shapes security teams write (per app,
per OU and model, per model denies, content rules, time windows). Guard's engine is measured on cache
hits (a warm pool of requests) and on cache misses (its decision cache emptied before each timed
decision, so the index walk, the cache key and every candidate rule run each time). Plain casbin is
sampled with few iterations at large sizes: one decision there takes tens to hundreds of milliseconds.

    .venv/bin/python tests/bench/bench_policy.py [--quick]
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import casbin

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from guard.policy.attributes import Attrs, make_env, principal, resource  # noqa: E402
from guard.policy.loader import load_policy  # noqa: E402

SIZES = (20, 100, 1_000, 10_000)


def _rules(n: int, rng: random.Random) -> list[str]:
    shipped = [
        ln for ln in (ROOT / "policies/policy.csv").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    out = list(shipped)
    apps, teams, models = max(2, n // 3), max(2, n // 20), max(2, n // 10)
    while len(out) < n:
        r = rng.random()
        if r < 0.6:
            out.append(
                f"p, access, allow, {rng.choice(['chat', 'embeddings'])}, -, "
                f"r.sub.cn == 'app-{rng.randrange(apps)}' && "
                f"globMatch(r.obj.model, 'model-{rng.randrange(9)}*')"
            )
        elif r < 0.75:
            out.append(
                f"p, access, allow, chat, {rng.choice(['-', 'strict'])}, "
                f"'team-{rng.randrange(teams)}' in r.sub.ou && r.obj.model == 'model-{rng.randrange(models)}'"
            )
        elif r < 0.85:
            out.append(
                f"p, access, deny, *, -, r.obj.model == 'model-{rng.randrange(models)}' && !('staff' in r.sub.ou)"
            )
        elif r < 0.95:
            out.append(
                f"p, content, deny, *, -, r.obj.model == 'model-{rng.randrange(models)}' && "
                f"'PII_{rng.randrange(20)}' in r.env.pii"
            )
        else:
            out.append(
                f"p, access, deny, *, -, 'team-{rng.randrange(teams)}' in r.sub.ou && "
                f"r.env.hour >= {rng.randrange(18, 24)}"
            )
    return out


def _requests(n: int, count: int, rng: random.Random) -> list[tuple[Any, ...]]:
    apps, teams, models = max(2, n // 3), max(2, n // 20), max(2, n // 10)
    out = []
    for _ in range(count):
        sub = principal(cn=f"app-{rng.randrange(apps)}", ou=["apps", f"team-{rng.randrange(teams)}"])
        obj = resource(model=f"model-{rng.randrange(models)}", upstream="local")
        stage = rng.choice(["access", "content"])
        env = make_env(f"2026-01-05T{rng.randrange(24):02}:00:00Z")
        if stage == "content":
            env.update(pii=rng.choice([[], ["PII_1"], ["EMAIL_ADDRESS"]]), safety=[], safety_score=0.0)
        out.append((stage, Attrs(sub), Attrs(obj), rng.choice(["chat", "embeddings"]), Attrs(env)))
    return out


def _stats(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    return {
        "p50_us": round(statistics.median(s) / 1000, 2),
        "p99_us": round(s[min(len(s) - 1, int(len(s) * 0.99))] / 1000, 2),
        "n": len(s),
    }


def _time_casbin(model: Path, rules: Path, reqs: list[tuple[Any, ...]], iters: int) -> dict[str, float]:
    e = casbin.Enforcer(str(model), str(rules))
    out = []
    for i in range(iters):
        stage, sub, obj, act, env = reqs[i % len(reqs)]
        t = time.perf_counter_ns()
        with contextlib.suppress(Exception):
            e.enforce(sub, obj, act, env, stage)
        out.append(time.perf_counter_ns() - t)
    return _stats(out)


def _time_guard(engine: Any, reqs: list[tuple[Any, ...]], iters: int, miss: bool) -> dict[str, float]:
    for r in reqs:  # warm: compiles the cache key functions, fills the cache
        engine.decide(*r)
    combos = list(engine._combos.values())
    out = []
    for i in range(iters):
        r = reqs[i % len(reqs)]
        if miss:
            for c in combos:
                c.cache.clear()
        t = time.perf_counter_ns()
        engine.decide(*r)
        out.append(time.perf_counter_ns() - t)
    return _stats(out)


def run(quick: bool = False) -> dict[str, Any]:
    rng = random.Random(20260105)
    results: dict[str, Any] = {"sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = ROOT / "policies/model.conf"
        for n in SIZES:
            rules = Path(tmp) / f"rules{n}.csv"
            rules.write_text("# generated\n" + "\n".join(_rules(n, rng)) + "\n")
            t = time.perf_counter()
            policy = load_policy(model, [rules])
            load_s = time.perf_counter() - t
            reqs = _requests(n, 300, rng)
            casbin_iters = {20: 400, 100: 100, 1_000: 12, 10_000: 3}[n] // (4 if quick else 1) or 1
            guard_iters = 2_000 if quick else 20_000
            gc.collect()
            row = {
                "rules": n,
                "load_s": round(load_s, 3),
                "casbin": _time_casbin(model, rules, reqs, casbin_iters),
                "guard_hit": _time_guard(policy.engine, reqs, guard_iters, miss=False),
                "guard_miss": _time_guard(policy.engine, reqs, max(200, guard_iters // 10), miss=True),
                "index_nodes": policy.engine.index_nodes,
            }
            results["sizes"][str(n)] = row
    return results


def _table(res: dict[str, Any]) -> str:
    head = (
        f"{'rules':>7} {'casbin p50':>11} {'casbin p99':>11} {'hit p50':>8} {'hit p99':>8} "
        f"{'miss p50':>9} {'miss p99':>9} {'load s':>7}   (microseconds per decision)"
    )
    lines = [head]
    for row in res["sizes"].values():
        c, h, m = row["casbin"], row["guard_hit"], row["guard_miss"]
        lines.append(
            f"{row['rules']:>7} {c['p50_us']:>11} {c['p99_us']:>11} {h['p50_us']:>8} {h['p99_us']:>8} "
            f"{m['p50_us']:>9} {m['p99_us']:>9} {row['load_s']:>7}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(_table(result))
    print(json.dumps(result))
