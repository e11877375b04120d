"""Garbage-collector settings for Guard's long-running processes (workers and sealers).

A request allocates a few hundred container objects and frees nearly all of them by reference counting, but
CPython's default gen0 threshold (700 net allocations) is crossed by the transient peak of a few dozen
exchanges in flight, so the collector ran about 250 times a second under load, and each pass over the older
generations also walked every object made at start-up (modules, config, policy, screens). Measured in
tests/bench (README, "Performance"): about 1 s of collection in a 13 s load run, 10-15% of throughput.

``tune()`` is called once the process has loaded what it keeps for its lifetime:
- ``gc.freeze()`` moves everything alive then into the permanent generation, which collections skip;
  reference counting still frees those objects. Objects replaced later by a reload are not frozen; start-up
  objects that a reload turns into cyclic garbage stay allocated (once: later loads are not frozen).
- the gen0 threshold goes to ``GEN0_THRESHOLD``: cycles (rare on the request path) are still collected, after
  that many net allocations instead of 700; the older generations keep their ratios.

Large bodies: a megabyte of small messages is tens of thousands of tracked objects (the parsed body, one
segment per message, the conversation the safety screen reads) that live for the whole request. Every
collection while they live walks them all, holding the GIL: 2-12 ms for the youngest generation, 10-45 ms
for the older ones, several times per such request, and every other client's request waits them out (on
the hostile-input benchmark, the ordinary p99 followed the collector's pauses). So while a request with a
body over ``guard.stages.base.LARGE_BODY`` is in flight, automatic collection is off (``defer``/``resume``,
counted across concurrent requests): those objects, and nearly all others, are freed by reference counting
all the same; only cyclic garbage waits. It waits at most ``limits.gc_defer_s`` (default ``DEFER_MAX_S``;
0 turns this off): a large request starting or ending after that long runs one full collection (one pause
per that many seconds under unbroken large-body load), and automatic collection is back the moment no large
request is in flight.
"""

from __future__ import annotations

import asyncio
import gc
import time

GEN0_THRESHOLD = 20_000
DEFER_MAX_S = 30.0  # cyclic garbage waits at most this long while large bodies keep the collector off (default)


def tune() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


class _Deferral:
    """Automatic collection off while any large request is in flight (see the module doc). Event-loop
    thread only (the pipeline calls it), so the counter needs no lock."""

    def __init__(self) -> None:
        self.max_s = DEFER_MAX_S  # limits.gc_defer_s; 0: never defer
        self.in_flight = 0
        self.since = 0.0  # when collection went off (monotonic)
        self.owned = False  # whether it was this deferral that turned automatic collection off
        self.collections = 0  # full collections run because a deferral lasted DEFER_MAX_S

    def defer(self) -> None:
        if self.in_flight == 0 and not self.owned:
            self.owned = self.max_s > 0 and gc.isenabled()  # a process run with the collector off keeps it off
            if self.owned:
                gc.disable()
                self.since = time.monotonic()
        self.in_flight += 1
        self._overdue()

    def resume(self) -> None:
        if self.in_flight == 0:  # nothing deferred (an exchange whose body another path read)
            return
        self.in_flight -= 1
        if self.in_flight > 0:
            self._overdue()
        elif self.owned:  # back on once the request that ends has let its body go (the next loop turn):
            try:  # a collection now would still walk it
                asyncio.get_running_loop().call_soon(self._enable)
            except RuntimeError:  # no event loop here
                self._enable()

    def _enable(self) -> None:
        if self.in_flight == 0 and self.owned:  # unless another large request came in meanwhile
            gc.enable()
            self.owned = False

    def _overdue(self) -> None:
        if self.owned and time.monotonic() - self.since > self.max_s:
            gc.collect()
            self.collections += 1
            self.since = time.monotonic()


deferral = _Deferral()
defer = deferral.defer
resume = deferral.resume

__all__ = ["DEFER_MAX_S", "GEN0_THRESHOLD", "defer", "deferral", "resume", "tune"]
