from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guard.audit import event as ev
from guard.audit.journal import Journal
from guard.audit.settings import AuditSettings


def make_settings(root: Path, **kw: Any) -> AuditSettings:
    base: dict[str, Any] = {"dir": root, "checkpoint_events": 10, "checkpoint_seconds": 60.0}
    base.update(kw)
    return AuditSettings(**base)


def sample(i: int, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": f"req-{i}",
        "api": "openai",
        "operation": "chat",
        "model": kw.pop("model", "gpt-4o"),
        "principal": {
            "subject": "CN=app-a,OU=team-x",
            "cn": kw.pop("cn", "app-a"),
            "ou": ["team-x"],
            "spiffe_id": "",
            "fingerprint": "ab" * 32,
        },
        "client_ip": "127.0.0.1",
        "upstream": "local",
        "decisions": {"access": {"effect": "allow", "rule": "p, team-x, gpt-*", "policy_version": "v1"}},
        "screens": [
            {
                "name": "pii",
                "direction": "prompt",
                "status": "ok",
                "action": "allow",
                "blocked": False,
                "entities": {"EMAIL_ADDRESS": 1},
                "latency_ms": 1.5,
            }
        ],
        "latency_ms": {"access": 0.1, "screens": 1.0},
    }
    fields.update(kw)
    return ev.new_event("exchange.started", **fields)


def fill(j: Journal, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [j.append_sync(sample(start + i)) for i in range(n)]


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    """A closed journal: 45 events in several segments, checkpoints every 10 events."""
    root = tmp_path / "audit"
    j = Journal(make_settings(root, segment_max_bytes=8192), "w1")
    j.append_sync(ev.guard_started("0.1.0"))
    fill(j, 44)
    j.append_sync(ev.guard_stopped())
    j.close()
    return root
