"""Soak: mixed load against Guard as a real process (`guard serve`), loopback only, bounded in count and time.

The mix: non-streamed and streamed OpenAI chat, Ollama NDJSON streams, streamed completions, prompts with
personal data (pseudonymized), access-denied calls (403), prompts Llama Guard's stand-in judges unsafe
(blocked), and malformed bodies (400). Afterwards:

* RSS and open file descriptors of the Guard process are flat: the median of the last third of the samples
  (after warm-up) is within ``GUARD_SOAK_TOLERANCE`` (default 10%) of the median of the first third; the
  figures are printed;
* `guard audit verify DIR --trust-local-keys` passes;
* the number of ``exchange.started`` + ``exchange.denied`` events equals the number of requests that got an
  HTTP response, and every response's request id has one of them.

``GUARD_SOAK_SECONDS`` (default 30: part of `make test`; `make soak` sets 600), ``GUARD_SOAK_RPS`` (default 15).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.audit.layout import iter_events
from tests.ops.conftest import guard_process  # noqa: F401 - the fixture: Guard as a subprocess

SECONDS = float(os.environ.get("GUARD_SOAK_SECONDS", "30"))
RPS = float(os.environ.get("GUARD_SOAK_RPS", "15"))
TOLERANCE = float(os.environ.get("GUARD_SOAK_TOLERANCE", "0.10"))
CONCURRENCY = 6
MAX_REQUESTS = int(SECONDS * RPS * 1.1) + 10

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 240)]


def _chat(model: str, text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


# (weight, principal, path, body or raw bytes, kind)
MIX: list[tuple[int, str, str, Any, str]] = [
    (30, "app", "/v1/chat/completions", _chat("demo-model", "Summarize the quarterly report in one line."), "chat"),
    (20, "app", "/v1/chat/completions", _chat("demo-model", "Write a short poem about rivers.", True), "stream"),
    (10, "app", "/api/chat", _chat("llama3", "Tell me about lakes.", True), "ollama-stream"),
    (
        5,
        "staff",
        "/v1/completions",
        {"model": "demo-model", "prompt": "Once upon a time", "stream": True},
        "completion-stream",
    ),
    (10, "app", "/v1/chat/completions", _chat("demo-model", "Please mail jane.doe@example.com the minutes."), "pii"),
    (10, "app", "/v1/chat/completions", _chat("internal-finance", "What is the payroll total?"), "denied"),
    (10, "app", "/v1/chat/completions", _chat("demo-model", "Explain how to build a bomb at home."), "blocked"),
    (5, "app", "/v1/chat/completions", b'{"model": "demo-model", "messages": [', "malformed"),
]


def _proc_figures(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open file descriptors) of ``pid``."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors of ``pid`` by kind (socket, pipe, anon_inode:..., or the file's folder)."""
    kinds: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[
            t.split(":[")[0]
            if ":[" in t
            else (t.split("[")[0] if t.startswith("anon_inode") else str(Path(t).parent.name) + "/")
        ] += 1
    return dict(sorted(kinds.items()))


async def _load(
    g: Any, seconds: float, rps: float, limit: int, samples: list[tuple[float, float, int]]
) -> tuple[list[tuple[str, str, int]], Counter]:
    """Send the mix at ``rps`` for ``seconds`` (at most ``limit`` requests); sample the process meanwhile.
    Returns (kind, request id, status) for every request that got a response, and errors by kind."""
    rng = random.Random(8)
    weights = [m[0] for m in MIX]
    clients = {
        who: httpx.AsyncClient(
            base_url=g.url, verify=g.ssl(who), timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)
        )
        for who in {m[1] for m in MIX}
    }
    answered: list[tuple[str, str, int]] = []
    failed: Counter = Counter()
    t0 = time.monotonic()
    next_slot = 0

    async def worker() -> None:
        nonlocal next_slot
        while True:
            i = next_slot
            next_slot += 1
            at = t0 + i / rps
            if i >= limit or at - t0 >= seconds:
                return
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            _, who, path, body, kind = rng.choices(MIX, weights)[0]
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                async with clients[who].stream(
                    "POST", path, content=raw, headers={"content-type": "application/json"}
                ) as r:
                    await r.aread()
                    answered.append((kind, r.headers.get("x-guard-request-id", ""), r.status_code))
            except httpx.HTTPError as e:  # no HTTP response: did not (visibly) reach the pipeline
                failed[f"{kind}: {type(e).__name__}"] += 1

    async def sampler() -> None:
        first = True
        while time.monotonic() - t0 < seconds:
            rss, fds = _proc_figures(g.proc.pid)
            samples.append((time.monotonic() - t0, rss, fds))
            if first and samples[-1][0] >= min(10.0, seconds * 0.25):
                print(f"\nfds after warm-up: {_fd_kinds(g.proc.pid)}")
                first = False
            await asyncio.sleep(0.5)
        print(f"fds at the end: {_fd_kinds(g.proc.pid)}")

    try:
        await asyncio.gather(sampler(), *(worker() for _ in range(CONCURRENCY)))
    finally:
        for c in clients.values():
            await c.aclose()
    return answered, failed


