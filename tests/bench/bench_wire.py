"""Per-request overhead of each wire API path through Guard, as a ratio to Chat Completions in the same run.

Guard (mTLS on loopback, the shipped denylist as its only screen, so the figure is the wire path's own
cost: parsing, field tables, segments, relay, serialisation, audit) in front of the built-in model server.
For each path, whole and streamed (a 40-piece answer): the median time per request through Guard minus the
median straight to the model server (same client, same answer), in rounds that each start with
another path. Machine load moves single figures; compare ratios from one run.

  chat        POST /v1/chat/completions -> openai upstream
  responses   POST /v1/responses        -> openai upstream
  messages    POST /v1/messages         -> anthropic upstream
  translated  POST /v1/messages         -> openai upstream (translated to Chat Completions and back)
  chat_to_messages  POST /v1/chat/completions -> anthropic upstream (translated to Messages and back)

CPU per request (``cpu_per_request``): each path's whole answer through the Pipeline in-process (no client,
no TLS, no audit writes; the model server in another process), process CPU time, which machine load moves
far less than wall time.

Before/after: ``--against REV`` also measures the Chat Completions pipeline's CPU per request in-process
(tests/bench/bench_pipeline_cpu.py, variant ``no-journal``) for the tree at REV and for this tree, in
alternating child processes against one model server, and reports after / before (does the shared wire-module
shape make Chat Completions slower?).

Run: python -m tests.bench.bench_wire [--quick] [--against canon]   (or BENCH_ONLY=wire python -m tests.bench.run)
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ANSWER = "[[reply: " + " ".join(f"word{i}" for i in range(40)) + "]]"


def _bodies(stream: bool) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """name -> (Guard path, model server path, body)"""
    msgs = [{"role": "user", "content": ANSWER}]
    return {
        "chat": (
            "/v1/chat/completions",
            "/v1/chat/completions",
            {"model": "bench-model", "messages": msgs, "stream": stream},
        ),
        "responses": ("/v1/responses", "/v1/responses", {"model": "bench-model", "input": ANSWER, "stream": stream}),
        "messages": (
            "/v1/messages",
            "/v1/messages",
            {"model": "claude-bench", "max_tokens": 64, "messages": msgs, "stream": stream},
        ),
        "translated": (
            "/v1/messages",
            "/v1/chat/completions",
            {"model": "gpt-bench", "max_tokens": 64, "messages": msgs, "stream": stream},
        ),
        "chat_to_messages": (
            "/v1/chat/completions",
            "/v1/messages",
            {"model": "claude-chat", "max_tokens": 64, "messages": msgs, "stream": stream},
        ),
    }


def _time(c: httpx.Client, path: str, body: dict[str, Any], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        with c.stream("POST", path, json=body) as r:
            for _chunk in r.iter_raw():
                pass
            assert r.status_code == 200, r.status_code
    return (time.perf_counter() - t) / n * 1e6


def _direct_body(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the model server gets from Guard for this path (translated paths: the upstream's API)."""
    from guard.apis import translate, translate_anthropic

    if name == "translated":
        return translate.to_chat(body)
    if name == "chat_to_messages":
        return translate_anthropic.to_messages(body)
    return body


def run(quick: bool = False) -> dict[str, Any]:
    from guard.demo.stack import ROOT, make_pki, start_model_server
    from tests.conftest import start_guard

    n, rounds = (40, 3) if quick else (150, 5)
    out: dict[str, Any] = {"n": n, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        make_pki(tmp / "pki")
        filters = tmp / "filters"
        filters.mkdir()
        shutil.copy(ROOT / "filters" / "denylist.yaml", filters / "denylist.yaml")
        _app, ms, url = start_model_server()
        g = start_guard(
            tmp / "pki",
            url,
            tmp,
            filters={"dir": str(filters)},
            routes=[{"model": "claude*", "upstream": "anthropic"}, {"model": "*", "upstream": "local"}],
        )
        try:
            with (
                httpx.Client(base_url=g.url, verify=g.ssl_context("prod-workload"), timeout=30) as gc,
                httpx.Client(base_url=url, timeout=30) as dc,
            ):
                for stream in (False, True):
                    bodies = _bodies(stream)
                    times: dict[str, list[float]] = {k: [] for k in bodies}
                    direct: dict[str, list[float]] = {k: [] for k in bodies}
                    for name, (gp, dp, body) in bodies.items():  # warm up
                        _time(gc, gp, body, 5)
                        _time(dc, dp, _direct_body(name, body), 5)
                    names = list(bodies)
                    for r in range(rounds):  # each round starts with another path
                        for name in names[r % len(names) :] + names[: r % len(names)]:
                            gp, dp, body = bodies[name]
                            times[name].append(_time(gc, gp, body, n))
                            direct[name].append(_time(dc, dp, _direct_body(name, body), n))
                    over = {k: statistics.median(times[k]) - statistics.median(direct[k]) for k in bodies}
                    out["stream" if stream else "whole"] = {
                        k: {
                            "via_guard_us": round(statistics.median(times[k]), 1),
                            "direct_us": round(statistics.median(direct[k]), 1),
                            "overhead_us": round(over[k], 1),
                            "ratio_to_chat": round(over[k] / over["chat"], 2),
                        }
                        for k in bodies
                    }
        finally:
            g.stop()
            ms.stop()
    return out


async def _cpu(cfg_path: Path, path: str, body: dict[str, Any], n: int) -> float:
    """CPU per request (this process: Guard's pipeline in-process, no client, no TLS; the model server runs in
    another process) for one path, whole answers, shipped policy, no audit writes."""
    import time as _t

    from guard.config import load_config
    from guard.pipeline import Pipeline
    from guard.runtime import Runtime
    from tests.bench.common import XFCC
    from tests.bench.guard_noaudit import NullRecorder

    rt = Runtime(load_config(cfg_path), recorder=NullRecorder())
    rt.load()
    svc = rt.services()
    pipe = Pipeline(svc)
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "client": ("127.0.0.1", 5555),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"x-forwarded-client-cert", XFCC.encode()),
        ],
    }
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(m: dict[str, Any]) -> None:
        if m["type"] == "http.response.start":
            status.append(m["status"])

    for _ in range(50):
        await pipe(scope, receive, send)
    assert set(status) == {200}, (path, set(status))
    t = _t.process_time()
    for _ in range(n):
        await pipe(scope, receive, send)
    us = (_t.process_time() - t) / n * 1e6
    await svc.upstreams.close()
    return us


def cpu_per_path(quick: bool = False) -> dict[str, Any]:
    """CPU per request of each path's whole answer, in-process, rounds that each start with another path."""
    import subprocess

    import uvloop
    import yaml

    from tests.bench.common import free_port, model_server_cmd, wait_port
    from tests.bench.run import guard_config

    n, rounds = (300, 3) if quick else (1000, 5)
    bodies = _bodies(False)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        port = free_port()
        up = subprocess.Popen(model_server_cmd(port))
        try:
            wait_port(port)
            cfg_path = guard_config(tmp, f"http://127.0.0.1:{port}", False, free_port(), free_port())
            cfg = yaml.safe_load(cfg_path.read_text())
            cfg["upstreams"]["anthropic"] = {"url": f"http://127.0.0.1:{port}", "api": "anthropic", "timeout_s": 30}
            cfg["routes"] = [{"model": "claude*", "upstream": "anthropic"}, {"model": "*", "upstream": "local"}]
            cfg_path.write_text(yaml.safe_dump(cfg))
            seen: dict[str, list[float]] = {k: [] for k in bodies}
            names = list(bodies)
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    gp, _, body = bodies[name]
                    seen[name].append(uvloop.run(_cpu(cfg_path, gp, body, n)))
        finally:
            up.terminate()
            up.wait(10)
    med = {k: statistics.median(v) for k, v in seen.items()}
    return {
        "n": n,
        "rounds": rounds,
        **{k: {"cpu_us": round(v, 1), "ratio_to_chat": round(v / med["chat"], 2)} for k, v in med.items()},
    }


_CHILD = """
import sys, uvloop
from pathlib import Path
from tests.bench.bench_pipeline_cpu import _measure
print(uvloop.run(_measure("no-journal", Path(sys.argv[1]), int(sys.argv[2])))[0])
"""


def before_after(rev: str, quick: bool = False) -> dict[str, Any]:
    """Chat Completions pipeline CPU per request, tree at ``rev`` against this tree (alternating processes)."""
    import io
    import os
    import subprocess
    import tarfile

    from guard.demo.stack import ROOT
    from tests.bench.common import free_port, model_server_cmd, wait_port
    from tests.bench.run import guard_config

    n, rounds = (600, 3) if quick else (2000, 5)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        base = tmp / "base"
        base.mkdir()
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(base)
        for so in (ROOT / "guard" / "apis").glob("_strictjson*.so"):  # the same C hook for both (untracked build)
            shutil.copy(so, base / "guard" / "apis" / so.name)
        port = free_port()
        up = subprocess.Popen(model_server_cmd(port))
        try:
            wait_port(port)
            cfg = guard_config(tmp, f"http://127.0.0.1:{port}", False, free_port(), free_port())
            seen: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(rounds):  # the order flips every round
                pair = [("before", base), ("after", ROOT)]
                for label, tree in pair if r % 2 == 0 else pair[::-1]:
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, str(cfg), str(n)],
                        cwd=tree,
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    seen[label].append(float(out.strip().splitlines()[-1]))
        finally:
            up.terminate()
            up.wait(10)
    b, a = statistics.median(seen["before"]), statistics.median(seen["after"])
    return {
        "rev": rev,
        "n": n,
        "rounds": rounds,
        "before_us": round(b, 1),
        "after_us": round(a, 1),
        "after_over_before": round(a / b, 3),
    }


if __name__ == "__main__":
    q = "--quick" in sys.argv
    result: dict[str, Any] = {"paths": run(quick=q), "cpu_per_request": cpu_per_path(quick=q)}
    if "--against" in sys.argv:
        result["chat_before_after"] = before_after(sys.argv[sys.argv.index("--against") + 1], quick=q)
    print(json.dumps(result, indent=2))
