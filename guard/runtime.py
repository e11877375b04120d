"""Runtime: what one Guard process holds beside the request path — the policy, the screens, the audit
journal and forwarder, the TLS context — and how they start, reload and stop."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from guard import __version__, gc_tuning, reloads, telemetry, tracing
from guard.config import Config, ConfigError
from guard.pipeline import ScreenSet, Services
from guard.revocation import Revocations, TLSFileError
from guard.tls import ContextHolder, build_server_context

log = logging.getLogger("guard.runtime")


def _tls_files(config: Config) -> list[Path]:
    t = config.tls
    return [p for p in (t.cert, t.key, t.client_ca, t.crl) if p is not None] if t.enabled else []


def _tls_material(config: Config) -> tuple[Any, Revocations]:
    """A new server context and the CRLs it checks; TLSFileError names the file that cannot be used."""
    t = config.tls
    try:
        return (
            build_server_context(t.cert, t.key, t.client_ca, t.crl, t.min_version),
            Revocations.load(t.crl, t.client_ca),
        )
    except TLSFileError:
        raise
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise TLSFileError("", f"cannot load certificate, key, CA or CRL: {e}") from None


def _tls_context(config: Config) -> tuple[Any, Revocations]:
    try:
        return _tls_material(config)
    except TLSFileError as e:
        raise ConfigError(f"{config.source or 'config'}: tls: {e}") from None


class Runtime:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], datetime] | None = None,
        *,
        policy: Any = None,
        recorder: Any = None,
        screens: Callable[[str], ScreenSet] | None = None,
        worker: int = 0,
        tracer_provider: Any = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.worker = worker
        self.tls = ContextHolder(None)
        self.policy = policy
        self.recorder = recorder
        self.journal: Any = None
        self.forwarder: Any = None
        self.notary: Any = None  # guard.audit.notary.Notary: tokens and witness cosignatures (worker 0)
        self._screens = screens
        self.profiles: Any = None
        self.supervised = False  # a worker under `guard serve --workers N`: admin reloads go to every worker
        self._watch_task: Any = None
        self._versions: dict[str, str] = {}  # part -> version in force (config.reload's kept_version)
        self._policy_trigger = "watch"  # what started the policy reload in progress (its watcher, unless set)
        self.services_built: Any = None  # the request path's services (quota counters live there)
        self._loop: asyncio.AbstractEventLoop | None = None
        t = config.telemetry
        telemetry.configure(t.metrics)
        self.tracing = (
            tracing.Tracing(tracer_provider)
            if tracer_provider is not None
            else tracing.Tracing.from_config(t.service_name, t.otlp_endpoint, t.trace_sample_ratio)
        )

    # --- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Load everything that can fail because of a file a person wrote (raises ConfigError)."""
        if self.config.tls.enabled:
            self.tls.replace(*_tls_context(self.config))
            self._versions["tls"] = reloads.version_of(self._tls_versioned())
        if self.config.console.enabled:
            try:
                self.config.console.token()
            except ValueError as e:
                raise ConfigError(f"{self.config.source or 'config'}: {e}") from None
        if self.policy is None:
            from guard.policy.holder import PolicyHolder

            self.policy = PolicyHolder.from_settings(self.config.policy)
            self._hook_policy_reload(self.policy)
            self._check_quota_tiers()
        if self._screens is None:
            self._screens = self._load_screens()
        if self.recorder is None:
            from guard.audit import Journal, JournalError, JournalRecorder
            from guard.audit.content_keys import ContentKeyError

            try:
                if self.config.audit.sealer_for(self.config.workers) == "process":
                    from guard.audit.sealer import ProcessJournal

                    self.journal = ProcessJournal(self.config.audit, worker=self.worker)
                else:
                    self.journal = Journal(self.config.audit, worker=self.worker)
            except JournalError as e:
                raise ConfigError(f"{self.config.source or 'config'}: audit: {e}") from None
            try:
                self.recorder = JournalRecorder(self.journal)
            except ContentKeyError as e:  # capture redacted/full: the content key folder is unusable
                raise ConfigError(f"{self.config.source or 'config'}: audit.retention.key_dir: {e}") from None

    def _check_quota_tiers(self) -> None:
        """A ``quota`` rule naming a tier ``quotas.tiers`` lacks is a start-up error (at run time such a
        request would be refused: 503 ``quota_tier_unknown``)."""
        q = self.config.quotas
        rules = getattr(getattr(getattr(self.policy, "active", None), "engine", None), "rules", ()) or ()
        for r in rules:
            if q is not None and r.eft == "quota" and r.profile not in ("", "-") and r.profile not in q.tiers:
                raise ConfigError(
                    f"{r.loc}: the quota rule selects tier {r.profile!r}, which quotas.tiers does not define"
                )

    def _load_screens(self) -> Callable[[str], ScreenSet]:
        from guard.apis import bodies
        from guard.screens.pii.pool import POOL
        from guard.screens.profiles import load_profiles

        POOL.size = self.config.limits.screen_processes
        bodies.HELPER.enabled = self.config.limits.screen_processes > 0  # large bodies read off the GIL
        POOL.priority = bodies.HELPER.priority = self.config.limits.screen_priority  # processes started from now on
        gc_tuning.deferral.max_s = self.config.limits.gc_defer_s
        self.profiles = load_profiles(self.config.filters.dir)
        self._versions["filters"] = reloads.version_of(self._filter_files())
        return self.profiles.screens

    def _filter_files(self) -> list[Path]:
        d = Path(self.config.filters.dir)
        return sorted(d.glob("*.yaml")) if d.is_dir() else [d]

    def _tls_versioned(self) -> list[Path]:
        """The TLS files a version covers: not the private key (nothing derived from it goes to the journal)."""
        key = self.config.tls.key
        return [p for p in _tls_files(self.config) if p != key]

    def _hook_policy_reload(self, holder: Any) -> None:
        """Every reload (file watcher, SIGHUP, admin) leaves an audit event."""
        inner = holder.reload

        def reload() -> tuple[bool, str]:
            ok, err = inner()
            self._record_reload(ok, err)
            trigger, self._policy_trigger = self._policy_trigger, "watch"
            e = reloads.record("policy", ok, holder.version, [Path(f) for f in holder.watched_files()], trigger, err)
            self._append_sync(e)
            return ok, err

        holder.reload = reload

    def _record_reload(self, ok: bool, err: str) -> None:
        if self.journal is None:
            return
        from guard.audit import event as ev

        p = self.policy
        shadow = p.shadow.version if getattr(p, "shadow", None) else None
        e = (
            ev.policy_reloaded(p.version, len(getattr(p.active, "rules", []) or []), "reload", shadow)
            if ok
            else ev.policy_reload_failed(err, p.version, "reload")
        )
        self._append_sync(e)

    def _append_sync(self, e: dict[str, Any]) -> None:
        if self.journal is None:
            return
        try:
            self.journal.append_sync(e)
        except Exception as x:
            log.error("could not record %s: %s", e["type"], x)

    async def _append(self, e: dict[str, Any]) -> None:
        if self.journal is None:
            return
        try:
            await self.journal.append(e)
        except Exception as x:
            log.error("could not record %s: %s", e["type"], x)

    def services(self) -> Services:
        from guard.app import build_services

        assert self._screens is not None
        self.services_built = build_services(
            self.config, self.policy, self.recorder, self._screens, self.clock, self.tracing
        )
        return self.services_built

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.journal is not None:
            from guard.audit import event as ev

            src = self.config.source
            digest = hashlib.sha256(src.read_bytes()).hexdigest() if src and src.exists() else ""
            summary = {
                "upstreams": sorted(self.config.upstreams),
                "routes": len(self.config.routes),
                "workers": self.config.workers,
            }
            await self.journal.append(ev.config_loaded(str(src or ""), digest, summary))
            await self.journal.append(ev.guard_started(__version__, self.worker, os.getpid()))
            if self.config.audit.sinks and self.worker == 0:
                from guard.audit import Forwarder

                self.forwarder = Forwarder(self.config.audit)
                self.forwarder.start()
            if (self.config.audit.witnesses or self.config.audit.timestamp) and self.worker == 0:
                from guard.audit.notary import Notary

                self.notary = Notary(self.config.audit)
                self.notary.start()
        if hasattr(self.policy, "start_watching"):
            self.policy.start_watching()
        if self.config.policy.watch:
            self._watch_task = asyncio.ensure_future(self._watch_files())

    def _watched(self) -> list[Path]:
        """TLS files and screening profiles: certificate managers rotate them; Kubernetes cannot send SIGHUP."""
        files = _tls_files(self.config)
        d = Path(self.config.filters.dir)
        return files + (sorted(d.glob("*.yaml")) if d.is_dir() else [])

    def _fingerprint(self) -> tuple[tuple[str, int | None, int | None], ...]:
        out: list[tuple[str, int | None, int | None]] = []
        for p in self._watched():
            try:
                st = p.stat()
                out.append((str(p), st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((str(p), None, None))
        return tuple(out)

    async def _watch_files(self, interval: float | None = None) -> None:
        interval = interval or self.config.policy.watch_interval_s
        seen = self._fingerprint()
        while True:
            await asyncio.sleep(interval)
            now = self._fingerprint()
            if now != seen:
                await asyncio.sleep(interval)  # let a half-written file finish
                seen = self._fingerprint()
                log.info("TLS or filter files changed: reloading")
                await self.reload(policy=False, trigger="watch")

    async def stop(self, reason: str = "shutdown") -> None:
        if getattr(self, "_watch_task", None) is not None:
            self._watch_task.cancel()
        if hasattr(self.policy, "stop_watching"):
            await asyncio.to_thread(self.policy.stop_watching)
        if self.journal is not None:
            from guard.audit import event as ev

            try:
                await self.journal.append(ev.guard_stopped(reason, self.worker, os.getpid()))
            except Exception as e:
                log.error("could not record guard.stopped: %s", e)
            await asyncio.to_thread(self.journal.close)
        if self.forwarder is not None:
            await asyncio.to_thread(self.forwarder.stop)
        if self.notary is not None:  # after the journal's final checkpoint: it is notarized too
            await asyncio.to_thread(self.notary.stop)
        if self.profiles is not None:
            await self.profiles.close()

    async def readiness(self) -> dict[str, bool]:
        checks = {
            "policy": self.policy is not None,
            "journal": self.journal.healthy if self.journal is not None else True,
            "upstream": await self._any_upstream_reachable(),
        }
        if self.notary is not None:  # notary_on_failure: block (always true with "continue")
            checks["audit_notary"] = self.notary.healthy
        return checks

    async def _any_upstream_reachable(self) -> bool:
        from urllib.parse import urlsplit

        for up in self.config.upstreams.values():
            u = urlsplit(up.url)
            port = u.port or (443 if u.scheme == "https" else 80)
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection(u.hostname, port), 1.0)
                w.close()
                return True
            except (TimeoutError, OSError):
                continue
        return False

    async def reload(self, policy: bool = True, trigger: str = "signal") -> dict[str, Any]:
        """SIGHUP / POST /admin/reload / a watched file: policy, screening profiles, TLS files. Each part keeps
        its old state when its new files are broken; every part's reload is logged, counted and audited
        (guard.reloads). A TLS reload makes a new context: no TLS session from before it resumes, and
        connections opened before it are checked against the new CRLs at their next request."""
        result: dict[str, Any] = {"ok": True}
        if policy and hasattr(self.policy, "reload"):
            self._policy_trigger = trigger
            ok, err = await asyncio.to_thread(self.policy.reload)
            result["policy"] = "reloaded" if ok else f"kept old: {err}"
            result["ok"] &= ok
        if self.profiles is not None:
            files = self._filter_files()
            try:
                from guard.screens.profiles import load_profiles

                new = await asyncio.to_thread(load_profiles, self.config.filters.dir)
                self.profiles.replace(new)
                self._versions["filters"] = reloads.version_of(files)
                result["filters"] = "reloaded"
                await self._append(reloads.record("filters", True, self._versions["filters"], files, trigger))
            except Exception as e:
                telemetry.POLICY_RELOADS.labels("failed").inc()
                result["filters"] = f"kept old: {e}"
                result["ok"] = False
                await self._append(
                    reloads.record("filters", False, self._versions.get("filters", ""), files, trigger, str(e))
                )
        if self.config.tls.enabled:
            files = _tls_files(self.config)
            try:
                self.tls.replace(*_tls_material(self.config))
                self._versions["tls"] = reloads.version_of(self._tls_versioned())
                result["tls"] = "reloaded"
                await self._append(reloads.record("tls", True, self._versions["tls"], files, trigger))
            except TLSFileError as e:
                result["tls"] = f"kept old: {e}"
                result["ok"] = False
                await self._append(
                    reloads.record(
                        "tls", False, self._versions.get("tls", ""), files, trigger, e.reason, e.path, e.line
                    )
                )
        return result
