"""Spans with GenAI attributes (in-memory exporter); traceparent reaches the upstream in the caller's trace."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def test_exchange_span_has_genai_attributes_and_stage_children(guard_factory, model_server):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    g = guard_factory(runtime_kw={"tracer_provider": provider})
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    c = g.openai()
    r = c.chat.completions.create(
        model="llama-3-8b",
        messages=[{"role": "user", "content": "[[reply: ok]]"}],
        extra_headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
    )
    assert r.choices[0].message.content == "ok"
    import time

    deadline = time.monotonic() + 5  # the span ends after the answer went out (with the audit record)
    while True:
        spans = exporter.get_finished_spans()
        ex = [s for s in spans if s.name == "chat llama-3-8b"]
        if ex or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(ex) == 1
    a = ex[0].attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "llama-3-8b"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert format(ex[0].context.trace_id, "032x") == caller_trace
    stages = {s.name for s in spans if s.parent is not None and s.parent.span_id == ex[0].context.span_id}
    assert {"guard.policy", "guard.screens_prompt", "guard.audit", "guard.upstream_first_byte"} <= stages
    seen = [q for q in model_server[0].requests if "guard" not in str(q["body"].get("model", "")).lower()][-1]
    tp = seen["headers"]["traceparent"]
    assert tp.split("-")[1] == caller_trace and tp.split("-")[2] == format(ex[0].context.span_id, "016x")


def test_trace_id_is_in_the_audit_event(guard_factory):
    from guard.audit.layout import iter_events

    g = guard_factory()
    trace = "0af7651916cd43dd8448eb211c80319c"
    with g.client() as c:
        r = c.post(
            "/v1/chat/completions",
            headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    rid = r.headers["x-guard-request-id"]
    events = [e for _, _, e in iter_events(g.config.audit.dir) if e.get("request_id") == rid]
    assert events and all(e["trace_id"] == trace for e in events)


def test_sampled_out_exchanges_make_no_spans_but_keep_their_trace_id(guard_factory, model_server):
    """telemetry.trace_sample_ratio: an exchange not sampled exports nothing and tells the upstream so
    (traceparent flags 00) yet still carries its trace id into the audit record; a caller's sampled flag
    is followed (ParentBased), as the configured sampler does."""
    import time

    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from guard.audit.layout import iter_events
    from guard.config import Telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    g = guard_factory(runtime_kw={"tracer_provider": provider})
    with g.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200

    def last_chat() -> dict:  # the proxied request, not a Llama Guard screening call
        return [q for q in model_server[0].requests if "guard" not in str(q["body"].get("model", "")).lower()][-1]

    tp = last_chat()["headers"]["traceparent"]
    assert tp.endswith("-00")
    rid = r.headers["x-guard-request-id"]
    events = [e for _, _, e in iter_events(g.config.audit.dir) if e.get("request_id") == rid]
    assert events and all(e["trace_id"] == tp.split("-")[1] for e in events)

    caller = "5bf92f3577b34da6a3ce929d0e0e4737"
    with g.client() as c:
        c.post(
            "/v1/chat/completions",
            headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-01"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    deadline = time.monotonic() + 5
    while not exporter.get_finished_spans() and time.monotonic() < deadline:
        time.sleep(0.05)
    spans = exporter.get_finished_spans()
    assert spans and {format(s.context.trace_id, "032x") for s in spans} == {caller}
    assert last_chat()["headers"]["traceparent"].endswith("-01")

    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError):
        Telemetry(trace_sample_ratio=1.5)


def test_guards_own_head_sampling_skips_the_sdk_for_exchanges_not_sampled():
    """From guard.yaml (Tracing.from_config): an exchange not sampled gets no span at all (nothing for the
    SDK to build), a fresh or the caller's trace id and an unsampled traceparent; a caller's sampled flag is
    followed whatever the ratio."""
    from guard.tracing import Tracing

    never = Tracing.from_config("guard", "http://127.0.0.1:9/v1/traces", 0.0)
    always = Tracing.from_config("guard", "http://127.0.0.1:9/v1/traces", 1.0)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    never.tracer = always.tracer = provider.get_tracer("guard")  # spans land in memory, not on the wire
    try:
        span, tid, tp = never.start(None, 0)
        assert span is None and len(tid) == 32 and tp.startswith(f"00-{tid}-") and tp.endswith("-00")
        caller = "6bf92f3577b34da6a3ce929d0e0e4738"
        span, tid, tp = never.start(f"00-{caller}-00f067aa0ba902b7-00", 0)
        assert span is None and tid == caller and tp.endswith("-00")
        span, tid, tp = never.start(f"00-{caller}-00f067aa0ba902b7-01", 0)
        assert span is not None and span.is_recording() and tid == caller and tp.endswith("-01")
        span.end()
        span, tid, tp = always.start("garbage", 0)
        assert span is not None and tid != caller and tp.endswith("-01")
        span.end()
        assert len(exporter.get_finished_spans()) == 2
        quarter = Tracing.from_config("guard", "http://127.0.0.1:9/v1/traces", 0.25)
        quarter.tracer = provider.get_tracer("guard")
        import random

        random.seed(7)
        kept = [quarter.start(None, 0)[0] for _ in range(4000)]
        assert 850 < sum(k is not None for k in kept) < 1150  # 1,000 expected
        for k in kept:
            if k is not None:
                k.end()
        quarter.provider.shutdown()
    finally:
        never.provider.shutdown()
        always.provider.shutdown()
