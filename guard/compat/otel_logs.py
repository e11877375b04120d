"""OpenTelemetry's logs signal, for the OTLP audit sink (guard/audit/otlp.py).

The logs API and SDK are still published under underscore modules (``opentelemetry._logs``,
``opentelemetry.sdk._logs``, ``opentelemetry.exporter.otlp.proto.http._log_exporter``): they are the
documented way to emit OTLP logs, but their names may move when the signal is declared stable. This module
is the only importer; the compatible range is pinned in pyproject.toml (opentelemetry-sdk and
opentelemetry-exporter-otlp-proto-http) and tests/core/test_compat_contracts.py checks what the sink uses.
"""

from __future__ import annotations

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult

__all__ = ["LogRecord", "LogRecordExportResult", "OTLPLogExporter", "ReadableLogRecord", "SeverityNumber"]
