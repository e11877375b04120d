"""OTLP logs sink: the journal's events as OpenTelemetry log records over OTLP/HTTP (protobuf).

Any OpenTelemetry Collector pipeline (Kafka, Splunk, Elastic, ...) can take Guard's events this way. The
records are encoded and sent by opentelemetry-sdk's ``OTLPLogExporter``
(through guard/compat/otel_logs.py; no hand-written
protobuf). Like the other sinks it is fed from the journal by a forwarder thread with its own persisted
cursor: a batch counts as delivered only when the collector answered 2xx, so delivery is at-least-once
(a collector that is down gets the events again when it is back).

One record per event: ``body`` is the event as the sink's ``format`` writes it (``json``: the journal line
itself, byte for byte, so a receiver can re-check its hash; ``ocsf``/``ecs``: that JSON; ``cef``: the CEF
line); ``event_name`` is the event type, ``timestamp`` the event time, severity WARN for denials and failed
reloads, else INFO; attributes ``guard.event.id``, ``guard.chain``, ``guard.seq``, and ``guard.request_id``
where there is one. The resource carries ``service.name`` ``guard`` and ``host.name``.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from guard.audit.formats import FORMATTERS, as_text, effect
from guard.audit.settings import SinkSettings
from guard.audit.sinks import SinkError
from guard.compat.otel_logs import LogRecord, LogRecordExportResult, OTLPLogExporter, ReadableLogRecord, SeverityNumber


class OtlpLogs:
    stream = False

    def __init__(self, s: SinkSettings) -> None:
        self.name, self.s, self.fmt = s.name, s, FORMATTERS[s.format]
        url = (s.url or "").rstrip("/")
        if not url.endswith("/v1/logs"):
            url += "/v1/logs"
        self.url = url
        self.resource = Resource.create({"service.name": "guard", "host.name": socket.gethostname()})
        self.scope = InstrumentationScope("guard.audit")
        self._exporter: OTLPLogExporter | None = None

    def _exp(self) -> OTLPLogExporter:
        if self._exporter is None:
            headers = {}
            if self.s.token_env:
                token = os.environ.get(self.s.token_env, "")
                if not token:
                    raise SinkError(f"sink {self.name}: environment variable {self.s.token_env} is not set")
                headers["authorization"] = f"Bearer {token}"
            self._exporter = OTLPLogExporter(
                endpoint=self.url,
                certificate_file=str(self.s.ca) if self.s.ca else None,
                headers=headers,
                timeout=self.s.timeout_s,
            )
        return self._exporter

    def _record(self, e: dict[str, Any]) -> ReadableLogRecord:
        raw = getattr(e, "raw", None)
        body = raw.decode("utf-8") if raw is not None and self.s.format == "json" else as_text(self.fmt(e))
        failed = e.get("type") == "policy.reload_failed" or (e.get("reload") or {}).get("result") == "failed"
        warn = effect(e) == "deny" or failed
        attrs: dict[str, Any] = {
            "guard.event.id": str(e.get("id", "")),
            "guard.chain": str(e.get("chain", "")),
            "guard.seq": int(e.get("seq", 0) or 0),
        }
        if e.get("request_id"):
            attrs["guard.request_id"] = str(e["request_id"])
        ns = _ns(str(e["time"])) if e.get("time") else None
        rec = LogRecord(
            timestamp=ns,
            observed_timestamp=ns,
            severity_text="WARN" if warn else "INFO",
            severity_number=SeverityNumber.WARN if warn else SeverityNumber.INFO,
            body=body,
            attributes=attrs,
            event_name=str(e.get("type", "")),
        )
        return ReadableLogRecord(log_record=rec, resource=self.resource, instrumentation_scope=self.scope)

    def send(self, events: list[dict[str, Any]]) -> None:
        records = [self._record(e) for e in events]
        if self._exp().export(records) is not LogRecordExportResult.SUCCESS:
            raise SinkError(f"sink {self.name}: the OTLP receiver at {self.url} did not accept the batch")

    def alive(self) -> bool:
        return True

    def reset(self) -> None:
        if self._exporter is not None:
            self._exporter.shutdown()
            self._exporter = None


def _ns(rfc3339: str) -> int:
    d = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000
