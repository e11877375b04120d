"""The helper processes of a serving process (large PII/denylist scans, the strict reader of large bodies)
against the RUNNING proxy (`guard serve` as a real process, real mTLS):

* they run at a lower CPU priority than the serving process (``limits.screen_priority``: SCHED_IDLE by
  default, or nice steps), and the serving process itself is not lowered, so a hostile client's megabyte scans
  take a core only after every other client's requests (tests/bench/bench_hostile.py measures the effect);
* they end when their serving process is killed with -9 (each holds hundreds of MB; left behind they would
  pile up with every crash or OOM kill), whether that process is Guard's only one or a forked worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ops.conftest import GuardProcess, guard_process  # noqa: F401  (the fixture)

LARGE = json.dumps(  # over the 64 KB of a large body and the 16 K characters screened inline
    {
        "model": "gpt-4o-mini",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Plain words for the screening processes. " * 3000}],
    }
).encode()


SCHED_OTHER, SCHED_IDLE = 0, 5


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, nice, scheduling policy) of ``pid`` from /proc, or None once it is gone."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    f = text.rsplit(")", 1)[1].split()
    return f[0], int(f[1]), int(f[16]), int(f[38])


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            st = _stat(int(p.name))
            if st is not None and st[1] == pid:
                out.append(int(p.name))
    return out


def _helpers(pid: int, want: int = 2, timeout: float = 60.0) -> list[int]:
    """The spawned helper processes (multiprocessing ``spawn_main``) of serving process ``pid``, once ``want``
    of them run: the screening process and the body reader, both started by large requests."""
    deadline = time.monotonic() + timeout
    found: list[int] = []
    while time.monotonic() < deadline:
        found = [c for c in _children(pid) if "spawn_main" in _cmdline(c)]
        if len(found) >= want:
            return found
        time.sleep(0.2)
    raise AssertionError(f"serving process {pid} started {len(found)} helper processes, not {want}")


def _serving_pid(g: GuardProcess, workers: int, timeout: float = 30.0) -> int:
    if workers == 1:
        return g.proc.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the supervisor's forked workers run guard's serving loop
        kids = [c for c in _children(g.proc.pid) if "guard.audit.sealer" not in _cmdline(c)]
        kids = [c for c in kids if "spawn_main" not in _cmdline(c) and "resource_tracker" not in _cmdline(c)]
        if kids:
            return kids[0]
        time.sleep(0.2)
    raise AssertionError("no forked worker found")


def _wait_public(g: GuardProcess, timeout: float = 30.0) -> None:
    """The public port accepts (the fixture waits for the admin port, which may open first)."""
    port = int(g.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {g.url}")


def _large_requests(g: GuardProcess, n: int = 3) -> None:
    _wait_public(g)
    with g.client(timeout=60) as c:
        for _ in range(n):
            r = c.post("/v1/chat/completions", content=LARGE, headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            time.sleep(0.5)  # the helpers start on the first large body and text; later ones use them


def _gone(pid: int) -> bool:
    st = _stat(pid)
    return st is None or st[0] in ("Z", "X")


@pytest.mark.parametrize("priority", ["idle", 7, 0])
def test_helper_processes_run_at_lower_cpu_priority_than_the_serving_process(
    guard_process: Any,  # noqa: F811
    priority: int | str,
) -> None:
    g = guard_process(limits={} if priority == "idle" else {"screen_priority": priority})  # idle: the default
    _large_requests(g)
    own = os.nice(0)  # the serving process inherits this test's priority
    serving = _stat(g.proc.pid)
    assert serving is not None and serving[2:] == (own, SCHED_OTHER), serving
    helpers = _helpers(g.proc.pid)
    for pid in helpers:
        st = _stat(pid)
        want = (own, SCHED_IDLE) if priority == "idle" else (own + int(priority), SCHED_OTHER)
        assert st is not None and st[2:] == want, (pid, _cmdline(pid), st)


def test_a_bad_screen_priority_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    from guard.config import ConfigError, load_config
    from guard.demo.stack import guard_config, write_config

    cfg = guard_config(tmp_path, "http://127.0.0.1:9", 1, 2, limits={"screen_priority": 25})
    path = write_config(tmp_path / "guard.yaml", cfg)
    with pytest.raises(ConfigError, match=r"guard.yaml:\d+: limits.screen_priority: .*19") as e:
        load_config(path)
    line = int(str(e.value).split("guard.yaml:", 1)[1].split(":", 1)[0])
    assert path.read_text().splitlines()[line - 1].strip() == "screen_priority: 25"


@pytest.mark.parametrize("workers", [1, 2])
def test_helper_processes_exit_when_their_serving_process_is_killed(
    guard_process: Any,  # noqa: F811
    workers: int,
) -> None:
    g = guard_process(workers=workers)
    serving = _serving_pid(g, workers)
    deadline = time.monotonic() + 60
    helpers: list[int] = []
    while time.monotonic() < deadline and len(helpers) < 2:  # with 2 workers a request may reach the other
        _large_requests(g, 1)
        helpers = [c for c in _children(serving) if "spawn_main" in _cmdline(c)]
    assert len(helpers) >= 2, f"the serving process {serving} started {len(helpers)} helper processes"
    os.kill(serving, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_gone(p) for p in helpers):
        time.sleep(0.1)
    left = [(p, _cmdline(p)[:120]) for p in helpers if not _gone(p)]
    assert not left, f"helper processes outlived their serving process: {left}"
