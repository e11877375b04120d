"""Large denylist scans run in the screening processes (guard/screens/denylist/worker.py), off the serving
process's GIL, with the same results as in a thread. Real worker processes (spawned), the shipped denylist."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from guard.screens.base import Segment
from guard.screens.denylist import worker
from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import load_denylist
from guard.screens.pii.pool import POOL
from guard.screens.pii.source import source_of
from tests.bench.bench_hostile import hostile_bodies

ROOT = Path(__file__).resolve().parents[2]


def _segments() -> list[Segment]:
    import json

    pem = json.loads(hostile_bodies(48 * 1024)["pem_pairs"])["messages"][0]["content"]
    jwt = json.loads(hostile_bodies(48 * 1024)["jwt_like"])["messages"][0]["content"]
    plain = "Plain words about the weather and nothing else. " * 800
    segs = [Segment(t, "user", "content", ("messages", i, "content")) for i, t in enumerate((plain, jwt, pem))]
    # a tool result (JSON text) with a secret spelt with escapes: the process reads it decoded too
    escaped = '{"log": "' + plain + '", "key": "AKIA\\u0049OSFODNN7EXAMPLE"}'
    return [*segs, Segment(escaped, "tool", "tool_result", ("messages", 3, "content"))]


def test_large_scans_in_a_screening_process_match_the_thread(tmp_path: Path) -> None:
    shutil.copy(ROOT / "filters" / "denylist.yaml", tmp_path / "denylist.yaml")
    src = source_of(tmp_path / "denylist.yaml", "default")
    screen = DenylistScreen.from_settings(load_denylist(tmp_path / "denylist.yaml"), "default", src, worker.in_process)
    assert POOL.size >= 1

    async def go() -> None:
        deadline = time.monotonic() + 120
        while POOL.get(src, warm=worker.warm) is None:  # the first call starts the processes; they load the settings
            assert time.monotonic() < deadline, "the screening processes never became ready"
            await asyncio.sleep(0.2)
        pool = POOL.get(src, warm=worker.warm)
        assert pool is not None and pool.submit(os.getpid).result(30) != os.getpid()
        done = await worker.in_process(src, "prompt", _segments())
        assert done is not None and len(done) == 4  # scanned there, not here
        assert done[3][2] == ["aws_access_key_id"], done[3][1:]  # the escaped key, found in the process
        in_process = await screen.screen_prompt(_segments(), {})
        threaded = await asyncio.to_thread(screen._screen, _segments(), "prompt")
        assert in_process.blocked and in_process.code == "secret_blocked", in_process
        assert "tool_result" in in_process.fields, in_process
        for k in ("blocked", "code", "entities", "categories", "fields", "message"):
            assert getattr(in_process, k) == getattr(threaded, k), k

    try:
        asyncio.run(go())
    finally:
        POOL.broken()  # shut the processes down
