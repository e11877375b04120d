"""Streams through the running proxy (mTLS, the openai SDK streaming): the shipped screens redact a streamed
answer exactly as they redact it whole, held text never shows up as empty deltas, and Llama Guard's stream
mode decides whether prose waits for its verdict (hold) or flows and is cut afterwards (monitor)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.demo.llama_guard_standin import StandIn, StandInThread
from tests.filters.test_safety_proxy import SAFE, UNSAFE_TAIL, filters_dir

REPLY = (
    "Sure. The card on file is 5500 0000 0000 0004 and the IBAN is DE89 3704 0044 0532 0130 00. "
    "Your SSN 536-90-4399 stays private, and the key AKIAIOSFODNN7EXAMPLE was rotated. "
    "Write to ann.lee@mailbox.org if anything looks wrong."
)


@pytest.fixture
def judge() -> Iterator[StandInThread]:
    th = StandInThread(StandIn(ignore=r"\[\[.*?\]\]"))
    yield th
    th.stop()


def stream_chunks(g: Any, content: str) -> tuple[list[Any], str | None, str]:
    chunks, finish = [], None
    with g.openai() as c:
        resp = c.chat.completions.with_raw_response.create(
            model="m", stream=True, messages=[{"role": "user", "content": content}]
        )
        rid = resp.headers["x-guard-request-id"]
        for ch in resp.parse():
            if ch.choices:
                chunks.append(ch.choices[0].delta)
                finish = ch.choices[0].finish_reason or finish
    return chunks, finish, rid


def check_no_empty_deltas(deltas: list[Any]) -> None:
    for d in deltas:
        if d.content == "":
            assert d.role is not None  # only the role chunk may carry empty content


def shipped_filters_answers_only(tmp: Path, judge_url: str) -> Path:
    """The shipped filters with prompt screening of PII and secrets off, so the model server can be told to
    say them; answers are screened as shipped, but with Llama Guard in monitor mode, so what reaches the
    client as the answer streams is what the denylist and PII screens let through."""
    import re

    from guard.demo.stack import screening_filters

    d = screening_filters(tmp / "filters", judge_url)
    deny = d / "denylist.yaml"
    deny.write_text(deny.read_text().replace("prompt: block", 'prompt: "off"'))
    pii = d / "pii.yaml"
    pii.write_text(re.sub(r"prompt: (pseudonymize|redact|block)", "prompt: allow", pii.read_text()))
    safety = d / "safety.yaml"
    assert "stream_mode: hold" in safety.read_text()
    safety.write_text(safety.read_text().replace("stream_mode: hold", "stream_mode: monitor"))
    return d


def test_default_profile_stream_equals_whole_answer_and_sends_no_empty_deltas(
    guard_factory: Any, model_server: Any, tmp_path: Path
) -> None:
    guard = guard_factory(filters={"dir": str(shipped_filters_answers_only(tmp_path, model_server[1]))})
    directive = f"[[reply: {REPLY}]] [[chunks=60]]"
    with guard.openai() as c:
        whole = c.chat.completions.create(model="m", messages=[{"role": "user", "content": directive}])
    expected = whole.choices[0].message.content
    assert "5500 0000 0000 0004" not in expected and "AKIAIOSFODNN7EXAMPLE" not in expected
    deltas, finish, _ = stream_chunks(guard, directive)
    assert "".join(d.content or "" for d in deltas) == expected and finish == "stop"
    check_no_empty_deltas(deltas)
    assert len([d for d in deltas if d.content]) > 10  # it streamed in pieces (not held to the end)
    for d in deltas:
        for secret in ("5500", "DE89", "536-90", "AKIA"):
            assert secret not in (d.content or "")


def test_hold_waits_for_the_verdict_monitor_flows(guard_factory: Any, judge: StandInThread, tmp_path: Path) -> None:
    reply = SAFE  # shorter than one window
    hold = guard_factory(filters={"dir": str(filters_dir(tmp_path, judge.url, response={"window_chars": 400}))})
    deltas, finish, _ = stream_chunks(hold, f"[[reply: {reply}]]")
    texts = [d.content for d in deltas if d.content]
    assert "".join(texts) == reply and finish == "stop" and len(texts) == 1  # released once judged
    mon = guard_factory(
        filters={"dir": str(filters_dir(tmp_path, judge.url, response={"window_chars": 400, "stream_mode": "monitor"}))}
    )
    deltas, finish, _ = stream_chunks(mon, f"[[reply: {reply}]]")
    texts = [d.content for d in deltas if d.content]
    assert "".join(texts) == reply and finish == "stop" and len(texts) >= len(reply.split()) // 2  # word by word
    check_no_empty_deltas(deltas)


def test_monitor_cuts_an_unsafe_stream_and_audits_what_was_sent(
    guard_factory: Any, judge: StandInThread, tmp_path: Path
) -> None:
    from guard.audit.layout import iter_events

    g = guard_factory(
        filters={"dir": str(filters_dir(tmp_path, judge.url, response={"window_chars": 80, "stream_mode": "monitor"}))}
    )
    reply = SAFE + UNSAFE_TAIL + " " + SAFE * 20
    deltas, finish, rid = stream_chunks(g, f"[[reply: {reply}]] [[delay_ms=5]]")
    text = "".join(d.content or "" for d in deltas)
    assert finish == "content_filter" and reply.startswith(text) and len(text) < len(reply)
    from guard.audit.schema import event_errors

    deadline = time.monotonic() + 5
    safety: list[dict[str, Any]] = []
    while not safety and time.monotonic() < deadline:
        for _, _, e in iter_events(g.config.audit.dir):
            if e.get("request_id") == rid and e["type"] == "exchange.completed":
                safety = [s for s in e.get("screens", []) if s["name"] == "safety" and s.get("blocked")]
                assert not event_errors(e)  # the record still validates against audit/event.schema.json
        time.sleep(0.05)
    assert safety and safety[0]["code"] == "unsafe_content"
    assert safety[0]["sent_before_stop"] >= len(text) - 80  # what the client already had (minus other holds)
