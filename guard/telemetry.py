"""Prometheus metrics (prefix ``guard_``); OpenTelemetry spans are guard.tracing's.

Every module increments metrics through the objects defined here, so names and labels live in one place.
"""

from __future__ import annotations

import os
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ  # several workers: values live in shared files
if not MULTIPROCESS:  # process_resident_memory_bytes, open fds, CPU; python_gc_* (per process: not summed)
    from prometheus_client import GCCollector, ProcessCollector

    ProcessCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)


def exposition_registry() -> CollectorRegistry:
    """What /metrics serves: this process's registry, or every worker's values summed."""
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return reg


_LAT = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _FastHistogram:
    """A labelled histogram for the request path: an observation is a bisect and two list increments, with
    no lock (only the event loop's thread observes). prometheus_client's Histogram takes a lock per bucket
    and per sum, which cost several percent of throughput at eight observations per request. Exposed in the
    standard histogram format through prometheus_client's public custom-collector API (``collect`` and
    ``describe``). Used by a single process only: with several workers the request path uses
    prometheus_client's own multiprocess Histogram (see _histogram)."""

    def __init__(self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> None:
        import bisect

        self._bisect = bisect.bisect_left
        self.name, self.doc, self.labelnames = name, doc, tuple(labels)
        self.bounds = list(buckets)
        self._series: dict[tuple[str, ...], _FastChild] = {}
        _FAST.append(self)

    def labels(self, *values: str) -> _FastChild:
        c = self._series.get(values)
        if c is None:
            c = self._series[values] = _FastChild(self)
        return c

    def collect(self) -> list:
        from prometheus_client.core import HistogramMetricFamily

        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, c in list(self._series.items()):
            acc, buckets = 0, []
            for bound, n in zip([*self.bounds, float("inf")], c.counts, strict=False):
                acc += n
                buckets.append((str(bound) if bound != float("inf") else "+Inf", acc))
            fam.add_metric(list(values), buckets, c.sum)
        return [fam]

    def describe(self) -> list:
        from prometheus_client.core import HistogramMetricFamily

        return [HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)]


class _FastChild:
    __slots__ = ("_bisect", "_bounds", "counts", "sum")

    def __init__(self, h: _FastHistogram) -> None:
        self.counts = [0] * (len(h.bounds) + 1)
        self.sum = 0.0
        self._bisect, self._bounds = h._bisect, h.bounds

    def observe(self, v: float) -> None:
        self.counts[self._bisect(self._bounds, v)] += 1
        self.sum += v


class _FastCounter:
    """A labelled counter for the request path, lock-free like _FastHistogram (one thread increments), and
    like it for a single process only."""

    def __init__(self, name: str, doc: str, labels: list[str]) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labels)
        self._series: dict[tuple[str, ...], _FastCount] = {}
        _FAST.append(self)

    def labels(self, *values: str) -> _FastCount:
        c = self._series.get(values)
        if c is None:
            c = self._series[values] = _FastCount()
        return c

    def collect(self) -> list:
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily(self.name.removesuffix("_total"), self.doc, labels=self.labelnames)
        for values, c in list(self._series.items()):
            fam.add_metric(list(values), c.value)
        return [fam]

    def describe(self) -> list:
        from prometheus_client.core import CounterMetricFamily

        return [CounterMetricFamily(self.name.removesuffix("_total"), self.doc, labels=self.labelnames)]


class _FastCount:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


_FAST: list[_FastHistogram | _FastCounter] = []


def _forget_series() -> None:
    """After a fork the child starts with no series of its own (the parent's counts are the parent's).
    prometheus_client's multiprocess values notice the fork themselves and open the child's own file."""
    for m in _FAST:
        m._series = {}
    _children.clear()
    _stages.clear()


os.register_at_fork(after_in_child=_forget_series)


def _counter(name: str, doc: str, labels: list[str]) -> object:
    """Request-path counters: lock-free in a single process; with several workers prometheus_client's
    multiprocess Counter (public API), which writes each increment into this worker's file."""
    if MULTIPROCESS:  # /metrics reads the workers' files (exposition_registry), not REGISTRY
        return Counter(name, doc, labels, registry=None)
    c = _FastCounter(name, doc, labels)
    REGISTRY.register(c)
    return c


def _histogram(name: str, doc: str, labels: list[str]) -> object:
    if MULTIPROCESS:
        return Histogram(name, doc, labels, buckets=_LAT, registry=None)
    h = _FastHistogram(name, doc, labels, _LAT)
    REGISTRY.register(h)
    return h


