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
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000


def tune() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


__all__ = ["GEN0_THRESHOLD", "tune"]
