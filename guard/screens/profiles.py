"""Screening profiles: the named sets of screens built from filters/ (pii.yaml, safety.yaml, denylist.yaml).

A policy rule picks a profile by name; each file may define that profile, and a file that does not falls
back to its own ``default``. Every screen is wrapped in its fail mode (GuardedScreen): a screen that cannot
do its job is never taken as a pass.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from guard.config import ConfigError
from guard.errors import unavailable
from guard.screens.base import ScreenSet
from guard.screens.failmode import FailSettings, GuardedScreen

log = logging.getLogger("guard.filters")


class Profiles:
    def __init__(self, sets: dict[str, ScreenSet], closers: list[Any] | None = None) -> None:
        self._sets = sets
        self._closers = closers or []

    @property
    def names(self) -> list[str]:
        return sorted(self._sets)

    def screens(self, name: str) -> ScreenSet:
        s = self._sets.get(name)
        if s is None:  # a policy names a profile filters/ does not define: refuse, never screen less
            log.error("the policy selected screening profile %r, which filters/ does not define", name)
            raise unavailable("the screening profile this request needs is not configured", "profile_missing")
        return s

    def replace(self, other: Profiles) -> None:
        self._sets, self._closers = other._sets, other._closers

    async def close(self) -> None:
        for c in self._closers:
            try:
                await c.close()
            except Exception:
                log.exception("closing a screen failed")


class _Lazy:
    """Builds a screen on first use, so a profile no policy selects never loads its backend (a local model,
    say). A build that fails raises inside the fail mode: the request is refused, not waved through."""

    def __init__(self, name: str, build: Any) -> None:
        self.name = name
        self._build = build
        self._screen: Any = None

    def _get(self) -> Any:
        if self._screen is None:
            self._screen = self._build()
        return self._screen

    async def screen_prompt(self, segments: Any, ctx: Any) -> Any:
        return await self._get().screen_prompt(segments, ctx)

    async def screen_response(self, segments: Any, prompt: Any, ctx: Any) -> Any:
        return await self._get().screen_response(segments, prompt, ctx)

    def open_stream(self, prompt: Any, ctx: Any, kind: str = "content") -> Any:
        return self._get().open_stream(prompt, ctx, kind=kind)

    async def close(self) -> None:
        if self._screen is not None and hasattr(self._screen, "close"):
            await self._screen.close()


def _pick(table: dict[str, Any], name: str) -> Any:
    return table.get(name, table.get("default"))


def load_profiles(d: str | Path) -> Profiles:
    """Build every profile named in any filters file. Raises ConfigError naming file, line and key."""
    d = Path(d)
    if not d.is_dir():
        raise ConfigError(f"{d}: filters directory not found")
    pii: dict[str, Any] = {}
    safety: dict[str, Any] = {}
    deny: dict[str, Any] = {}
    closers: list[Any] = []
    injection: Any = None
    if (d / "pii.yaml").exists():
        from guard.screens.pii.profile import load_pii_profiles
        from guard.screens.pii.screen import PIIScreen

        for name, prof in load_pii_profiles(d / "pii.yaml").items():
            pii[name] = GuardedScreen(PIIScreen(prof), FailSettings(on_error=prof.settings.on_error, timeout_ms=None))
    if (d / "safety.yaml").exists():
        from guard.screens.safety.screen import SafetyScreen
        from guard.screens.safety.settings import load_safety

        settings = load_safety(d / "safety.yaml")
        for name in settings.profiles:
            scr = _Lazy("safety", lambda n=name: SafetyScreen.from_settings(settings, n))
            closers.append(scr)
            safety[name] = GuardedScreen(scr, settings.profile(name).fail)
        if settings.default != "default" and "default" not in safety:
            safety["default"] = safety[settings.default]
        if settings.injection is not None:  # optional prompt injection classifier, in every profile
            from guard.screens.injection.screen import InjectionScreen

            inj = settings.injection
            injection = GuardedScreen(_Lazy("prompt_injection", lambda: InjectionScreen(inj)), inj.fail)
    if (d / "denylist.yaml").exists():
        from guard.screens.denylist import worker
        from guard.screens.denylist.screen import DenylistScreen
        from guard.screens.denylist.settings import load_denylist
        from guard.screens.pii.source import source_of

        dsettings = load_denylist(d / "denylist.yaml")
        for name in dsettings.profiles:
            src = source_of(d / "denylist.yaml", name)
            deny[name] = GuardedScreen(
                DenylistScreen.from_settings(dsettings, name, src, worker.in_process), FailSettings(timeout_ms=None)
            )
        if dsettings.default != "default" and "default" not in deny:
            deny["default"] = deny[dsettings.default]
    names = set(pii) | set(safety) | set(deny) | {"default"}
    sets: dict[str, ScreenSet] = {}
    for name in sorted(names):
        chosen = [s for s in (_pick(deny, name), _pick(pii, name), _pick(safety, name)) if s is not None]
        sets[name] = ScreenSet(
            prompt=[s for s in chosen if hasattr(s.screen, "screen_prompt")]
            + ([injection] if injection is not None else []),  # prompts only
            response=[s for s in chosen if hasattr(s.screen, "screen_response")],
        )
    return Profiles(sets, closers)
