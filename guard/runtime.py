"""Runtime: what one Guard process holds beside the request path — the policy, the screens, the audit
journal and forwarder, the TLS context — and how they start, reload and stop."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from guard.config import Config
from guard.filters.base import Verdict
from guard.pipeline import ScreenSet, Services
from guard.server import ContextHolder, build_server_context

log = logging.getLogger("guard.runtime")


@dataclass
class _SimpleDecision:
    stage: str
    effect: str
    rule: str = ""
    policy_version: str = ""
    profile: str = "default"

    def to_audit(self) -> dict[str, Any]:
        return {"effect": self.effect, "rule": self.rule, "policy_version": self.policy_version}


class AllowAll:
    """Only for tests that exercise the proxy without a policy."""

    def decide_access(self, sub: dict, obj: dict, act: str, env: dict) -> _SimpleDecision:
        return _SimpleDecision("access", "allow", "test:allow-all")

    def decide_content(self, sub: dict, obj: dict, act: str, env: dict) -> _SimpleDecision:
        return _SimpleDecision("content", "allow", "test:allow-all")


class MemoryRecorder:
    """Keeps audit records in memory (tests only)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def started(self, ex: Any) -> None:
        self.events.append({"type": "exchange.started", "request_id": ex.request_id})

    async def finished(self, ex: Any, kind: str, outcome: dict[str, Any]) -> None:
        self.events.append({"type": kind, "request_id": ex.request_id, "outcome": outcome,
                            "screens": [v.to_audit() for v in ex.verdicts if isinstance(v, Verdict)]})


class Runtime:
    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None, *,
                 policy: Any = None, recorder: Any = None, screens: Callable[[str], ScreenSet] | None = None,
                 writer_id: str | None = None) -> None:
        self.config = config
        self.clock = clock
        self.writer_id = writer_id or f"{socket.gethostname()}-{os.getpid()}"
        self.tls = ContextHolder(None)
        self.policy = policy
        self.recorder = recorder
        self._screens = screens
        self._tasks: list[asyncio.Task] = []

    def load(self) -> None:
        """Load everything that can fail because of a file a person wrote (raises ConfigError)."""
        tls = self.config.tls
        if tls.enabled:
            self.tls.replace(build_server_context(tls.cert, tls.key, tls.client_ca, tls.crl, tls.min_version))
        if self.policy is None:
            self.policy = AllowAll()
        if self.recorder is None:
            self.recorder = MemoryRecorder()
        if self._screens is None:
            empty = ScreenSet()
            self._screens = lambda name: empty

    def services(self) -> Services:
        from guard.app import build_services

        assert self._screens is not None
        return build_services(self.config, self.policy, self.recorder, self._screens, self.clock)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    async def readiness(self) -> dict[str, bool]:
        return {"policy": self.policy is not None, "journal": True}

    async def reload(self) -> dict[str, Any]:
        tls = self.config.tls
        try:
            if tls.enabled:
                self.tls.replace(build_server_context(tls.cert, tls.key, tls.client_ca, tls.crl, tls.min_version))
        except Exception as e:  # noqa: BLE001 - a broken file keeps the old context
            log.error("TLS reload failed, keeping the old certificate: %s", e)
            return {"ok": False, "error": f"tls: {e}"}
        return {"ok": True}
