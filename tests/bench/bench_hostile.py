"""Hostile inputs against everyone else: p99 latency of ordinary small chat requests, alone and while other
clients send ~1 MB hostile prompts in a loop, in ONE run (Guard with the shipped filters, plain HTTP with
identity from a trusted XFCC header, the built-in model server upstream). Llama Guard is a second model-server
process of its own, as in a real deployment: a stand-in that shares one process with the chat model stalls
that model on long judge requests, and the figure would measure the stand-in instead of Guard. For the same
reason the hostile clients ask for a model of their own (``bulk-model``), routed to a third stand-in process:
the stand-in parses each forwarded megabyte on its own event loop, and ordinary requests queued behind it
in the same process would time the stand-in's JSON parsing, not Guard. The hostile clients and their model
server stand for other machines: they run at SCHED_IDLE, so the CPU they spend sending megabytes and
parsing the forwarded ones (a stand-in parses each in Python) is not counted as Guard's on a 2-core box;
one more run of the default Guard keeps them at normal priority, where that CPU competes with Guard, the
ordinary clients and their model server as an equal.

Phases alternate quiet, hostile, quiet, hostile, ...; each phase runs the same paced client (tests/bench/
paced_client.py in its own process: 4 connections, 10 requests/s each). The figure is the p99 of every
ordinary request of the hostile phases together over the p99 of every request of the quiet phases together
(goal: at most 2x): a phase's own p99 is its 2nd-slowest request, so one stall would decide it. Guards
in turn: the default (large PII and denylist scans in a screening process, ``limits.screen_processes: 1``,
at ``limits.screen_priority: idle``, SCHED_IDLE; the collector deferred while large bodies are in flight,
``limits.gc_defer_s: 30``); the same with the collector not deferred (``gc_defer_s: 0``: its passes over a
megabyte of small messages pause every client); the screening process at 5 nice steps (where nice only
ranks it inside its own autogroup, so the model servers and clients still wait out its slices); and scans
in threads (``screen_processes: 0``; there the scans hold the GIL in stretches, so that figure shows what
the processes are for). Other work on the machine skews it: run it on an otherwise idle host. Hostile
bodies cycle through the families that made backtracking patterns super-linear: unterminated PEM headers,
dotted token runs, AKIA runs, digit runs with separators, x@x@ runs, dotted-quad runs, nested-quantifier bait;
and by shape: a megabyte of small messages, of tools with
deeply nested schemas, of plain prose (longer than the safety screen's ``prompt.max_windows`` allow, so refused
400 ``prompt_too_long`` before any judge call). Each is answered (blocked, passed, refused, or 503 over the
screening budget): the counts by status are reported. Then the default Guard once more with each family
alone (an attacker sends the family that hurts most, not a mix): quiet and hostile phases of 4 s, two
rounds, per family; ``worst_family_p99_ratio`` is the highest.

Run: python -m tests.bench.bench_hostile  |  BENCH_ONLY=hostile python -m tests.bench.run
Environment: BENCH_QUICK=1 for shorter phases.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.bench.common import CHAT_BODY, PY, XFCC, free_port, model_server_cmd, process

MB = 1 << 20
HOSTILE_MODEL = "bulk-model"  # routed to a model-server process of its own (see the module doc)


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
        out[name] = json.dumps(
            {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 8}
        ).encode()
    out.update(structured_bodies(size))
    return out


def structured_bodies(size: int = MB) -> dict[str, bytes]:
    """Hostile by shape rather than by text: ``size`` bytes of many small messages, and of many tools with
    deeply nested parameter schemas (within the JSON depth limit); plus plain prose as long as the others,
    which the safety screen would judge in windows."""
    line = "Plain words in a short message, number {}."
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": line.format(i)} for i in range(size // 82)]

    def schema(depth: int) -> dict[str, Any]:
        node: dict[str, Any] = {"type": "string", "description": "a leaf"}
        for k in range(depth):
            node = {
                "type": "object",
                "description": f"level {k}",
                "properties": {f"p{k}": node, "q": {"type": "string"}},
            }
        return node

    one = {"type": "function", "function": {"name": "tool", "description": "A tool.", "parameters": schema(24)}}
    n_tools = max(1, size // len(json.dumps(one)))
    tools = [{"type": "function", "function": {**one["function"], "name": f"tool_{i}"}} for i in range(n_tools)]
    sentence = "The committee met on Tuesday to review the quarterly figures and plan the next steps. "
    prose = sentence * (size // len(sentence))
    bodies = {
        "many_messages": {"model": HOSTILE_MODEL, "messages": msgs, "max_tokens": 8},
        "deep_tool_schemas": {
            "model": HOSTILE_MODEL,
            "messages": [{"role": "user", "content": "Use a tool."}],
            "tools": tools,
            "max_tokens": 8,
        },
        "long_prose": {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": prose}], "max_tokens": 8},
    }
    return {k: json.dumps(v).encode() for k, v in bodies.items()}


_STRUCTURED = ("many_messages", "deep_tool_schemas", "long_prose")
OLD_PEM = r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END \1PRIVATE KEY(?: BLOCK)?-----"


def scaling(n: int = 32 * 1024) -> list[dict[str, Any]]:
    """Time of the shipped denylist and PII screens on each hostile family at n and 4n characters: linear
    means a ratio near 4 (16 or more would be quadratic). Plus the Python-``re`` private-key pattern that
    RE2 replaced, on the same family, for contrast (n/4 and n: it is quadratic)."""
    import re

    from guard.screens.denylist.screen import DenylistScreen
    from guard.screens.denylist.settings import load_denylist
    from guard.screens.pii.profile import load_pii_profiles

    root = Path(__file__).resolve().parents[2]
    deny = DenylistScreen.from_settings(load_denylist(root / "filters"))
    pii = load_pii_profiles(root / "filters" / "pii.yaml")["strict"]

    def timed(fn: Any, text: str, runs: int = 2) -> float:
        best = float("inf")  # the best of a few runs: a shared box preempts single runs at random
        for _ in range(runs):
            t = time.perf_counter()
            fn(text)
            best = min(best, time.perf_counter() - t)
        return best

    out = []
    for name, body in hostile_bodies(8 * n).items():
        if name in _STRUCTURED:
            continue
        text = json.loads(body)["messages"][0]["content"]
        small, big = text[:n], text[: 4 * n]
        row: dict[str, Any] = {"family": name}
        for label, fn in (("denylist", lambda t: deny.scan(t, "prompt")), ("pii", pii.findings)):
            if label == "denylist":
                a, b = timed(fn, small, 3), timed(fn, big, 3)
            else:  # PII reads texts in pieces of max_scan_chars (64K): 64K against 256K, one piece against four
                a, b = timed(fn, text[: 2 * n], 1), timed(fn, text[: 8 * n], 1)
            row[f"{label}_ms"] = round(b * 1000, 1)
            row[f"{label}_ratio"] = round(b / max(a, 1e-6), 1)
        out.append(row)
    old = re.compile(OLD_PEM)
    pem = "-----BEGIN PRIVATE KEY-----\n" * (n // 28)
    a = timed(lambda t: list(old.finditer(t)), pem[: len(pem) // 4], 1)
    b = timed(lambda t: list(old.finditer(t)), pem, 1)
    out.append(
        {
            "family": "pem_unterminated, old Python-re pattern (n/4 -> n)",
            "denylist_ms": round(b * 1000, 1),
            "denylist_ratio": round(b / max(a, 1e-6), 1),
        }
    )
    return out


def _guard(
    d: Path,
    upstream: str,
    judge: str,
    port: int,
    admin: int,
    processes: int,
    priority: int | str,
    bulk: str = "",
    gc_defer_s: float = 30.0,
) -> Path:
    from guard.demo.stack import screening_filters
    from tests.bench.run import guard_config

    path = guard_config(d, upstream, False, port, admin, filters="shipped")
    cfg = yaml.safe_load(path.read_text())
    if bulk:  # the hostile clients' model: a stand-in process of its own
        cfg["upstreams"]["bulk"] = {**cfg["upstreams"]["local"], "url": bulk}
        cfg["routes"] = [{"model": HOSTILE_MODEL, "upstream": "bulk"}, *cfg["routes"]]
    cfg["filters"]["dir"] = str(screening_filters(d / "filters", judge))
    cfg["limits"] = {
        "max_body_bytes": 4 * MB,
        "screen_processes": processes,
        "screen_priority": priority,
        "gc_defer_s": gc_defer_s,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _paced(url: str, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            PY,
            "-m",
            "tests.bench.paced_client",
            url + "/v1/chat/completions",
            CHAT_BODY,
            json.dumps({"x-forwarded-client-cert": XFCC}),
            "4",
            "10",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pooled_p99(phases: list[dict[str, Any]]) -> float:
    """p99 over every request of the phases together (and their latency lists dropped from the results):
    a phase of 200 requests has its p99 in its 2nd-slowest request, so one stall decides it."""
    lat = sorted(x for p in phases for x in p.pop("lat_ms"))
    return round(lat[int(len(lat) * 0.99)], 3)


def _hostile_loop(
    url: str,
    bodies: dict[str, bytes],
    stop: threading.Event,
    statuses: Counter[str],
    worst: list[float],
    offset: int,
    idle: bool = True,
) -> None:
    names = sorted(bodies)
    i = offset
    if idle:  # this thread only (Linux: the calling thread's policy)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
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
    """One large prompt starts the screening processes; wait until Guard logs that they are ready."""
    body = json.dumps(
        {
            "model": "bench-model",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Plain words for the warm-up. " * 2000}],
        }
    ).encode()
    httpx.post(
        url + "/v1/chat/completions",
        content=body,
        timeout=60,
        headers={"x-forwarded-client-cert": XFCC, "content-type": "application/json"},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and log.read_bytes().count(b"screening processes ready") < 2:
        time.sleep(0.5)  # ready for the PII and for the denylist settings


def _harness(bulk_pid: int, idle: bool) -> None:
    """The hostile clients' model server at SCHED_IDLE (it stands for a machine of its own) or at normal
    priority (sharing this box's cores with Guard and the ordinary clients as an equal)."""
    if bulk_pid:
        os.sched_setscheduler(bulk_pid, os.SCHED_IDLE if idle else os.SCHED_OTHER, os.sched_param(0))


def _phases(
    url: str,
    bodies: dict[str, bytes],
    phase: float,
    rounds: int,
    hostile_clients: int,
    bulk_pid: int = 0,
    harness_idle: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter[str], list[float]]:
    """``rounds`` times: a quiet phase, then a phase with ``hostile_clients`` sending ``bodies`` in a loop."""
    _harness(bulk_pid, harness_idle)
    quiet: list[dict[str, Any]] = []
    loud: list[dict[str, Any]] = []
    statuses: Counter[str] = Counter()
    worst = [0.0]
    for k in range(rounds):
        quiet.append(_paced(url, phase))
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_hostile_loop,
                args=(url, bodies, stop, statuses, worst, j * 5 + k, harness_idle),
                daemon=True,
            )
            for j in range(hostile_clients)
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the hostile load is running before the measured phase starts
        loud.append(_paced(url, phase))
        stop.set()
        for t in threads:
            t.join(90)
    return quiet, loud, statuses, worst


