"""A stream that runs out of its tier's token budget mid-answer ends with the wire API's error event
(official openai and ollama clients raise), is audited and counted, and its upstream connection is closed."""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.audit.proxy_helpers import by_request, journal_events, metric

ROOT = Path(__file__).resolve().parents[2]
FOREVER = "[[forever]] [[delay_ms=2]]"


def _guard(guard_factory, tmp_path, tiers, screened=False):
    d = tmp_path / ("deny" if screened else "nofilters")
    d.mkdir(exist_ok=True)
    if screened:  # the denylist's stream screen: the relay path that parses every chunk
        (d / "denylist.yaml").write_text((ROOT / "filters" / "denylist.yaml").read_text())
    return guard_factory(filters={"dir": str(d)}, quotas={"tiers": tiers})


def _record(g, rid, kind, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rec = by_request(journal_events(Path(g.config.audit.dir))).get(rid, {}).get(kind)
        if rec is not None:
            return rec
        time.sleep(0.05)
    raise AssertionError(f"no {kind} record for {rid}")


def _wait(cond, what, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.02)


@pytest.mark.parametrize("screened", [False, True], ids=["fast-path", "screened"])
def test_openai_sdk_stream_ends_with_api_error_when_the_budget_runs_out(
    guard_factory, tmp_path, model_server, screened
):
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_minute": 120}}, screened)
    cancelled = model_server[0].cancelled
    labels = {"tier": "default", "result": "exhausted_mid_stream", "counter": "tokens_per_minute"}
    before = metric(httpx.get(g.admin_url + "/metrics").text, "guard_quota_decisions_total", **labels)
    c = g.openai()
    text = []
    with (
        pytest.raises(openai.APIError) as e,
        c.chat.completions.with_streaming_response.create(
            model="m", stream=True, messages=[{"role": "user", "content": FOREVER}]
        ) as raw,
    ):
        rid = raw.headers["x-guard-request-id"]
        for chunk in raw.parse():
            text.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            assert len(text) < 2000, "the stream was never cut"
    assert not isinstance(e.value, openai.APIStatusError), "the 200 was already sent: an error event, not a status"
    assert e.value.code == "rate_limit_exceeded" and e.value.type == "rate_limit_error"
    assert "tokens_per_minute" in e.value.message
    released = "".join(text)
    assert released.startswith("tick 0 tick 1"), "text before the budget ran out reached the client"
    prompt = math.ceil(len(FOREVER) / 4)
    assert math.ceil(len(released) / 4) + prompt <= 120 + 2, "no more text than the budget (+ 2 s of refill)"
    rec = _record(g, rid, "exchange.completed")
    assert rec["outcome"]["status"] == 429 and rec["outcome"]["error"] == "quota_exhausted_mid_stream"
    q = rec["decisions"]["quota"]
    assert q["tier"] == "default" and q["counter"] == "tokens_per_minute" and q["exhausted_mid_stream"] is True
    assert q["usage_estimated"] is True and rec["usage"]["completion_tokens"] >= math.ceil(len(released) / 4)
    m = httpx.get(g.admin_url + "/metrics").text
    assert metric(m, "guard_quota_decisions_total", **labels) == before + 1
    _wait(lambda: model_server[0].cancelled > cancelled, "the upstream stream was not closed")
    # the budget is spent: the next request is refused at admission
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "[[reply: more]] " + "x" * 40}])


def test_ollama_stream_ends_with_an_error_line(guard_factory, tmp_path):
    import ollama

    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_day": 80}})
    oc = ollama.Client(host=g.url, verify=g.ssl_context())
    got = []
    with pytest.raises(ollama.ResponseError) as e:
        for part in oc.chat(model="llama3", stream=True, messages=[{"role": "user", "content": FOREVER}]):
            got.append(part["message"]["content"])
    assert "tokens_per_day" in str(e.value.error) and "".join(got).startswith("tick 0")
    with g.client().stream(
        "POST",
        "/api/chat",
        json={"model": "llama3", "stream": True, "messages": [{"role": "user", "content": FOREVER}]},
    ) as r:
        assert r.status_code == 429, "the day's budget is spent: refused at admission"


