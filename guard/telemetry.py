"""Prometheus metrics (prefix ``guard_``) and OpenTelemetry tracing helpers.

Every module increments metrics through the objects defined here, so names and labels live in one place.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LAT = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("guard_requests_total", "Requests by api, operation, model, decision and status",
                   ["api", "operation", "model", "decision", "status"], registry=REGISTRY)
STAGE_SECONDS = Histogram("guard_stage_duration_seconds", "Latency per pipeline stage",
                          ["stage"], buckets=_LAT, registry=REGISTRY)
REQUEST_SECONDS = Histogram("guard_request_duration_seconds", "Whole-request latency",
                            ["api", "operation"], buckets=_LAT, registry=REGISTRY)
SCREEN_RESULTS = Counter("guard_screen_results_total", "Screen outcomes by screen, direction, status and action",
                         ["screen", "direction", "status", "action"], registry=REGISTRY)
UPSTREAM_ERRORS = Counter("guard_upstream_errors_total", "Upstream errors by upstream and kind",
                          ["upstream", "kind"], registry=REGISTRY)
TLS_HANDSHAKE_FAILURES = Counter("guard_tls_handshake_failures_total", "Refused TLS handshakes by reason",
                                 ["reason"], registry=REGISTRY)
ACTIVE_STREAMS = Gauge("guard_active_streams", "Streams being relayed now", registry=REGISTRY)
AUDIT_FSYNC_SECONDS = Histogram("guard_audit_fsync_duration_seconds", "Audit journal fsync latency",
                                buckets=_LAT, registry=REGISTRY)
AUDIT_EVENTS = Counter("guard_audit_events_total", "Audit events written by type", ["type"], registry=REGISTRY)
AUDIT_WRITE_FAILURES = Counter("guard_audit_write_failures_total", "Journal writes that failed",
                               registry=REGISTRY)
SINK_LAG = Gauge("guard_audit_sink_lag_events", "Events in the journal not yet acknowledged by the sink",
                 ["sink"], registry=REGISTRY)
SINK_ERRORS = Counter("guard_audit_sink_errors_total", "Sink delivery errors", ["sink"], registry=REGISTRY)
SINK_DELIVERED = Counter("guard_audit_sink_events_total", "Events acknowledged by the sink", ["sink"],
                         registry=REGISTRY)
POLICY_RELOADS = Counter("guard_policy_reloads_total", "Policy reloads by result (ok|failed)", ["result"],
                         registry=REGISTRY)
POLICY_ERRORS = Counter("guard_policy_rule_errors_total", "Rules whose expression failed at run time (denied)",
                        registry=REGISTRY)
SHADOW_DISAGREEMENTS = Counter("guard_shadow_disagreements_total",
                               "Requests where the shadow policy decided differently", ["stage"],
                               registry=REGISTRY)
TOKENS = Counter("guard_tokens_total", "Token usage reported by upstreams", ["model", "kind"], registry=REGISTRY)
FAIL_CLOSED = Counter("guard_fail_closed_total", "Requests refused because a control could not do its job",
                      ["component"], registry=REGISTRY)
