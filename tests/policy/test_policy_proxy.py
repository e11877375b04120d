"""The shipped policy through the real proxy, with real client certificates and an injected clock."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.policy.conftest import ROOT

CHAT = "/v1/chat/completions"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def at(self, hour: int, minute: int = 0) -> None:
        self.now = self.now.replace(hour=hour, minute=minute)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def proxy(guard_factory: Callable[..., Any], clock: Clock, tmp_path: Path) -> Any:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    return guard_factory(
        runtime_kw={"clock": clock},
        policy={"model": str(policies / "model.conf"), "rules": [str(policies / "policy.csv")], "watch": False},
    )


def _deciding_rule(proxy: Any, r: httpx.Response) -> str:
    """The rule that refused ``r``, from its audit record: the answer names none (no file path for clients)."""
    import time

    from guard.audit.layout import iter_events

    rid = r.headers["x-guard-request-id"]
    deadline = time.monotonic() + 5
    while True:
        recs = [e for _, _, e in iter_events(proxy.config.audit.dir) if e.get("request_id") == rid]
        if recs or time.monotonic() > deadline:
            assert ".csv" not in r.text and "/" not in r.json()["error"]["message"]
            return str(recs[0]["decisions"]["access"]["rule"])
        time.sleep(0.05)


def _chat(proxy: Any, who: str, model: str = "llama-3-8b") -> httpx.Response:
    with proxy.client(who) as c:
        return c.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "Hello!"}]})


def test_shipped_access_rules_through_the_proxy(proxy: Any, clock: Clock) -> None:
    assert _chat(proxy, "app").status_code == 200
    r = _chat(proxy, "app", "internal-finance")
    assert r.status_code == 403 and _deciding_rule(proxy, r).endswith("policies/policy.csv:8")
    assert _chat(proxy, "staff", "internal-finance").status_code == 200
    assert _chat(proxy, "prod-workload").status_code == 200  # SPIFFE ID under spiffe://example.org/ns/prod/
    assert _chat(proxy, "contractor").status_code == 200  # 10:00 UTC
    clock.at(21)
    r = _chat(proxy, "contractor")
    assert r.status_code == 403 and _deciding_rule(proxy, r).endswith("policies/policy.csv:13")
    assert _chat(proxy, "app").status_code == 200
    clock.at(6)
    assert _chat(proxy, "contractor").status_code == 200
    with proxy.client("app") as c:
        assert c.get("/v1/models").status_code == 200
        r = c.post("/v1/completions", json={"model": "llama-3-8b", "prompt": "Hi"})
        assert r.status_code == 200  # completion is granted wherever chat is
        r = c.post("/v1/completions", json={"model": "internal-finance", "prompt": "Hi"})
        assert r.status_code == 403


def test_a_policy_change_is_enforced_after_admin_reload_and_a_broken_one_is_not(proxy: Any) -> None:
    rules = Path(proxy.config.policy.rules[0])
    original = rules.read_text()
    rules.write_text(
        original.replace(
            "p, access, allow, chat, -, 'apps' in r.sub.ou", "p, access, allow, chat, -, 'nobody' in r.sub.ou"
        )
    )
    assert httpx.post(proxy.admin_url + "/admin/reload", timeout=10).status_code < 300
    assert _chat(proxy, "app").status_code == 403
    rules.write_text(original + "p, access, allow, chat, -, (\n")
    httpx.post(proxy.admin_url + "/admin/reload", timeout=10)
    assert _chat(proxy, "app").status_code == 403  # the broken file did not replace the loaded policy
    rules.write_text(original)
    assert httpx.post(proxy.admin_url + "/admin/reload", timeout=10).status_code < 300
    assert _chat(proxy, "app").status_code == 200