@contextmanager
def _serving(
    sub: Path, upstream: str, judge: str, bulk: str, processes: int, priority: int | str, gc_defer_s: float
) -> Iterator[str]:
    """A Guard (``limits.screen_processes``, ``limits.screen_priority``, ``limits.gc_defer_s``) serving from
    ``sub``, warmed up (screens loaded, connections pooled, screening processes ready): its URL."""
    sub.mkdir()
    port, admin = free_port(), free_port()
    cfg = _guard(sub, upstream, judge, port, admin, processes, priority, bulk, gc_defer_s)
    with process([PY, "-m", "guard.cli", "serve", "--config", str(cfg)], port, log=sub / "guard.log", wait=60):
        url = f"http://127.0.0.1:{port}"
        _paced(url, 2.0)
        if processes:
            _warm_pool(url, sub / "guard.log")
        yield url


def _families(
    d: Path,
    upstream: str,
    judge: str,
    bulk: str,
    phase: float,
    rounds: int,
    bodies: dict[str, bytes],
    hostile_clients: int,
    bulk_pid: int = 0,
) -> list[dict[str, Any]]:
    """The default Guard with each family alone: an attacker sends the family that hurts most, not a mix."""
    out = []
    with _serving(d / "families", upstream, judge, bulk, 1, "idle", 30.0) as url:
        for name in sorted(bodies):
            quiet, loud, statuses, _ = _phases(url, {name: bodies[name]}, phase, rounds, hostile_clients, bulk_pid)
            p99_quiet, p99_loud = _pooled_p99(quiet), _pooled_p99(loud)
            out.append(
                {
                    "family": name,
                    "answered": ", ".join(f"{k} x{v}" for k, v in statuses.most_common()),
                    "p99_quiet_ms": p99_quiet,
                    "p99_hostile_ms": p99_loud,
                    "p99_ratio": round(p99_loud / p99_quiet, 2),
                }
            )
    return out


