"""Writes deploy/grafana/guard-dashboard.json (Grafana 10+, Prometheus data source) from Guard's metrics.

    .venv/bin/python deploy/grafana/make_dashboard.py

Edit this file rather than the JSON; tests/deploy checks every metric and label the dashboard uses against
guard.telemetry.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SEL = 'job=~"$job", instance=~"$instance"'
RI = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}


class Layout:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = 0
        self.h = 8

    def _id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def newline(self) -> None:
        if self.x:
            self.x, self.y = 0, self.y + self.h

    def panel(self, title: str, targets: list[tuple[str, str]], unit: str = "short", w: int = 8, h: int = 8,
              kind: str = "timeseries", desc: str = "", stack: bool = False) -> None:
        if self.x + w > 24:
            self.newline()
        self.h = h
        p: dict[str, Any] = {
            "type": kind, "title": title, "id": self._id(), "description": desc, "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": leg, "datasource": DS}
                        for i, (e, leg) in enumerate(targets)]}
        if kind == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1,
                                                      "fillOpacity": 10 if stack else 0,
                                                      "stacking": {"mode": "normal" if stack else "none"}}
            p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                       "calcs": ["mean", "max", "lastNotNull"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        else:
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value", "graphMode": "area"}
        self.panels.append(p)
        self.x += w
        if self.x >= 24:
            self.newline()


def sel(extra: str = "") -> str:
    return "{" + SEL + (", " + extra if extra else "") + "}"


def rate(metric: str, by: str = "", extra: str = "", fn: str = "rate", window: str = RI) -> str:
    inner = f"{fn}({metric}{sel(extra)}[{window}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(metric: str, qn: float, by: str = "") -> str:
    return f"histogram_quantile({qn}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{sel()}[{RI}])))"


def build() -> dict[str, Any]:
    L = Layout()
    L.row("Overview")
    refused = 'status=~"4..|5.."'
    L.panel("Requests/s", [(rate("guard_requests_total"), "requests/s")], "reqps", w=6, h=4, kind="stat")
    L.panel("Refused (4xx/5xx) ratio", [(f"{rate('guard_requests_total', extra=refused)} / {rate('guard_requests_total')}",
                                          "refused")], "percentunit", w=6, h=4, kind="stat")
    L.panel("Active streams", [(f"sum(guard_active_streams{sel()})", "streams")], w=6, h=4, kind="stat")
    L.panel("Policy reload failures (time range)",
            [(rate("guard_policy_reloads_total", extra='result="failed"', fn="increase", window="$__range"), "failed")],
            w=6, h=4, kind="stat", desc="A failed reload keeps the old policy or filters: fix the files, reload again.")

    L.row("Traffic")
    L.panel("Requests/s by decision and status",
            [(rate("guard_requests_total", "decision, status"), "{{decision}} {{status}}")], "reqps", stack=True)
    L.panel("Requests/s by model and operation",
            [(rate("guard_requests_total", "model, operation"), "{{model}} {{operation}}")], "reqps", stack=True)
    L.panel("Request latency (whole exchange)",
            [(quantile("guard_request_duration_seconds", 0.5, "api, operation"), "p50 {{api}} {{operation}}"),
             (quantile("guard_request_duration_seconds", 0.99, "api, operation"), "p99 {{api}} {{operation}}")], "s")

    L.row("Pipeline stages")
    L.panel("p99 latency per stage", [(quantile("guard_stage_duration_seconds", 0.99, "stage"), "{{stage}}")], "s",
            desc="identity, parse, route, policy, screens_prompt, audit, upstream_first_byte, upstream_total, screens_response")
    L.panel("p50 latency per stage", [(quantile("guard_stage_duration_seconds", 0.5, "stage"), "{{stage}}")], "s")
    L.panel("Mean latency per stage",
            [(f"{rate('guard_stage_duration_seconds_sum', 'stage')} / {rate('guard_stage_duration_seconds_count', 'stage')}",
              "{{stage}}")], "s")

    L.row("Screens and policy")
    L.panel("Screen outcomes/s", [(rate("guard_screen_results_total", "screen, direction, status, action"),
                                   "{{screen}} {{direction}} {{status}} {{action}}")], "ops", stack=True)
    L.panel("Refused because a control failed (fail closed)",
            [(rate("guard_fail_closed_total", "component"), "{{component}}")], "ops")
    L.panel("Shadow policy disagreements/s", [(rate("guard_shadow_disagreements_total", "stage"), "{{stage}}")], "ops",
            desc="Requests where policy.shadow decided differently from the active policy.")
    L.panel("Policy reloads (5m)", [(rate("guard_policy_reloads_total", "result", fn="increase", window="5m"),
                                     "{{result}}")])
    L.panel("Rule expression errors/s", [(rate("guard_policy_rule_errors_total"), "rule errors (denied)")], "ops")
    L.panel("Tokens/s by model", [(rate("guard_tokens_total", "model, kind"), "{{model}} {{kind}}")], stack=True)

    L.row("Upstreams and TLS")
    L.panel("Upstream errors/s", [(rate("guard_upstream_errors_total", "upstream, kind"), "{{upstream}} {{kind}}")],
            "ops", stack=True)
    L.panel("TLS handshake failures/s", [(rate("guard_tls_handshake_failures_total", "reason"), "{{reason}}")], "ops",
            stack=True, desc="Refused client handshakes by reason (unknown CA, revoked, expired, no certificate...).")
    L.panel("Active streams per instance", [(f"sum by (instance) (guard_active_streams{sel()})", "{{instance}}")])

    L.row("Audit journal and SIEM forwarding")
    L.panel("Journal fsync latency",
            [(quantile("guard_audit_fsync_duration_seconds", 0.5, "instance"), "p50 {{instance}}"),
             (quantile("guard_audit_fsync_duration_seconds", 0.99, "instance"), "p99 {{instance}}")], "s",
            desc="Every exchange waits for exchange.started to be durable (audit.durability: fsync).")
    L.panel("Sink lag (events not yet acknowledged)",
            [(f"max by (instance, sink) (guard_audit_sink_lag_events{sel()})", "{{instance}} {{sink}}")],
            desc="Grows while a SIEM is unreachable; nothing is lost while the journal volume lasts.")
    L.panel("Sink deliveries and errors/s", [(rate("guard_audit_sink_events_total", "sink"), "delivered {{sink}}"),
                                             (rate("guard_audit_sink_errors_total", "sink"), "errors {{sink}}")], "ops")
    L.panel("Audit events/s by type", [(rate("guard_audit_events_total", "type"), "{{type}}")], "ops", stack=True)
    L.panel("Journal write failures/s", [(rate("guard_audit_write_failures_total"), "write failures")], "ops",
            desc="Non-zero: requests are refused with 503 audit_unavailable (fail closed).")

    var = {"type": "query", "datasource": DS, "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
           "current": {}}
    q_job, q_inst = "label_values(guard_requests_total, job)", 'label_values(guard_requests_total{job=~"$job"}, instance)'
    return {
        "title": "Guard", "uid": "guard-overview", "tags": ["guard", "llm", "security"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s", "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "description": "Guard: traffic, decisions, pipeline latency, screens, upstreams, TLS, audit journal.",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            {**var, "name": "job", "label": "Job", "query": {"query": q_job, "refId": "job"}, "definition": q_job},
            {**var, "name": "instance", "label": "Instance", "query": {"query": q_inst, "refId": "instance"},
             "definition": q_inst}]},
        "annotations": {"list": []},
        "panels": L.panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("guard-dashboard.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
