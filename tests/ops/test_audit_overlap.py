"""``audit.start_record``: with ``overlap`` the prompt goes upstream while its ``exchange.started`` record is
being made durable, and the answer is held until it is; with ``before_forward`` nothing goes upstream first.

The record's durability is held back for real: the sealer process that writes and fsyncs the chain
(``audit.sealer: process``) is stopped with SIGSTOP, so no record can become durable until SIGCONT.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audit.proxy_helpers import by_request, chat, journal_events
from tests.hardening.test_audit_faults import _sealers


def _seen_upstream(app: Any, marker: str) -> bool:
    """The chat request itself reached the model (not the safety judge's call, which runs before the record)."""
    return any(
        marker in r.get("raw", "") and str((r.get("body") or {}).get("model", "")).startswith("gpt")
        for r in list(app.requests)
    )


@pytest.mark.parametrize("mode", ["overlap", "before_forward"])
def test_an_answer_is_never_released_before_its_start_record_is_durable(
    guard_factory: Callable[..., Any], model_server: tuple[Any, str], tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "audit"
    g = guard_factory(audit={"dir": str(root), "sealer": "process", "durability": "fsync", "start_record": mode})
    app = model_server[0]
    result: dict[str, Any] = {}
    marker = f"marker-{uuid.uuid4().hex}"
    with g.client("app", timeout=30) as c:
        assert chat(c, "warm up").status_code == 200  # the sealer holds the chain
        deadline = time.monotonic() + 10
        while not (pids := _sealers(os.getpid())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGSTOP)
        try:

            def ask() -> None:
                try:
                    result["r"] = chat(c, f"hello {marker}")
                except httpx.HTTPError as e:
                    result["error"] = repr(e)

            t = threading.Thread(target=ask)
            t.start()
            deadline = time.monotonic() + 8  # screens and the judge run first; a loaded box is slow
            while not _seen_upstream(app, marker) and time.monotonic() < deadline:
                time.sleep(0.02)
            upstream_before_durable = _seen_upstream(app, marker)
            time.sleep(0.5)  # the model has answered by now (overlap); Guard must still hold the answer
            held = t.is_alive()
        finally:
            os.kill(pids[0], signal.SIGCONT)
        t.join(20)
    g.stop()
    assert held, "an answer was released while its exchange.started could not be durable"
    assert "error" not in result and result["r"].status_code == 200, result
    if mode == "overlap":
        assert upstream_before_durable, "overlap: the prompt should go upstream while the record is made durable"
    else:
        assert not upstream_before_durable, "before_forward: a prompt went upstream before its record was durable"
    recs = by_request(journal_events(root))[result["r"].headers["x-guard-request-id"]]
    assert recs["exchange.started"]["seq"] < recs["exchange.completed"]["seq"]