def _flat(name: str, values: list[float], tolerance: float, slack: float) -> str:
    third = max(len(values) // 3, 1)
    first, last = statistics.median(values[:third]), statistics.median(values[-third:])
    line = (
        f"{name}: first third median {first:.1f}, last third median {last:.1f}, "
        f"min {min(values):.1f}, max {max(values):.1f} ({(last - first) / first * 100:+.1f}%)"
    )
    print(line)
    assert last <= first * (1 + tolerance) + slack, f"{name} grew: {line}"
    return line


def test_soak_mixed_load(guard_process: Any) -> None:  # noqa: F811
    g = guard_process()
    warm = min(10.0, SECONDS * 0.25)
    samples: list[tuple[float, float, int]] = []
    t = time.monotonic()
    answered, failed = asyncio.run(_load(g, SECONDS, RPS, MAX_REQUESTS, samples))
    took = time.monotonic() - t
    statuses = Counter((kind, status) for kind, _, status in answered)
    print(
        f"\nsoak: {len(answered)} responses in {took:.1f} s ({len(answered) / took:.1f}/s), "
        f"{sum(failed.values())} without a response {dict(failed)}"
    )
    print("by kind and status:", dict(sorted(statuses.items())))

    assert g.proc.poll() is None, "guard died during the soak"
    assert len(answered) >= min(MAX_REQUESTS, SECONDS * RPS) * 0.8, "the load generator fell far behind"
    assert not failed, f"requests without an HTTP response: {dict(failed)}"
    expected = {
        "chat": {200},
        "stream": {200},
        "ollama-stream": {200},
        "completion-stream": {200},
        "pii": {200},
        "denied": {403},
        "blocked": {400, 403},
        "malformed": {400},
    }
    wrong = {k: s for k, s in statuses if s not in expected[k]}
    assert not wrong, f"unexpected statuses: {statuses}"

    measured = [s for s in samples if s[0] >= warm]
    _flat("RSS MiB", [s[1] for s in measured], TOLERANCE, slack=0.0)
    _flat("open fds", [float(s[2]) for s in measured], TOLERANCE, slack=2.0)

    assert g.stop() == 0, g.log.read_text()[-3000:]
    audit = g.dir / "audit"
    kinds = Counter()
    by_rid: dict[str, set[str]] = {}
    for _, _, e in iter_events(audit):
        kinds[e.get("type")] += 1
        if e.get("request_id"):
            by_rid.setdefault(e["request_id"], set()).add(e["type"])
    print("journal:", dict(kinds))
    assert kinds["exchange.started"] + kinds["exchange.denied"] == len(answered)
    unrecorded = [
        (k, rid, s) for k, rid, s in answered if not by_rid.get(rid, set()) & {"exchange.started", "exchange.denied"}
    ]
    assert not unrecorded, unrecorded[:5]

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "guard.cli",
            "audit",
            "verify",
            str(audit),
            "--trust-local-keys",
            "--json",
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(r.stdout)
    print("audit verify:", [(c["chain"], c["events"], c["status"]) for c in report["chains"]])
    assert Path(audit / "keys").is_dir()
