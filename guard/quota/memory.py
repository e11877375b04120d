"""Counters in this process's memory: GCRA rate counters and leased concurrency slots.

Exact within one process: the event loop runs one admission at a time and an admission never awaits, so
check-and-update is atomic. With ``workers > 1`` one keeper process runs it for all workers
(guard.quota.local); replicas on other hosts need Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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


def used(ahead_s: float, limit: int, period: float) -> int:
    """How much of a rate counter is in use when its bucket is full again in ``ahead_s`` seconds."""
    return min(limit, math.ceil(max(0.0, ahead_s) / (period / limit) - _EPS)) if ahead_s > 0 else 0


class MemoryBackend:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[tuple[str, str], dict[str, float]] = {}  # (principal, tier) -> counter -> TAT
        self._slots: dict[tuple[str, str, str], dict[str, float]] = {}
        self._labels: dict[str, str] = {}

    @property
    def healthy(self) -> bool:
        return True

    async def admit(
        self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str, lease_s: float, label: str
    ) -> Admission:
        return self.admit_now(key, tier, rates, slots, ticket, lease_s, label)

    async def settle(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str) -> None:
        self.settle_now(key, tier, rates, slots, ticket)

    def admit_now(
        self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str, lease_s: float, label: str
    ) -> Admission:
        """Check every counter; charge them all only if all admit. Never yields: atomic in the event loop."""
        now = self.clock()
        counters: dict[str, CounterState] = {}
        ok, refused_by, retry = True, "", 0.0
        kt = (key, tier)
        tats = self._tat.get(kt)
        news: list[float] = []  # tat after charging, per rate
        for name, limit, period, cost in rates:
            interval = period / limit
            tat = tats.get(name, now) if tats else now
            if tat < now:
                tat = now
            new = tat + cost * interval
            ahead = new - now
            if ahead > period + _EPS and ok:
                ok, refused_by, retry = False, name, ahead - period
            rem = int((period - ahead) / interval + _EPS)
            counters[name] = _state(CounterState, (limit, rem if rem > 0 else 0, ahead))
            news.append(new)
        helds = []
        if slots:
            all_slots = self._slots
            for name, limit in slots:
                held = all_slots.get((key, tier, name))
                helds.append(held)
                n = len(held) if held else 0
                if n >= limit and held:  # full: leases past their time (a crashed holder) free their slots
                    for t in [t for t, exp in held.items() if exp <= now]:
                        del held[t]
                    n = len(held)
                counters[name] = _state(CounterState, (limit, limit - n - 1 if n + 1 < limit else 0, 0.0))
                if n + 1 > limit and ok:
                    ok, refused_by, retry = False, name, 1.0
        if not ok:  # nothing was charged: report the counters as they stand
            for (name, limit, period, cost), new in zip(rates, news, strict=False):
                before = new - cost * (period / limit) - now
                counters[name] = CounterState(limit, max(0, int((period - before) / (period / limit) + _EPS)), before)
            for name, limit in slots:
                counters[name] = counters[name]._replace(remaining=min(limit, counters[name].remaining + 1))
            return Admission(False, refused_by, retry, counters)
        if rates:
            if tats is None:
                tats = self._tat[kt] = {}
                if len(self._tat) > MAX_ENTRIES:
                    self._prune(now)
            for (name, _, _, _), new in zip(rates, news, strict=False):
                tats[name] = new
        for (name, _), held in zip(slots, helds, strict=False):
            if held is None:
                held = all_slots[(key, tier, name)] = {}
            held[ticket] = now + lease_s
        if self._labels.get(key) != label:
            self._labels[key] = label
        return Admission(True, "", 0.0, counters)

    def settle_now(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str) -> None:
        """Correct token counters by ``cost`` (actual minus reserved; negative gives back) and free the
        ticket's concurrency slots."""
        now = self.clock()
        if rates:
            tats = self._tat.get((key, tier))
            if tats is None:
                tats = self._tat[(key, tier)] = {}
            for name, limit, period, delta in rates:
                tat = tats.get(name, now)
                new = (max(tat, now) if delta > 0 else tat) + delta * period / limit
                if new <= now:
                    tats.pop(name, None)
                else:
                    tats[name] = new
        for name in slots:
            held = self._slots.get((key, tier, name))
            if held is not None:
                held.pop(ticket, None)
                if not held:
                    del self._slots[(key, tier, name)]

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
            if key is None or k == key:
                out.append((self._labels.get(k, k), tier, name, float(sum(1 for e in held.values() if e > now))))
        return out

    def _prune(self, now: float) -> None:
        for k in [k for k, tats in self._tat.items() if all(tat <= now for tat in tats.values())]:
            del self._tat[k]
        for ks in [ks for ks, held in self._slots.items() if all(e <= now for e in held.values())]:
            del self._slots[ks]

    async def close(self) -> None:
        pass
