"""`audit:` section of guard.yaml (owned by the audit package)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SinkSettings(BaseModel):
    """One SIEM destination fed from the journal through its own persisted cursor."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    type: Literal["splunk_hec", "syslog", "relp", "webhook", "file", "otlp"]
    format: Literal["json", "ocsf", "cef", "ecs"] = "json"
    url: str | None = None  # splunk_hec (base URL or full /services/collector/event URL), webhook, otlp (/v1/logs)
    host: str | None = None  # syslog, relp
    port: int | None = Field(None, ge=1, le=65535)  # syslog (default 6514 with TLS, 601 without), relp (2514)
    path: Path | None = None  # file
    token_env: str | None = None  # splunk_hec: env var holding the HEC token; otlp: a bearer token (optional)
    secret_env: str | None = None  # webhook: env var holding the HMAC-SHA256 secret
    tls: bool = False  # syslog over TLS (RFC 5425), relp over TLS; HTTPS sinks use TLS from the URL scheme
    ca: Path | None = None  # CA bundle to verify the server (system store when unset); verification is always on
    batch_size: int = Field(500, ge=1, le=100_000)
    timeout_s: float = Field(10.0, gt=0)
    backoff_min_s: float = Field(0.2, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    replay_window_s: float = Field(2.0, ge=0)  # syslog: unacknowledged TCP data re-sent after a reconnect
    index: str | None = None  # splunk_hec
    sourcetype: str = "guard:audit"  # splunk_hec

    @model_validator(mode="after")
    def _needs(self) -> SinkSettings:
        need = {
            "splunk_hec": ("url", "token_env"),
            "webhook": ("url", "secret_env"),
            "syslog": ("host",),
            "relp": ("host",),
            "file": ("path",),
            "otlp": ("url",),
        }[self.type]
        missing = [k for k in need if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"sink {self.name!r} ({self.type}) needs {', '.join(missing)}")
        return self


class TimestampSettings(BaseModel):
    """``audit.timestamp``: an RFC 3161 time-stamping authority for every checkpoint (guard/audit/tsa.py)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://")
    ca: Path  # PEM: the TSA's root certificate (intermediates may follow in the same file)
    timeout_s: float = Field(5.0, gt=0, le=120)
    hash: Literal["sha256", "sha512"] = "sha256"


class WitnessSettings(BaseModel):
    """One entry of ``audit.witnesses``: a C2SP tlog-witness that cosigns checkpoints (guard/audit/witnessing.py)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://")  # submission prefix; /add-checkpoint is appended
    key: str  # the witness's vkey: <name>+<key id>+<base64(0x04 || Ed25519 public key)> (witness-keygen)
    ca: Path | None = None  # https: CA bundle for the witness's certificate (system store when unset)
    timeout_s: float = Field(5.0, gt=0, le=120)

    @field_validator("key")
    @classmethod
    def _vkey(cls, v: str) -> str:
        from guard.audit.cosign import NoteError, WitnessKey

        try:
            WitnessKey.parse(v)
        except NoteError as e:
            raise ValueError(f"{e} (`guard audit witness-keygen` writes one)") from None
        return v


class RetentionSettings(BaseModel):
    """How long the journal keeps what (``guard audit prune``; audit/README.md "Retention tiers")."""

    model_config = ConfigDict(extra="forbid")
    metadata_days: int = Field(183, ge=1)  # events (who, when, model, decisions, finding types): >= 6 months
    content_days: int = Field(30, ge=1)  # captured texts (capture redacted/full): their period keys are destroyed
    key_dir: Path | None = None  # content keys, one file per UTC day (default <dir>/keys/content)

    @model_validator(mode="after")
    def _content_shorter(self) -> RetentionSettings:
        if self.content_days > self.metadata_days:
            raise ValueError(f"content_days ({self.content_days}) must not exceed metadata_days ({self.metadata_days})")
        return self


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Path = Path("var/audit")
    signing_key: Path | None = None  # Ed25519 private key PEM; generated beside the journal when unset
    durability: Literal["fsync", "batch"] = "fsync"
    # Where events are sealed and written: "process" (a sealer process beside each worker, so signing runs
    # on another core), "thread" (the worker's own journal thread; signing then shares the event loop's
    # core) or "auto": process when there are at least two usable CPUs per worker, else thread (a sealer
    # process per worker on a box without cores to spare only adds hand-offs: tests/bench, README).
    sealer: Literal["auto", "process", "thread"] = "auto"

    def sealer_for(self, workers: int) -> Literal["process", "thread"]:
        """What ``sealer`` means for a server of ``workers`` workers on this machine."""
        if self.sealer != "auto":
            return self.sealer
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return "process" if cpus >= 2 * max(1, workers) else "thread"

    batch_window_ms: float = Field(50.0, gt=0, le=10_000)  # durability=batch: max delay before fsync
    # durability=fsync: "overlap" makes exchange.started durable while the model works and releases the answer
    # only once it is; "before_forward": no prompt leaves before its record is durable (audit/INTEGRITY.md).
    start_record: Literal["overlap", "before_forward"] = "overlap"
    retention: RetentionSettings = RetentionSettings()
    capture: Literal["none", "hash", "redacted", "full"] = "hash"
    hash_key_file: Path | None = None  # capture=hash: HMAC key file (generated in dir/keys when unset)
    hash_key_env: str | None = None  # capture=hash: env var holding the HMAC key (wins over the file)
    # Chain id template: {host}, {worker} (the server's worker index), {pid}. Keep it stable across restarts
    # (no {pid}) so a restarted worker continues its chain; it must differ between concurrent workers.
    writer_id: str = "{host}-w{worker}"
    checkpoint_events: int = Field(1000, ge=1)  # signed audit.checkpoint every N events ...
    checkpoint_seconds: float = Field(10.0, gt=0)  # ... or T seconds, whichever first
    segment_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    segment_max_seconds: float = Field(3600.0, gt=0)
    sinks: list[SinkSettings] = []
    # Trusted time and witnesses for checkpoints (guard/audit/notary.py, docs/witness.md): each new checkpoint
    # gets an RFC 3161 token and K witness cosignatures, stored beside it (witnessed.log). On failure the
    # checkpoint stays, verify reports what is missing and guard_audit_notary_failures_total counts it;
    # notary_on_failure "block" also makes /readyz fail until a checkpoint is notarized again.
    timestamp: TimestampSettings | None = None
    witnesses: list[WitnessSettings] = []
    witness_quorum: int | None = Field(None, ge=1)  # cosignatures required (default: every configured witness)
    notary_on_failure: Literal["continue", "block"] = "continue"

    @field_validator("writer_id")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(host="h", worker=0, pid=1)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"writer_id may use only {{host}}, {{worker}}, {{pid}}: {e}") from None
        return v

    @model_validator(mode="after")
    def _unique_sinks(self) -> AuditSettings:
        names = [s.name for s in self.sinks]
        if len(names) != len(set(names)):
            raise ValueError("audit sink names must be unique")
        if self.witness_quorum is not None and self.witness_quorum > len(self.witnesses):
            raise ValueError(f"witness_quorum {self.witness_quorum} is more than the {len(self.witnesses)} witnesses")
        return self

    @property
    def quorum(self) -> int:
        return len(self.witnesses) if self.witness_quorum is None else self.witness_quorum

    def content_key_dir(self) -> Path:
        return self.retention.key_dir or self.dir / "keys" / "content"

    def resolve(self, base: Path) -> None:
        fix = lambda p: p if p.is_absolute() else base / p  # noqa: E731
        self.dir = fix(self.dir)
        if self.signing_key:
            self.signing_key = fix(self.signing_key)
        if self.hash_key_file:
            self.hash_key_file = fix(self.hash_key_file)
        if self.timestamp:
            self.timestamp.ca = fix(self.timestamp.ca)
        for w in self.witnesses:
            if w.ca:
                w.ca = fix(w.ca)
        if self.retention.key_dir:
            self.retention.key_dir = fix(self.retention.key_dir)
        for s in self.sinks:
            if s.path:
                s.path = fix(s.path)
            if s.ca:
                s.ca = fix(s.ca)