def _variant(
    d: Path,
    upstream: str,
    judge: str,
    bulk: str,
    processes: int,
    priority: int | str,
    phase: float,
    rounds: int,
    bodies: dict[str, bytes],
    hostile_clients: int,
    gc_defer_s: float = 30.0,
    bulk_pid: int = 0,
    harness_idle: bool = True,
) -> dict[str, Any]:
    """One Guard (``limits.screen_processes``, ``limits.screen_priority``, ``limits.gc_defer_s``): quiet and
    hostile phases in turn."""
    sub = d / f"p{processes}-{priority}-gc{gc_defer_s:g}-{'idle' if harness_idle else 'normal'}"
    with _serving(sub, upstream, judge, bulk, processes, priority, gc_defer_s) as url:
        quiet, loud, statuses, worst = _phases(url, bodies, phase, rounds, hostile_clients, bulk_pid, harness_idle)
    p99_quiet, p99_loud = _pooled_p99(quiet), _pooled_p99(loud)
    return {
        "screen_processes": processes,
        "screen_priority": priority if processes else "",
        "gc_defer_s": gc_defer_s,
        "hostile_harness": "idle" if harness_idle else "normal",
        "quiet": quiet,
        "hostile": loud,
        "hostile_statuses": dict(statuses),
        "hostile_worst_s": round(worst[0], 3),
        "requests_per_side": sum(q["requests"] for q in quiet),
        "p50_quiet_ms": statistics.median(q["p50_ms"] for q in quiet),
        "p50_hostile_ms": statistics.median(q["p50_ms"] for q in loud),
        "p99_quiet_ms": p99_quiet,
        "p99_hostile_ms": p99_loud,
        "p99_ratio": round(p99_loud / p99_quiet, 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    phase, rounds = (3.0, 1) if quick else (6.0, 3)
    fam_phase, fam_rounds = (3.0, 1) if quick else (4.0, 2)
    hostile_clients = 2
    bodies = hostile_bodies()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as es:
        d = Path(tmp)
        ports = {"model": free_port(), "judge": free_port(), "bulk": free_port()}
        procs = {  # the chat model, Llama Guard and the hostile clients' model: a process each
            k: es.enter_context(process(model_server_cmd(port), port)) for k, port in ports.items()
        }
        upstream, judge, bulk = (f"http://127.0.0.1:{ports[k]}" for k in ("model", "judge", "bulk"))
        pid = procs["bulk"].pid
        variants = [
            _variant(d, upstream, judge, bulk, n, prio, phase, rounds, bodies, hostile_clients, gc_s, pid, idle)
            for n, prio, gc_s, idle in (
                (1, "idle", 30.0, True),
                (1, "idle", 30.0, False),
                (1, "idle", 0.0, True),
                (1, 5, 30.0, True),
                (0, "idle", 30.0, True),
            )
        ]
        fam_bodies = {k: v for k, v in bodies.items() if not quick or k in _STRUCTURED}
        families = _families(d, upstream, judge, bulk, fam_phase, fam_rounds, fam_bodies, hostile_clients, pid)
    r = {
        "scaling_n_chars": 32 * 1024,
        "scaling": scaling(),
        "phase_s": phase,
        "rounds": rounds,
        "hostile_clients": hostile_clients,
        "hostile_body_bytes": MB,
        "ordinary": "4 connections x 10 requests/s",
        "variants": variants,
        "p99_ratio": variants[0]["p99_ratio"],
        "family_phase_s": fam_phase,
        "family_rounds": fam_rounds,
        "families": families,
        "worst_family": max(families, key=lambda f: f["p99_ratio"])["family"],
        "worst_family_p99_ratio": max(f["p99_ratio"] for f in families),
    }
    print_tables(r)  # the rows for docs/benchmarks.md, also when run by tests.bench.run
    return r


def rows(r: dict[str, Any]) -> list[str]:
    """Markdown table rows for docs/benchmarks.md, one per variant."""
    out = []
    for v in r["variants"]:
        how = "threads only"
        if v["screen_processes"]:
            how = f"{v['screen_processes']} screening process(es), priority {v['screen_priority']}"
        how += ", collector deferred" if v.get("gc_defer_s", 30.0) else ", collector not deferred (gc_defer_s 0)"
        if v.get("hostile_harness") == "normal":
            how += ", hostile clients and their model server at normal priority"
        out.append(
            f"| hostile inputs, {how} ({r['hostile_clients']} clients x 1 MB, 16 families, "
            f"{v.get('requests_per_side', '?')} ordinary requests each side) | "
            f"p50 {v['p50_quiet_ms']:.1f} -> {v['p50_hostile_ms']:.1f} ms | "
            f"p99 {v['p99_quiet_ms']:.1f} -> {v['p99_hostile_ms']:.1f} ms | **{v['p99_ratio']}x** (goal <= 2x) |"
        )
    for f in r.get("families", []):
        out.append(
            f"| hostile inputs, default Guard, family {f['family']} alone ({f['answered']}) | | "
            f"p99 {f['p99_quiet_ms']:.1f} -> {f['p99_hostile_ms']:.1f} ms | **{f['p99_ratio']}x** (goal <= 2x) |"
        )
    return out


def print_tables(r: dict[str, Any]) -> None:
    print("| hostile family | denylist ms at 128K chars | ratio 128K/32K | PII (strict) ms at 256K | ratio 256K/64K |")
    print("|---|---|---|---|---|")
    for x in r["scaling"]:
        print(
            f"| {x['family']} | {x['denylist_ms']} | {x['denylist_ratio']}x | {x.get('pii_ms', '')} | "
            f"{str(x['pii_ratio']) + 'x' if 'pii_ratio' in x else ''} |"
        )
    print()
    print("| scenario | ordinary p50 quiet -> hostile | ordinary p99 quiet -> hostile | ratio |")
    print("|---|---|---|---|")
    print("\n".join(rows(r)))


def main() -> int:
    r = run(quick=os.environ.get("BENCH_QUICK") == "1")
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
