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
    ("spend_per_day", 86_400.0, "spend"),
    ("spend_per_month", 30 * 86_400.0, "spend"),
)
SPEND_UNIT = 1_000_000  # spend is counted in millionths of the price table's currency
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
    spend_per_day: float | None = Field(None, gt=0)  # in the currency of ``quotas.prices``
    spend_per_month: float | None = Field(None, gt=0)

    def rates(self) -> list[tuple[str, int, float, str]]:
        """(counter, limit, period_s, kind) of the rate limits this tier sets."""
        out = []
        for name, period, kind in RATES:
            v = getattr(self, name)
            if v is not None:
                out.append((name, max(1, round(v * SPEND_UNIT)) if kind == "spend" else int(v), period, kind))
        return out

    def counts_tokens(self) -> bool:
        return any(kind in ("tokens", "spend") for _, _, _, kind in self.rates())

    def counts_spend(self) -> bool:
        return self.spend_per_day is not None or self.spend_per_month is not None


class Price(BaseModel):
    """Price of a million tokens, in one currency across the table."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class QuotaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = "memory"  # memory | redis://[user:pass@]host:port/db | rediss://... | unix:///path
    on_error: Literal["block", "allow"] = "block"  # the backend cannot answer: refuse (503) or admit, marked
    tiers: dict[str, Tier] = {}
    prices: dict[str, Price] = {}  # model glob -> price per million tokens; first match in file order
    timeout_ms: int = Field(250, ge=1, le=10_000)  # per backend call; past it the backend counts as down
    lease_s: float = Field(900.0, gt=0)  # a concurrency slot a crashed replica never released frees after this
    key_prefix: str = "guard:q"  # Redis key prefix (several Guard deployments may share one Redis)
    completion_estimate: int = Field(0, ge=0)  # tokens reserved for an answer when max_tokens is not given

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v == "memory" or (v.split("://", 1)[0] in ("redis", "rediss", "unix") and "://" in v):
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
        spend = [n for n, t in self.tiers.items() if t.counts_spend()]
        if spend and not self.prices:
            raise ValueError(
                f"prices: tier {spend[0]!r} sets a spend limit, so a price table is needed "
                "(model glob -> {input, output} per million tokens)"
            )
        return self

    def price(self, model: str) -> Price | None:
        import fnmatch

        for glob, p in self.prices.items():
            if fnmatch.fnmatchcase(model, glob):
                return p
        return None

    def redacted_backend(self) -> str:
        """The backend URL without its password (for status output and logs)."""
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.backend)
