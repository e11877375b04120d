"""Quotas: admit a request against its tier's counters, settle its real token usage, release its slots.

Rate counters (requests and tokens per minute, day, month) are GCRA token buckets: a tier of N per period
admits a burst of N, then N per period, and a counter is full again ``reset`` seconds after its last use.
Tokens are reserved when a request is admitted (an estimate: the prompt plus the answer's ``max_tokens``)
and corrected with the upstream's usage when it ends; concurrency counters are leased slots.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from guard import telemetry
from guard.quota.memory import Admission, MemoryBackend, Rate, used
from guard.quota.metrics import BACKEND_ERRORS, DECISIONS, count
from guard.quota.plan import TierPlan
from guard.quota.redis_backend import BackendDown, RedisBackend
from guard.quota.settings import RATES, SPEND_UNIT, Price, QuotaSettings, Tier

log = logging.getLogger("guard.quota")


@dataclass(slots=True)
class Ticket:
    """An admitted request: what it reserved and holds until ``settle``/``release``."""

    id: str | int  # unique across replicas where they share the counters; in-process, a number
    key: str
    tier: str
    reserved: int  # tokens reserved at admission
    slots: list[str]
    admission: Admission | None  # None: admitted without the backend (on_error: allow)
    done: bool = False
    price: Price | None = None  # the model's price when the tier has a spend limit
    reserved_spend: int = 0  # millionths of the currency reserved at admission
    plan: Any = None  # the tier's TierPlan (its metric children)

    @property
    def unavailable(self) -> bool:
        return self.admission is None


@dataclass
class Refusal:
    status: int  # 429: a counter is exhausted; 503: the backend could not answer (on_error: block)
    code: str  # rate_limit_exceeded | quota_unavailable | quota_tier_unknown
    tier: str
    counter: str
    retry_after_s: float
    message: str
    admission: Admission | None = None


_TICKETS = os.urandom(6).hex() + "-"  # ticket ids: this process's random prefix and a counter (unique
_ticket_no = itertools.count(1)  # across replicas sharing a Redis, without a system call per request)


def _unknown_tier(tier: str) -> Refusal:
    count(DECISIONS, "unknown", "unavailable_refused", "")
    return Refusal(
        503,
        "quota_tier_unknown",
        tier,
        "",
        0.0,
        "the policy selects a quota tier this gateway does not configure; request refused",
    )


class Quotas:
    def __init__(self, settings: QuotaSettings, backend: Any = None) -> None:
        self.settings = settings
        self.tiers: dict[str, Tier] = dict(settings.tiers)
        # per tier, computed once: its rate counters (name, limit, period, kind) and whether it counts tokens
        self._plan = {name: (t.rates(), t.counts_tokens()) for name, t in self.tiers.items()}
        self._plans = {name: TierPlan(name, t) for name, t in self.tiers.items()}
        self.completion_estimate = settings.completion_estimate
        if backend is None:
            from guard.quota import local

            if settings.backend != "memory":
                backend = RedisBackend(settings.backend, settings.timeout_ms / 1000, settings.key_prefix)
            elif local.SOCKET is not None:  # a worker of several: the supervisor's keeper holds the counters
                backend = local.LocalBackend(local.SOCKET, settings.timeout_ms / 1000)
            else:
                backend = MemoryBackend()
        self.backend = backend
        # the in-process backend answers without yielding: ``admit_now``/``settle_now`` call it directly (no
        # coroutine per call); None for a backend that must be awaited
        self.local: MemoryBackend | None = backend if isinstance(backend, MemoryBackend) else None
        self._lease_s = settings.lease_s

    @property
    def healthy(self) -> bool:
        return bool(self.backend.healthy)

    def counts_tokens(self, tier: str) -> bool:
        plan = self._plan.get(tier)
        return plan is not None and plan[1]

    def _charge(
        self, p: TierPlan, tier: str, estimate: int, model: str, answer_estimate: int
    ) -> tuple[list[Rate], int, Price | None, int] | Refusal:
        """What admission charges each rate counter: (rates, tokens, price, spend), or the refusal of a tier
        that limits spend without a price for the model."""
        cost = estimate if estimate > 1 else 1
        price, spend = None, 0
        if p.spend:
            price = self.settings.price(model)
            if price is None:  # a spend limit with no price for this model: fail closed
                count(DECISIONS, tier, "unavailable_refused", "")
                return Refusal(
                    503,
                    "quota_price_unknown",
                    tier,
                    "",
                    0.0,
                    f"no price for model {model!r} in quotas.prices, and the quota tier limits spend; request refused",
                )
            answer = min(max(0, int(answer_estimate)), cost)
            spend = max(1, spend_of(price, cost - answer, answer))
        rates: list[Rate] = [
            (name, limit, period, 1 if kind == "requests" else cost if kind == "tokens" else spend)
            for name, limit, period, kind in p.rates
        ]
        return rates, cost, price, spend

    def _decided(
        self,
        p: TierPlan,
        principal: str,
        tier: str,
        adm: Admission,
        tid: str | int,
        cost: int,
        stream: bool,
        price: Price | None,
        spend: int,
    ) -> Ticket | Refusal:
        if not adm.ok:
            count(DECISIONS, tier, "refused", adm.refused_by)
            return Refusal(
                429,
                "rate_limit_exceeded",
                tier,
                adm.refused_by,
                adm.retry_after_s,
                _refusal_message(adm, cost, self.tiers[tier]),
                adm,
            )
        p.admitted.inc()
        return Ticket(
            tid, principal, tier, cost if p.counts_tokens else 0, p.slot_names[stream], adm, False, price, spend, p
        )

    def admit_now(
        self, principal: str, tier: str, estimate: int, stream: bool, model: str, answer_estimate: int
    ) -> Ticket | Refusal:
        """``admit`` with the in-process backend (``local`` is set), without a coroutine or a rate list."""
        p = self._plans.get(tier)
        if p is None:
            return _unknown_tier(tier)
        cost = estimate if estimate > 1 else 1
        price, spend = None, 0
        if p.spend:
            charge = self._charge(p, tier, estimate, model, answer_estimate)
            if isinstance(charge, Refusal):
                return charge
            _, cost, price, spend = charge
        tid = next(_ticket_no)  # in-process: unique as it is
        slots = p.stream_slots if stream else p.slots
        adm = self.local.admit_specs(  # type: ignore[union-attr]
            principal, tier, p.specs, (1, cost, spend), slots, tid, self._lease_s, principal
        )
        return self._decided(p, principal, tier, adm, tid, cost, stream, price, spend)

    async def admit(
        self,
        principal: str,
        tier: str,
        estimate: int,
        stream: bool = False,
        *,
        model: str = "",
        answer_estimate: int = 0,
    ) -> Ticket | Refusal:
        """Check and charge every counter of ``tier`` at once: one request, ``estimate`` tokens (of which
        ``answer_estimate`` are the answer's, for the spend price), one concurrency slot (and a stream slot
        for a stream)."""
        if self.local is not None:
            return self.admit_now(principal, tier, estimate, stream, model, answer_estimate)
        p = self._plans.get(tier)
        if p is None:  # the policy names a tier the configuration lacks: fail closed
            return _unknown_tier(tier)
        charge = self._charge(p, tier, estimate, model, answer_estimate)
        if isinstance(charge, Refusal):
            return charge
        rates, cost, price, spend = charge
        tid = f"{_TICKETS}{next(_ticket_no):x}"
        slots = p.stream_slots if stream else p.slots
        try:
            adm = await self.backend.admit(principal, tier, rates, slots, tid, self._lease_s, principal)
        except BackendDown as e:
            count(BACKEND_ERRORS, "admit")
            if self.settings.on_error == "allow":
                count(DECISIONS, tier, "unavailable_allowed", "")
                return Ticket(tid, principal, tier, 0, [], None, plan=p)
            count(DECISIONS, tier, "unavailable_refused", "")
            count(telemetry.FAIL_CLOSED, "quota")
            return Refusal(503, "quota_unavailable", tier, "", 1.0, f"quota service unavailable; request refused ({e})")
        return self._decided(p, principal, tier, adm, tid, cost, stream, price, spend)

    async def extend(self, ticket: Ticket, tokens: int) -> Refusal | None:
        """Charge a running stream's ticket ``tokens`` more answer tokens (guard.quota.stream): None when
        every token and spend counter of its tier admits them (or the backend is down and ``on_error`` is
        ``allow``), else the refusal, with nothing charged."""
        if ticket.done or ticket.unavailable or tokens <= 0:
            return None
        spend = spend_of(ticket.price, 0, tokens) if ticket.price is not None else 0
        rates: list[Rate] = [
            (name, limit, period, tokens if kind == "tokens" else spend)
            for name, limit, period, kind in self._plan[ticket.tier][0]
            if kind != "requests"
        ]
        if not rates:
            return None
        try:
            adm = await self.backend.admit(
                ticket.key, ticket.tier, rates, [], ticket.id, self.settings.lease_s, ticket.key
            )
        except BackendDown as e:
            count(BACKEND_ERRORS, "extend")
            if self.settings.on_error == "allow":
                count(DECISIONS, ticket.tier, "unavailable_allowed", "")
                return None
            count(DECISIONS, ticket.tier, "unavailable_refused", "")
            count(telemetry.FAIL_CLOSED, "quota")
            return Refusal(
                503,
                "quota_unavailable",
                ticket.tier,
                "",
                1.0,
                f"quota service unavailable; the answer was cut short ({e})",
            )
        if not adm.ok:  # counted by the caller, which may ask again for less
            limit = getattr(self.tiers[ticket.tier], adm.refused_by, None)
            return Refusal(
                429,
                "rate_limit_exceeded",
                ticket.tier,
                adm.refused_by,
                adm.retry_after_s,
                f"rate limit reached for {adm.refused_by} ({limit}) during the answer; it was cut short",
                adm,
            )
        ticket.reserved += tokens
        ticket.reserved_spend += spend
        return None

    def _corrections(self, ticket: Ticket, usage: int | tuple[int, int] | None) -> tuple[int, int, int] | None:
        """What settling ``ticket`` corrects, by kind (requests, tokens, spend; None: nothing, the reservation
        stands); marks it done. The caller still frees its slots."""
        ticket.done = True
        p = ticket.plan
        if usage is None or p is None or not p.counts_tokens:
            return None
        i, o = (usage, 0) if isinstance(usage, int) else usage
        delta = int(i) + int(o) - ticket.reserved
        spend_delta = spend_of(ticket.price, i, o) - ticket.reserved_spend if ticket.price is not None else 0
        return (0, delta, spend_delta) if delta or spend_delta else None

    def settle_now(self, ticket: Ticket, usage: int | tuple[int, int] | None) -> None:
        """``settle`` with the in-process backend (``local`` is set), without a coroutine or a rate list."""
        if ticket.done:
            return
        deltas = self._corrections(ticket, usage)
        if ticket.admission is None or (deltas is None and not ticket.slots):
            return
        self.local.settle_specs(  # type: ignore[union-attr]
            ticket.key, ticket.tier, ticket.plan.corrected if deltas else (), deltas or (), ticket.slots, ticket.id
        )

    async def settle(self, ticket: Ticket, usage: int | tuple[int, int] | None) -> None:
        """The request ended having used ``usage`` tokens (input, output; an int counts as input; None: leave
        the reservation as it is); corrects the token and spend counters and frees the ticket's slots."""
        if self.local is not None:
            self.settle_now(ticket, usage)
            return
        if ticket.done:
            return
        deltas = self._corrections(ticket, usage)
        if ticket.admission is None or (deltas is None and not ticket.slots):
            return
        rates: list[Rate] = [
            (name, limit, period, deltas[kind])
            for name, limit, period, _, kind, _ in ticket.plan.corrected
            if deltas is not None and deltas[kind]
        ]
        try:
            await self.backend.settle(ticket.key, ticket.tier, rates, ticket.slots, ticket.id)
        except BackendDown as e:  # slots free themselves after lease_s; the reservation stands
            count(BACKEND_ERRORS, "settle")
            log.warning("quota settle for tier %s failed: %s", ticket.tier, e)

    async def release(self, ticket: Ticket) -> None:
        """Free the ticket's slots and keep its reservation (nothing is known about its usage)."""
        await self.settle(ticket, None)

    async def usage(self, principal: str | None = None) -> dict[str, Any]:
        """Current use per principal and tier (``guard quota show``, GET /admin/quotas)."""
        rows = await self.backend.usage(principal)
        periods = {name: period for name, period, _ in RATES}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for who, tier, counter, value in rows:
            t = self.tiers.get(tier)
            limit = getattr(t, counter, None) if t is not None else None
            if limit is None:
                continue  # a counter of a tier no longer configured
            if counter.startswith("spend_"):
                units = round(limit * SPEND_UNIT)
                n = used(value, units, periods[counter])
                entry = {
                    "limit": limit,
                    "used": n / SPEND_UNIT,
                    "remaining": max(0, units - n) / SPEND_UNIT,
                    "reset_s": round(value, 3),
                }
            elif counter in periods:
                n = used(value, limit, periods[counter])
                entry = {"limit": limit, "used": n, "remaining": max(0, limit - n), "reset_s": round(value, 3)}
            else:
                entry = {"limit": limit, "used": int(value), "remaining": max(0, limit - int(value))}
            out.setdefault(who, {}).setdefault(tier, {})[counter] = entry
        return {
            "backend": self.settings.redacted_backend(),
            "on_error": self.settings.on_error,
            "tiers": {k: v.model_dump(exclude_none=True) for k, v in self.tiers.items()},
            "principals": out,
        }

    async def close(self) -> None:
        await self.backend.close()


def spend_of(price: Price | None, input_tokens: int, output_tokens: int) -> int:
    """Cost in millionths of the price table's currency (prices are per million tokens)."""
    if price is None:
        return 0
    return math.ceil(input_tokens * price.input + output_tokens * price.output)


def _refusal_message(adm: Admission, cost: int, t: Tier) -> str:
    limit = getattr(t, adm.refused_by, None)
    if limit is not None and adm.refused_by.startswith("tokens") and cost > limit:
        return (
            f"rate limit reached: this request needs about {cost} tokens, more than the {adm.refused_by} "
            f"limit of {limit}"
        )
    wait = max(1, round(adm.retry_after_s))
    return f"rate limit reached for {adm.refused_by} ({limit}); retry in {wait} s"


def from_settings(settings: QuotaSettings | None) -> Quotas | None:
    return Quotas(settings) if settings is not None else None
