"""OpenTelemetry spans for exchanges: one span per exchange and a child per timed stage (guard.stages),
with GenAI semantic-convention attributes; the caller's W3C ``traceparent`` read."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guard.exchange import Exchange


_PROVIDERS = {"openai": "openai", "azure-openai": "azure.ai.openai", "ollama": "ollama"}
_OPS = {"chat": "chat", "completion": "text_completion", "embeddings": "embeddings", "models": "list_models"}


class Tracing:
    """OpenTelemetry spans for exchanges: one span per exchange (started when the request arrives, so its id
    can go upstream in ``traceparent``) and one child per pipeline stage, written when the exchange ends
    from the stage timings the pipeline keeps anyway. GenAI semantic-convention attributes."""

    def __init__(self, provider: object, sample_ratio: float | None = None) -> None:
        from opentelemetry.propagators.textmap import DefaultGetter  # noqa: F401 - import check
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = provider.get_tracer("guard")  # type: ignore[attr-defined]
        self.provider = provider
        self._prop = TraceContextTextMapPropagator()
        # Guard's own head sampling (from_config): an exchange not sampled never touches the SDK. None: the
        # provider's sampler decides everything (a provider passed in, as the tests do).
        self._keep = sample_ratio

    @classmethod
    def from_config(cls, service_name: str, endpoint: str | None, sample_ratio: float = 1.0) -> Tracing | None:
        if not endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

        # The SDK follows a caller's sampled flag and keeps every root span Guard hands it: ``start`` has
        # already dropped the exchanges not sampled (with the caller's flag, or ``sample_ratio``). Named here
        # so that an OTEL_TRACES_SAMPLER in the environment cannot sample a second time.
        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}), sampler=ParentBased(ALWAYS_ON)
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        return cls(provider, sample_ratio)

    def start(self, traceparent: str | None, wall_ns: int) -> tuple[object, str, str]:
        """(span or None when not sampled, trace id hex, traceparent for the upstream)."""
        if self._keep is not None:
            parent = parse_traceparent(traceparent)
            sampled = bool(parent[1] & 1) if parent else self._keep >= 1.0 or random.random() < self._keep
            if not sampled:  # no span: the trace id (the caller's, or a new one) still goes upstream and to audit
                tid = parent[0] if parent else os.urandom(16).hex()
                return None, tid, f"00-{tid}-{os.urandom(8).hex()}-00"
        ctx = self._prop.extract({"traceparent": traceparent}) if traceparent else None
        span = self.tracer.start_span("guard.exchange", context=ctx, start_time=wall_ns, kind=_client_kind())
        sc = span.get_span_context()
        tid, sid = format(sc.trace_id, "032x"), format(sc.span_id, "016x")
        return span, tid, f"00-{tid}-{sid}-{'01' if sc.trace_flags & 1 else '00'}"

    def finish(self, ex: Exchange, outcome: dict[str, Any]) -> None:
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        span = ex.span
        if span is None:
            return
        if not span.is_recording():  # sampled out: no attributes, no stage spans
            span.end()
            return
        base_perf, base_ns = ex.started, ex.wall_ns
        op = _OPS.get(ex.operation, ex.operation)
        span.update_name(f"{op} {ex.model}".strip())
        attrs = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": _PROVIDERS.get(ex.upstream_api, ex.upstream_api or "unknown"),
            "gen_ai.request.model": ex.model,
            "guard.request_id": ex.request_id,
            "guard.upstream": ex.upstream,
            "guard.profile": ex.profile,
            "http.response.status_code": int(outcome.get("status", 0) or 0),
        }
        usage = outcome.get("usage") or {}
        if usage:
            attrs["gen_ai.usage.input_tokens"] = int(usage.get("input_tokens", 0))
            attrs["gen_ai.usage.output_tokens"] = int(usage.get("output_tokens", 0))
        if outcome.get("finish_reasons"):
            attrs["gen_ai.response.finish_reasons"] = list(outcome["finish_reasons"])
        for d in (ex.access, ex.content):
            if d is not None:
                attrs[f"guard.decision.{d.stage}"] = d.effect
        span.set_attributes({k: v for k, v in attrs.items() if v not in (None, "")})
        if int(outcome.get("status", 0) or 0) >= 400:
            span.set_status(Status(StatusCode.ERROR, str(outcome.get("reason", ""))))
        parent = set_span_in_context(span)
        for name, (t0, t1) in ex.stage_times.items():
            child = self.tracer.start_span(
                f"guard.{name}", context=parent, start_time=base_ns + int((t0 - base_perf) * 1e9)
            )
            child.end(end_time=base_ns + int((t1 - base_perf) * 1e9))
        span.end()


_HEX = frozenset("0123456789abcdef")


def parse_traceparent(tp: str | None) -> tuple[str, int] | None:
    """(trace id, flags) of a caller's W3C ``traceparent``; None when it carries no usable trace id (the
    exchange then starts a trace of its own). Flags that are not hex count as 0 (not sampled)."""
    if tp is None or len(tp) != 55 or tp[2] != "-":
        return None
    tid = tp[3:35].lower()
    if tid == "0" * 32 or not _HEX.issuperset(tid):
        return None
    flags = tp[53:55].lower()
    return tid, int(flags, 16) if tp[52] == "-" and _HEX.issuperset(flags) else 0


def _client_kind() -> object:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER
