"""`quotas:` section of guard.yaml (owned by the quota package)."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# (counter, period in seconds, what it counts): the rate counters a tier may set.
RATES: tuple[tuple[str, float, str], ...] = (
    ("requests_per_minute", 60.0, "requests"),
    ("tokens_per_minute", 60.0, "tokens"),
    ("tokens_per_day", 86_400.0, "tokens"),
    ("tokens_per_month", 30 * 86_400.0, "tokens"),
)
CONCURRENCY = ("concurrent", "concurrent_streams")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Tier(BaseModel):
    """Limits of one tier; an unset limit is not enforced."""

    model_config = ConfigDict(extra="forbid")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    tokens_per_month: int | None = Field(None, ge=1)
    concurrent: int | None = Field(None, ge=1)
    concurrent_streams: int | None = Field(None, ge=1)

    def rates(self) -> list[tuple[str, int, float, str]]:
        """(counter, limit, period_s, kind) of the rate limits this tier sets."""
        out = []
        for name, period, kind in RATES:
            v = getattr(self, name)
            if v is not None:
                out.append((name, int(v), period, kind))
        return out

    def counts_tokens(self) -> bool:
        return any(kind == "tokens" for _, _, _, kind in self.rates())


class QuotaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = "memory"  # memory | redis://[user:pass@]host:port/db | rediss://... | unix:///path
    on_error: Literal["block", "allow"] = "block"  # the backend cannot answer: refuse (503) or admit, marked
    tiers: dict[str, Tier] = {}
    timeout_ms: int = Field(250, ge=1, le=10_000)  # per backend call; past it the backend counts as down
    lease_s: float = Field(900.0, gt=0)  # a concurrency slot a crashed replica never released frees after this
    key_prefix: str = "guard:q"  # Redis key prefix (several Guard deployments may share one Redis)
    completion_estimate: int = Field(0, ge=0)  # tokens reserved for an answer when max_tokens is not given

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v == "memory" or v.split("://", 1)[0] in ("redis", "rediss", "unix") and "://" in v:
            return v
        raise ValueError('must be "memory" or a redis://, rediss:// or unix:// URL')

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: dict[str, Tier]) -> dict[str, Tier]:
        for name in v:
            if not _NAME.match(str(name)):
                raise ValueError(f"tier name {name!r} must be letters, digits, _ . - (at most 64)")
        if v and "default" not in v:
            raise ValueError("must define the tier 'default' (the tier of a request no quota rule selects)")
        return v

    @model_validator(mode="after")
    def _some(self) -> QuotaSettings:
        if not self.tiers:
            raise ValueError("tiers: define at least the tier 'default'")
        return self

    def redacted_backend(self) -> str:
        """The backend URL without its password (for status output and logs)."""
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.backend)
