"""Counters in this process's memory: GCRA rate counters and leased concurrency slots.

Exact within one process: the event loop runs one admission at a time and an admission never awaits, so
check-and-update is atomic. It cannot see other processes (``workers > 1`` or replicas): Guard refuses the
``memory`` backend with ``workers > 1`` at load (guard.config); use Redis there.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_ENTRIES = 100_000  # counters kept; past it, fully recovered ones are dropped (bounded memory)
_EPS = 1e-9


@dataclass(slots=True)
class CounterState:
    limit: int
    remaining: int
    reset_s: float  # seconds until the counter is back to its full limit


@dataclass(slots=True)
class Admission:
    ok: bool
    refused_by: str = ""  # the counter that refused
    retry_after_s: float = 0.0
    counters: dict[str, CounterState] = field(default_factory=dict)


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
        self._tat: dict[tuple[str, str, str], float] = {}
        self._slots: dict[tuple[str, str, str], dict[str, float]] = {}
        self._labels: dict[str, str] = {}

    @property
    def healthy(self) -> bool:
        return True

    async def admit(self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str, lease_s: float,
                    label: str) -> Admission:
        now = self.clock()
        adm = Admission(True)
        counters = adm.counters
        tats = self._tat
        news: list[tuple[tuple[str, str, str], float, float]] = []  # key, tat before, tat after
        for name, limit, period, cost in rates:
            k = (key, tier, name)
            interval = period / limit
            tat = tats.get(k, now)
            tat = max(tat, now)
            new = tat + cost * interval
            ahead = new - now
            if ahead > period + _EPS and adm.ok:
                adm.ok, adm.refused_by, adm.retry_after_s = False, name, ahead - period
            counters[name] = CounterState(limit, max(0, int((period - ahead) / interval + _EPS)), ahead)
            news.append((k, tat, new))
        for name, limit in slots:
            k = (key, tier, name)
            held = self._slots.get(k) or {}
            if held:
                for t in [t for t, exp in held.items() if exp <= now]:
                    del held[t]
            counters[name] = CounterState(limit, max(0, limit - len(held) - 1), 0.0)
            if len(held) + 1 > limit and adm.ok:
                adm.ok, adm.refused_by, adm.retry_after_s = False, name, 1.0
        if not adm.ok:  # nothing was charged: report the counters as they stand
            for (_k, tat, _), (name, limit, period, _) in zip(news, rates, strict=False):
                interval = period / limit
                counters[name] = CounterState(limit, max(0, int((period - (tat - now)) / interval + _EPS)), tat - now)
            for name, _ in slots:
                st = counters[name]
                st.remaining = min(st.limit, st.remaining + 1)
            return adm
        for k, _, new in news:
            tats[k] = new
        for name, _ in slots:
            self._slots.setdefault((key, tier, name), {})[ticket] = now + lease_s
        self._labels[key] = label
        if len(tats) > MAX_ENTRIES:
            self._prune(now)
        return adm

    async def settle(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str) -> None:
        """Correct token counters by ``cost`` (actual minus reserved; negative gives back) and free the
        ticket's concurrency slots."""
        now = self.clock()
        for name, limit, period, delta in rates:
            k = (key, tier, name)
            tat = self._tat.get(k, now)
            new = (max(tat, now) if delta > 0 else tat) + delta * period / limit
            if new <= now:
                self._tat.pop(k, None)
            else:
                self._tat[k] = new
        for name in slots:
            held = self._slots.get((key, tier, name))
            if held is not None:
                held.pop(ticket, None)
                if not held:
                    del self._slots[(key, tier, name)]

    async def usage(self, key: str | None) -> list[tuple[str, str, str, float]]:
        """(principal, tier, counter, value): value is seconds until full for rate counters, slots held for
        concurrency counters."""
        now = self.clock()
        out = []
        for (k, tier, name), tat in list(self._tat.items()):
            if (key is None or k == key) and tat > now:
                out.append((self._labels.get(k, k), tier, name, tat - now))
        for (k, tier, name), held in list(self._slots.items()):
            if key is None or k == key:
                out.append((self._labels.get(k, k), tier, name, float(sum(1 for e in held.values() if e > now))))
        return out

    def _prune(self, now: float) -> None:
        for k in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[k]
        for k in [k for k, held in self._slots.items() if all(e <= now for e in held.values())]:
            del self._slots[k]

    async def close(self) -> None:
        pass
