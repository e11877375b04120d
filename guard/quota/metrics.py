"""The quota metrics: decisions and tokens counted on every request (telemetry's request-path counters,
lock-free in one process), backend failures."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from guard import telemetry

# counted on every request: telemetry's request-path counters (lock-free in one process)
DECISIONS: Any = telemetry._counter(
    "guard_quota_decisions_total",
    "Quota decisions by tier, result (admitted|refused|exhausted_mid_stream|unavailable_refused|"
    "unavailable_allowed) "
    "and the counter that refused",
    ["tier", "result", "counter"],
)
TOKENS: Any = telemetry._counter(
    "guard_quota_tokens_total",
    "Tokens counted against quotas by tier and source (usage|estimated)",
    ["tier", "source"],
)
BACKEND_ERRORS = Counter(
    "guard_quota_backend_errors_total",
    "Quota backend calls that failed, by operation",
    ["op"],
    registry=telemetry.REGISTRY,
)


def count(metric: Any, *labels: str, by: float = 1) -> None:
    """Increment a labelled counter through telemetry's cached children (off with ``telemetry.metrics``)."""
    child: Any = telemetry.child(metric, *labels)
    child.inc(by)
