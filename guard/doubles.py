"""Stand-ins a test injects into guard.runtime.Runtime (never configured): a policy that allows everything and
a recorder that keeps audit records in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guard.screens.base import Verdict


@dataclass
class _SimpleDecision:
    stage: str
    effect: str
    rule: str = ""
    policy_version: str = ""
    profile: str = "default"

    def to_audit(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "effect": self.effect,
            "rule": self.rule,
            "policy_version": self.policy_version,
            "matched": [],
            "profile": self.profile,
            "error": "",
        }


class AllowAll:
    """Only for tests that exercise the proxy apart from policies (injected, never configured)."""

    def decide_access(self, sub: dict, obj: dict, act: str, env: dict) -> _SimpleDecision:
        return _SimpleDecision("access", "allow", "test:allow-all")

    def decide_content(self, sub: dict, obj: dict, act: str, env: dict) -> _SimpleDecision:
        return _SimpleDecision("content", "allow", "test:allow-all")


class MemoryRecorder:
    """Keeps audit records in memory (tests that are not about audit may inject it)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def started(self, ex: Any) -> None:
        self.events.append({"type": "exchange.started", "request_id": ex.request_id})

    async def finished(self, ex: Any, kind: str, outcome: dict[str, Any], wait: bool = True) -> None:
        self.events.append(
            {
                "type": kind,
                "request_id": ex.request_id,
                "outcome": outcome,
                "screens": [v.to_audit() for v in ex.verdicts if isinstance(v, Verdict)],
            }
        )
