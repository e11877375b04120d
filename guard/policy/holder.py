"""PolicyHolder: the server's live policy, its optional shadow candidate, hot reload and the file watcher.

Decisions read one immutable snapshot ``(active, shadow)``; a reload builds and tests new engines
beside it and swaps the snapshot with one assignment, so a decision never sees half a policy and a
policy that fails to load or to pass its tests never replaces the one in use.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from guard.config import ConfigError
from guard.policy.attributes import Attrs, wrap
from guard.policy.decision import Decision
from guard.policy.loader import Policy, load_policy
from guard.policy.settings import PolicySettings
from guard.policy.testing import run_files
from guard.telemetry import POLICY_RELOADS, SHADOW_DISAGREEMENTS

log = logging.getLogger("guard.policy")

Attributes = Mapping[str, Any] | Attrs


def load_active(settings: PolicySettings) -> Policy:
    """Load the active policy and run its configured tests; ConfigError on any problem."""
    policy = load_policy(settings.model, list(settings.rules), cache=settings.cache)
    if settings.tests:
        failed = [o for o in run_files(policy.engine, list(settings.tests)) if not o.passed]
        if failed:
            raise ConfigError("policy tests failed:\n" + "\n".join(o.line() for o in failed))
    return policy


def load_shadow(settings: PolicySettings) -> Policy | None:
    if settings.shadow is None:
        return None
    return load_policy(settings.shadow.model or settings.model, list(settings.shadow.rules), cache=settings.cache)


class PolicyHolder:
    def __init__(self, settings: PolicySettings, active: Policy, shadow: Policy | None = None) -> None:
        self.settings = settings
        self._state: tuple[Policy, Policy | None] = (active, shadow)
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> PolicyHolder:
        """Load at start-up: a bad policy raises ConfigError (``guard serve`` exits 2)."""
        return cls(settings, load_active(settings), load_shadow(settings))

    @property
    def active(self) -> Policy:
        return self._state[0]

    @property
    def shadow(self) -> Policy | None:
        return self._state[1]

    @property
    def version(self) -> str:
        return self._state[0].version

    # --- decisions -------------------------------------------------------------------------------

    def decide_access(self, sub: Attributes, obj: Attributes, act: str, env: Attributes) -> Decision:
        """Before any screening. ``env``: time, hour, weekday, client_ip, body_bytes, stream."""
        return self._decide("access", sub, obj, act, env)

    def decide_content(self, sub: Attributes, obj: Attributes, act: str, env: Attributes) -> Decision:
        """After prompt screening. ``env`` adds pii, safety and safety_score (see content_env)."""
        return self._decide("content", sub, obj, act, env)

    def _decide(self, stage: str, sub: Attributes, obj: Attributes, act: str, env: Attributes) -> Decision:
        active, shadow = self._state
        sub, obj, env = wrap(sub), wrap(obj), wrap(env)
        d = active.engine.decide(stage, sub, obj, act, env)
        if shadow is None:
            return d
        try:
            s = shadow.engine.decide(stage, sub, obj, act, env)
        except Exception:
            log.exception("shadow policy failed")
            return d
        if s.effect == d.effect and s.profile == d.profile:
            return d
        SHADOW_DISAGREEMENTS.labels(stage).inc()
        return replace(d, shadow=s.to_audit())

    # --- reload ----------------------------------------------------------------------------------

    def reload(self) -> tuple[bool, str]:
        """Parse, validate, test, then swap. A policy that fails keeps the old one in place."""
        with self._reload_lock:
            old_active, old_shadow = self._state
            errors = []
            try:
                active = load_active(self.settings)
            except ConfigError as e:
                active = old_active
                errors.append(str(e))
            try:
                shadow = load_shadow(self.settings)
            except ConfigError as e:
                shadow = old_shadow
                errors.append(f"shadow policy: {e}")
            self._state = (active, shadow)
        if errors:
            POLICY_RELOADS.labels("failed").inc()
            msg = "\n".join(errors)
            log.error(
                "policy reload failed, the previous policy stays in force (%s):\n%s", old_active.version[:12], msg
            )
            return False, msg
        POLICY_RELOADS.labels("ok").inc()
        log.info("policy reloaded: version %s (was %s)", active.version[:12], old_active.version[:12])
        return True, ""

    # --- watching files --------------------------------------------------------------------------

    def watched_files(self) -> list[Path]:
        s = self.settings
        files = [s.model, *s.rules, *s.tests]
        if s.shadow:
            files += [s.shadow.model or s.model, *s.shadow.rules]
        return files

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.watched_files():
            try:
                h.update(Path(p).read_bytes())
            except OSError:
                h.update(b"\1missing")
            h.update(b"\0")
        return h.hexdigest()

    def start_watching(self, interval_s: float | None = None) -> None:
        """Poll the files in a daemon thread and reload on change (when ``settings.watch``)."""
        if not self.settings.watch or self._thread is not None:
            return
        interval = interval_s if interval_s is not None else self.settings.watch_interval_s
        self._stop.clear()
        seen = self._fingerprint()  # before returning, so a change right after start is not missed
        self._thread = threading.Thread(
            target=self._watch, args=(interval, seen), name="guard-policy-watch", daemon=True
        )
        self._thread.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _watch(self, interval: float, seen: str) -> None:
        pending: str | None = None
        while not self._stop.wait(interval):
            try:
                now = self._fingerprint()
                if now == seen:
                    pending = None
                elif now != pending:
                    pending = now  # changed: wait one more poll, so a half-written file is not loaded
                else:
                    seen, pending = now, None
                    self.reload()
            except Exception:
                log.exception("policy watcher failed")