REQUESTS = _counter(
    "guard_requests_total",
    "Requests by api, operation, model, decision and status",
    ["api", "operation", "model", "decision", "status"],
)
STAGE_SECONDS = _histogram("guard_stage_duration_seconds", "Latency per pipeline stage", ["stage"])
REQUEST_SECONDS = _histogram("guard_request_duration_seconds", "Whole-request latency", ["api", "operation"])
SCREEN_RESULTS = Counter(
    "guard_screen_results_total",
    "Screen outcomes by screen, direction, status and action",
    ["screen", "direction", "status", "action"],
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "guard_upstream_errors_total", "Upstream errors by upstream and kind", ["upstream", "kind"], registry=REGISTRY
)
TLS_HANDSHAKE_FAILURES = Counter(
    "guard_tls_handshake_failures_total", "Refused TLS handshakes by reason", ["reason"], registry=REGISTRY
)
ACTIVE_STREAMS = Gauge(
    "guard_active_streams", "Streams being relayed now", registry=REGISTRY, multiprocess_mode="livesum"
)
AUDIT_FSYNC_SECONDS = Histogram(
    "guard_audit_fsync_duration_seconds", "Audit journal fsync latency", buckets=_LAT, registry=REGISTRY
)
AUDIT_EVENTS = Counter("guard_audit_events_total", "Audit events written by type", ["type"], registry=REGISTRY)
AUDIT_WRITE_FAILURES = Counter("guard_audit_write_failures_total", "Journal writes that failed", registry=REGISTRY)
NOTARIZED = Counter("guard_audit_notarized_total", "Checkpoints sent to the TSA and witnesses", registry=REGISTRY)
NOTARY_FAILURES = Counter(
    "guard_audit_notary_failures_total",
    "Checkpoints without their timestamp token (kind=timestamp) or witness quorum (kind=witness)",
    ["kind"],
    registry=REGISTRY,
)
WITNESS_SECONDS = Histogram(
    "guard_audit_witness_seconds",
    "Time to collect witness cosignatures for a checkpoint",
    buckets=_LAT,
    registry=REGISTRY,
)
SINK_LAG = Gauge(
    "guard_audit_sink_lag_events",
    "Events in the journal not yet acknowledged by the sink",
    ["sink"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
SINK_ERRORS = Counter("guard_audit_sink_errors_total", "Sink delivery errors", ["sink"], registry=REGISTRY)
SINK_DELIVERED = Counter(
    "guard_audit_sink_events_total", "Events acknowledged by the sink", ["sink"], registry=REGISTRY
)
POLICY_RELOADS = Counter(
    "guard_policy_reloads_total",
    "Reloads by result (ok|failed; unauthorized: POST /admin/reload without the token)",
    ["result"],
    registry=REGISTRY,
)
RELOADS = Counter(
    "guard_reload_total",
    "Reloads of each part (policy, filters, tls) by result (ok|failed)",
    ["component", "result"],
    registry=REGISTRY,
)
POLICY_ERRORS = Counter(
    "guard_policy_rule_errors_total", "Rules whose expression failed at run time (denied)", registry=REGISTRY
)
SHADOW_DISAGREEMENTS = Counter(
    "guard_shadow_disagreements_total",
    "Requests where the shadow policy decided differently",
    ["stage"],
    registry=REGISTRY,
)
TOKENS = _counter("guard_tokens_total", "Token usage reported by upstreams", ["model", "kind"])
UNSCREENED = Counter(
    "guard_unscreened_inputs_total",
    "Inputs that reached a model unscreened because the upstream allows them (allow_unscreened)",
    ["api", "kind"],
    registry=REGISTRY,
)
FAIL_CLOSED = Counter(
    "guard_fail_closed_total",
    "Requests refused because a control could not do its job",
    ["component"],
    registry=REGISTRY,
)


class Child(Protocol):
    """A labelled metric as the request path uses it: a counter's child counts, a histogram's observes."""

    def inc(self, amount: float = 1) -> None: ...

    def observe(self, amount: float) -> None: ...


_children: dict[tuple[int, tuple[str, ...]], Child] = {}
_enabled = True


class _Noop:
    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_NOOP = _Noop()


def configure(metrics: bool) -> None:
    """``telemetry.metrics: false`` turns off the request path's per-request metrics (for measuring their
    cost); the counters other components keep are unaffected."""
    global _enabled
    _enabled = metrics


def child(metric: object, *labels: str) -> Child:
    """``metric.labels(*labels)``, cached: the lookup is the costly part of counting on the hot path. The
    cache is bounded; label sets past the bound are looked up each time."""
    if not _enabled:
        return _NOOP
    key = (id(metric), labels)
    cached = _children.get(key)
    if cached is not None:
        return cached
    c: Child = metric.labels(*labels)  # type: ignore[attr-defined]
    if len(_children) < 20_000:
        _children[key] = c
    return c


_stages: dict[str, Child] = {}


def stage(name: str) -> Child:
    """``STAGE_SECONDS.labels(name)``, cached by name alone (stage names are fixed in the code): the stage
    histogram is observed seven times a request, and the general cache's key costs a third of that."""
    if not _enabled:
        return _NOOP
    c = _stages.get(name)
    if c is None:
        c = _stages[name] = STAGE_SECONDS.labels(name)  # type: ignore[attr-defined]
    return c