def test_a_stream_within_its_reservation_is_not_cut(guard_factory, tmp_path):
    """``max_tokens`` reserved the whole answer: the stream completes as usual and is settled by usage."""
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_minute": 200}})
    with g.client().stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "m",
            "stream": True,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "[[reply: " + "w " * 60 + "]]"}],
        },
    ) as r:
        body = b"".join(r.iter_bytes())
        rid = r.headers["x-guard-request-id"]
    assert body.endswith(b"data: [DONE]\n\n") and b'"error"' not in body
    rec = _record(g, rid, "exchange.completed")
    assert rec["outcome"]["status"] == 200 and "exhausted_mid_stream" not in rec["decisions"]["quota"]


def _cut_where_the_budget_ends(released: str, budget: int, prompt_text: str) -> None:
    """The answer released is what a day's budget left after the prompt: not less than one meter step short
    of it (counted from the text; byte counting would have cut it at a small fraction), not more than it."""
    prompt = math.ceil(len(prompt_text) / 4)
    answer = math.ceil(len(released) / 4)
    assert released.startswith("tick 0 tick 1")
    assert prompt + answer <= budget + 2, (prompt, answer)
    assert prompt + answer >= budget - 16 - 2, f"cut early: {answer} answer tokens of {budget - prompt}"


def test_anthropic_sdk_stream_ends_with_its_error_event_where_the_budget_ends(guard_factory, tmp_path, model_server):
    """A Messages stream is metered from its text deltas (and the running ``output_tokens`` of
    message_start/message_delta), not its bytes; the budget's end is Anthropic's ``error`` event."""
    import anthropic

    from tests.wire.test_anthropic import client

    budget = 240
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_day": budget}})  # no refill while it runs
    cancelled = model_server[0].cancelled
    text: list[str] = []
    with (
        client(g) as c,
        pytest.raises(anthropic.APIStatusError) as e,
        c.messages.with_streaming_response.create(
            model="claude-demo",
            max_tokens=50,  # reserved at admission; the meter charges the rest as the answer grows
            stream=True,
            messages=[{"role": "user", "content": FOREVER}],
        ) as raw,
    ):
        rid = raw.headers["x-guard-request-id"]
        for ev in raw.parse():
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                text.append(ev.delta.text)
            assert len(text) < 2000, "the stream was never cut"
    body = e.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
    assert body["error"]["code"] == "rate_limit_exceeded" and "tokens_per_day" in body["error"]["message"]
    _cut_where_the_budget_ends("".join(text), budget, FOREVER)
    rec = _record(g, rid, "exchange.completed")
    assert rec["outcome"]["status"] == 429 and rec["outcome"]["error"] == "quota_exhausted_mid_stream"
    assert rec["decisions"]["quota"]["counter"] == "tokens_per_day"
    _wait(lambda: model_server[0].cancelled > cancelled, "the upstream stream was not closed")


def test_responses_sdk_stream_ends_with_its_error_event_where_the_budget_ends(guard_factory, tmp_path, model_server):
    """A Responses stream is metered from its ``response.output_text.delta`` events (the ``*.done`` events
    that repeat the text are not counted twice); the budget's end is the API's ``error`` event."""
    budget = 240
    g = _guard(guard_factory, tmp_path, {"default": {"tokens_per_day": budget}})
    text: list[str] = []
    c = g.openai()
    with (
        pytest.raises(openai.APIError) as e,
        c.responses.with_streaming_response.create(model="demo-model", input=FOREVER, stream=True) as raw,
    ):
        rid = raw.headers["x-guard-request-id"]
        for ev in raw.parse():
            if ev.type == "response.output_text.delta":
                text.append(ev.delta)
            assert len(text) < 2000, "the stream was never cut"
    assert not isinstance(e.value, openai.APIStatusError), "the 200 was already sent: an error event, not a status"
    assert e.value.code == "rate_limit_exceeded" and "tokens_per_day" in e.value.message
    _cut_where_the_budget_ends("".join(text), budget, FOREVER)
    rec = _record(g, rid, "exchange.completed")
    assert rec["outcome"]["status"] == 429 and rec["outcome"]["error"] == "quota_exhausted_mid_stream"
    # the day's budget is spent: the next Responses request is refused at admission, in OpenAI's shape
    with pytest.raises(openai.RateLimitError):
        c.responses.create(model="demo-model", input="[[reply: more]]")
