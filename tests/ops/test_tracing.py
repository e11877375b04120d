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
    r = c.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "[[reply: ok]]"}],
                                  extra_headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"})
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
        r = c.post("/v1/chat/completions", headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"},
                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    rid = r.headers["x-guard-request-id"]
    events = [e for _, _, e in iter_events(g.config.audit.dir) if e.get("request_id") == rid]
    assert events and all(e["trace_id"] == trace for e in events)
