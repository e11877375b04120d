"""Counters in this process's memory: GCRA rate counters and leased concurrency slots.

Exact within one process: the event loop runs one admission at a time and an admission never awaits, so
check-and-update is atomic. With ``workers > 1`` one keeper process runs it for all workers
(guard.quota.local); replicas on other hosts need Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

MAX_ENTRIES = 100_000  # counters kept; past it, fully recovered ones are dropped (bounded memory)
_EPS = 1e-9


class CounterState(NamedTuple):
    limit: int
    remaining: int
    reset_s: float  # seconds until the counter is back to its full limit


@dataclass(slots=True)
class Admission:
    ok: bool
    refused_by: str = ""  # the counter that refused
    retry_after_s: float = 0.0
    counters: dict[str, CounterState] = field(default_factory=dict)


_state = tuple.__new__  # CounterState without its generated __new__ (on every admission, for every counter)

# A rate request: (counter, limit, period_s, cost); a concurrency request: (counter, limit).
Rate = tuple[str, int, float, int]
Slot = tuple[str, int]
# A rate counter as the in-process path passes it, computed once per tier: (counter, limit, period_s,
# period_s / limit, kind, reported), where kind indexes the request's costs: (requests, tokens, spend), and
# reported says whether an admission returns its state (the counters the rate-limit headers show).
Spec = tuple[str, int, float, float, int, bool]


def _specs(rates: list[Rate]) -> tuple[list[Spec], list[int]]:
    return [(n, lim, per, per / lim, i, True) for i, (n, lim, per, _) in enumerate(rates)], [r[3] for r in rates]


def used(ahead_s: float, limit: int, period: float) -> int:
    """How much of a rate counter is in use when its bucket is full again in ``ahead_s`` seconds."""
    return min(limit, math.ceil(max(0.0, ahead_s) / (period / limit) - _EPS)) if ahead_s > 0 else 0


class MemoryBackend:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[tuple[str, str], dict[str, float]] = {}  # (principal, tier) -> counter -> TAT
        self._slots: dict[tuple[str, str, str], dict[str | int, float]] = {}  # -> ticket -> lease end
        self._labels: dict[str, str] = {}

    @property
    def healthy(self) -> bool:
        return True

    async def admit(
        self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str | int, lease_s: float, label: str
    ) -> Admission:
        return self.admit_now(key, tier, rates, slots, ticket, lease_s, label)

    async def settle(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str | int) -> None:
        self.settle_now(key, tier, rates, slots, ticket)

    def admit_now(
        self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str | int, lease_s: float, label: str
    ) -> Admission:
        """Check every counter; charge them all only if all admit. Never yields: atomic in the event loop."""
        specs, costs = _specs(rates)
        return self.admit_specs(key, tier, specs, costs, slots, ticket, lease_s, label)

    def settle_now(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str | int) -> None:
        """Correct token counters by ``cost`` (actual minus reserved; negative gives back) and free the
        ticket's concurrency slots."""
        specs, deltas = _specs(rates)
        self.settle_specs(key, tier, specs, deltas, slots, ticket)

    def admit_specs(
        self,
        key: str,
        tier: str,
        specs: Sequence[Spec],
        costs: Sequence[int],
        slots: list[Slot],
        ticket: str | int,
        lease_s: float,
        label: str,
    ) -> Admission:
        """``admit_now`` with the tier's counters computed once and the request's costs by kind. Each counter
        is charged as it is checked; a refusal gives back what was charged before it. An admission returns the
        state of the reported rate counters; a refusal, of every counter."""
        now = self.clock()
        counters: dict[str, CounterState] = {}
        tats = self._tat.get((key, tier))
        if tats is None and specs:
            tats = self._tat[(key, tier)] = {}
            if len(self._tat) > MAX_ENTRIES:
                self._prune(now)
        charged = 0
        for name, limit, period, interval, kind, reported in specs:
            tat = tats.get(name, now)  # type: ignore[union-attr]
            if tat < now:
                tat = now
            ahead = tat + costs[kind] * interval - now
            if ahead > period + _EPS:
                return self._refuse(now, key, tier, specs, costs, charged, slots, name, ahead - period)
            tats[name] = now + ahead  # type: ignore[index]
            charged += 1
            if reported:
                rem = int((period - ahead) / interval + _EPS)
                counters[name] = _state(CounterState, (limit, rem if rem > 0 else 0, ahead))
        if slots:
            all_slots = self._slots
            helds = []
            for name, limit in slots:
                held = all_slots.get((key, tier, name))
                if held is None:
                    held = all_slots[(key, tier, name)] = {}
                n = len(held)
                if n >= limit:  # full: leases past their time (a crashed holder) free their slots
                    for t in [t for t, exp in held.items() if exp <= now]:
                        del held[t]
                    n = len(held)
                    if n >= limit:
                        return self._refuse(now, key, tier, specs, costs, charged, slots, name, 1.0)
                helds.append(held)
            expires = now + lease_s
            for held in helds:
                held[ticket] = expires
        if label != key and self._labels.get(key) != label:  # how ``usage`` shows the key, when not as itself
            self._labels[key] = label
        return Admission(True, "", 0.0, counters)

    def _refuse(
        self,
        now: float,
        key: str,
        tier: str,
        specs: Sequence[Spec],
        costs: Sequence[int],
        charged: int,
        slots: list[Slot],
        refused_by: str,
        retry: float,
    ) -> Admission:
        """Give back the first ``charged`` rate charges (a counter that was past its time reads as it did);
        the refusal, with every counter as it stands."""
        tats = self._tat.get((key, tier)) or {}
        counters: dict[str, CounterState] = {}
        for i, (name, limit, period, interval, kind, _) in enumerate(specs):
            if i < charged:
                tats[name] -= costs[kind] * interval
            before = max(0.0, tats.get(name, now) - now)
            counters[name] = CounterState(limit, max(0, int((period - before) / interval + _EPS)), before)
        for name, limit in slots:
            held = self._slots.get((key, tier, name))
            counters[name] = CounterState(limit, max(0, limit - (len(held) if held else 0)), 0.0)
        return Admission(False, refused_by, retry, counters)

    def settle_specs(
        self, key: str, tier: str, specs: Sequence[Spec], deltas: Sequence[int], slots: list[str], ticket: str | int
    ) -> None:
        """``settle_now`` with the tier's counters computed once and the corrections by kind (0: none)."""
        if specs:
            now = self.clock()
            tats = self._tat.get((key, tier))
            if tats is None:
                tats = self._tat[(key, tier)] = {}
            for name, _, _, interval, kind, _ in specs:
                delta = deltas[kind]
                if not delta:
                    continue
                tat = tats.get(name, now)
                new = (tat if tat > now or delta < 0 else now) + delta * interval
                if new <= now:
                    tats.pop(name, None)
                else:
                    tats[name] = new
        for name in slots:  # an emptied slot map stays for the principal's next request (pruned with the rest)
            held = self._slots.get((key, tier, name))
            if held is not None:
                held.pop(ticket, None)

    async def usage(self, key: str | None) -> list[tuple[str, str, str, float]]:
        return self.usage_now(key)

    def usage_now(self, key: str | None) -> list[tuple[str, str, str, float]]:
        """(principal, tier, counter, value): value is seconds until full for rate counters, slots held for
        concurrency counters."""
        now = self.clock()
        out = []
        for (k, tier), tats in list(self._tat.items()):
            if key is None or k == key:
                out += [(self._labels.get(k, k), tier, name, tat - now) for name, tat in tats.items() if tat > now]
        for (k, tier, name), held in list(self._slots.items()):
            if held and (key is None or k == key):
                out.append((self._labels.get(k, k), tier, name, float(sum(1 for e in held.values() if e > now))))
        return out

    def _prune(self, now: float) -> None:
        for k in [k for k, tats in self._tat.items() if all(tat <= now for tat in tats.values())]:
            del self._tat[k]
        for ks in [ks for ks, held in self._slots.items() if all(e <= now for e in held.values())]:
            del self._slots[ks]

    async def close(self) -> None:
        pass
