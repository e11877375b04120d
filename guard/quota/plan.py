"""A quota tier as admission uses it, computed once per configuration (guard.quota.core)."""

from __future__ import annotations

from typing import Any

from guard import telemetry
from guard.quota.memory import Slot, Spec
from guard.quota.metrics import DECISIONS, TOKENS
from guard.quota.settings import Tier

_FAMILIES = {"requests": "requests", "tokens": "tokens"}  # rate kinds the x-ratelimit-* headers report
_KINDS = {"requests": 0, "tokens": 1, "spend": 2}  # a Spec's index into the costs (1, tokens, spend)


class TierPlan:
    """What admission needs of a tier, computed once: its rate counters (name, limit, period, kind), its
    concurrency slots for a request and for a stream, whether it counts tokens and spend, and the counter
    the rate-limit headers report for requests and for tokens (the first configured: the shortest period)."""

    __slots__ = (
        "admitted",
        "corrected",
        "counts_tokens",
        "headers",
        "rates",
        "slot_names",
        "slots",
        "specs",
        "spend",
        "stream_slots",
        "tokens_usage",
    )

    def __init__(self, name: str, t: Tier) -> None:
        self.admitted: Any = telemetry.child(DECISIONS, name, "admitted", "")  # counted for every request
        self.tokens_usage: Any = telemetry.child(TOKENS, name, "usage")
        self.rates = t.rates()
        self.slots: list[Slot] = [("concurrent", t.concurrent)] if t.concurrent else []
        self.stream_slots: list[Slot] = self.slots + (
            [("concurrent_streams", t.concurrent_streams)] if t.concurrent_streams else []
        )
        self.slot_names = {False: [s[0] for s in self.slots], True: [s[0] for s in self.stream_slots]}
        self.counts_tokens = t.counts_tokens()
        self.spend = t.counts_spend()
        # family -> (counter, its limit as sent, the family's header names: limit, remaining, reset)
        headers: dict[str, tuple[str, bytes, tuple[bytes, bytes, bytes]]] = {}
        for counter, limit, _, kind in self.rates:
            if kind in _FAMILIES and kind not in headers:
                names = (
                    f"x-ratelimit-limit-{kind}".encode(),
                    f"x-ratelimit-remaining-{kind}".encode(),
                    f"x-ratelimit-reset-{kind}".encode(),
                )
                headers[kind] = (counter, b"%d" % limit, names)
        self.headers = tuple(headers.values())
        shown = {h[0] for h in self.headers}
        self.specs: tuple[Spec, ...] = tuple(  # the in-process backend's form (guard.quota.memory.Spec)
            (name, limit, period, period / limit, _KINDS[kind], name in shown)
            for name, limit, period, kind in self.rates
        )
        self.corrected = tuple(s for s in self.specs if s[4])  # the counters a settlement may correct
