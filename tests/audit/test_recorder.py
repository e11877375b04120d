"""The pipeline's Recorder protocol, backed by the journal: what the lead's proxy writes validates."""

from __future__ import annotations

import asyncio
import hashlib
import hmac as std_hmac
import json
from pathlib import Path
from unittest.mock import ANY

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.audit import event as ev
from guard.audit import layout
from guard.audit.content_keys import ContentKeys, reveal
from guard.audit.journal import Journal
from guard.audit.recorder import JournalRecorder, prompt_text
from guard.audit.schema import assert_journal_valid
from guard.exchange import Exchange
from guard.identity import Principal
from guard.policy.decision import Decision
from guard.screens.base import Verdict

from .conftest import make_settings


def _ex(rid: str) -> Exchange:
    ex = Exchange(
        request_id=rid,
        api="openai",
        operation="chat",
        model="gpt-4o",
        path="/v1/chat/completions",
        body={
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "hi <EMAIL_ADDRESS>"},
                {"role": "user", "content": [{"type": "text", "text": "more"}]},
            ],
        },
        client_ip="10.0.0.1",
        upstream="local",
        trace_id="ab" * 16,
    )
    ex.principal = Principal(subject="CN=a", cn="a", ou=("x",), fingerprint="ef" * 32)
    ex.access = Decision("access", "allow", "policies/policy.csv:4", "f" * 64, ("policies/policy.csv:4",))
    ex.content = Decision("content", "allow", "policies/policy.csv:9", "f" * 64)
    ex.verdicts = [Verdict("pii", "prompt", action="redact", entities={"EMAIL_ADDRESS": 1}, latency_ms=1.0)]
    ex.stage_ms = {"parse": 0.05, "access": 0.02}
    return ex


def test_recorder_writes_started_completed_and_denied_events_that_validate(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path, capture="redacted"), "w1")
    rec = JournalRecorder(j)

    async def go() -> None:
        ok = _ex("r1")
        await rec.started(ok)
        await rec.finished(
            ok,
            "exchange.completed",
            {
                "status": 200,
                "bytes": 99,
                "finish_reasons": ["stop", "stop"],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                "answer_text": "hello",
            },
        )
        denied = _ex("r2")
        denied.access = Decision("access", "deny", "", "f" * 64, error="")
        await rec.finished(
            denied, "exchange.denied", {"status": 403, "reason": "access_denied", "error_type": "permission_denied"}
        )
        broken = _ex("r3")
        await rec.started(broken)
        await rec.finished(broken, "exchange.completed", {"status": 502, "reason": "upstream_bad_stream", "bytes": 0})

    asyncio.run(go())
    j.close()
    assert_journal_valid(tmp_path)
    evs = {(e["type"], e.get("request_id")): e for _, _, e in layout.iter_events(tmp_path)}
    done = evs[("exchange.completed", "r1")]
    assert done["outcome"] == {"status": 200, "bytes": 99, "finish_reason": "stop"}
    # the texts are in the journal only as ciphertext under the day's content key (guard.audit.content_keys)
    assert set(done["content"]) == {"capture", "sealed"} and "hello" not in json.dumps(done)
    opened = reveal(done, ContentKeys(tmp_path / "keys" / "content"))["content"]
    assert opened == {"capture": "redacted", "prompt": "hi <EMAIL_ADDRESS>\nmore", "answer": "hello", "period": ANY}
    assert done["decisions"]["access"]["rule"] == "policies/policy.csv:4" and "total" in done["latency_ms"]
    den = evs[("exchange.denied", "r2")]
    assert den["denial"] == {"stage": "access", "code": "access_denied"} and den["outcome"]["status"] == 403
    assert evs[("exchange.completed", "r3")]["outcome"]["error"] == "upstream_bad_stream"


def test_prompt_text_reads_chat_completion_embedding_and_ollama_bodies() -> None:
    assert prompt_text({"prompt": "p"}) == "p"
    assert prompt_text({"input": ["a", "b"]}) == "a\nb"
    assert prompt_text({"model": "x", "messages": [], "system": "s"}) == "s"
    assert prompt_text({"model": "x"}) is None


def test_an_exchange_hashes_its_prompt_once_and_both_records_carry_that_hmac(tmp_path: Path, monkeypatch) -> None:
    calls: list[bytes] = []
    real = std_hmac.new
    j = Journal(make_settings(tmp_path, capture="hash"), "w1")
    rec = JournalRecorder(j)
    mac = rec.capture._mac

    def counting(msg: bytes) -> str:
        calls.append(msg)
        return mac(msg)

    monkeypatch.setattr(rec.capture, "_mac", counting)
    ex = _ex("r1")

    async def go() -> None:
        await rec.started(ex)
        await rec.finished(ex, "exchange.completed", {"status": 200, "bytes": 9, "answer_text": "hello"})

    asyncio.run(go())
    j.close()
    evs = {e["type"]: e for _, _, e in layout.iter_events(tmp_path) if e.get("request_id") == "r1"}
    key = rec.capture._key
    want = real(key, b"hi <EMAIL_ADDRESS>\nmore", hashlib.sha256).hexdigest()
    assert evs["exchange.started"]["content"]["prompt_hmac"] == want
    assert evs["exchange.completed"]["content"]["prompt_hmac"] == want
    assert evs["exchange.completed"]["content"]["answer_hmac"] == real(key, b"hello", hashlib.sha256).hexdigest()
    assert calls.count(b"hi <EMAIL_ADDRESS>\nmore") == 1  # hashed for exchange.started, reused for .completed
    # a different text under the same exchange is hashed anew, never answered from the memo
    other = rec.capture.record(prompt="changed", memo=ex.context)
    assert other is not None and other["prompt_hmac"] == real(key, b"changed", hashlib.sha256).hexdigest()


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=150), msg=st.binary(max_size=300))
def test_content_hmac_is_rfc2104_hmac_sha256_for_any_key_and_text(key: bytes, msg: bytes) -> None:
    """ContentCapture keys its HMAC once (inner and outer states kept); the digest must be the standard one,
    for keys shorter than, as long as and longer than SHA-256's 64-byte block."""
    assert ev._hmac_sha256(key)(msg) == std_hmac.new(key, msg, hashlib.sha256).hexdigest()
