"""Every event the builders produce validates against audit/event.schema.json, sealed as in the journal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guard.audit import event as ev
from guard.audit.journal import Journal
from guard.audit.schema import SCHEMA_PATH, assert_journal_valid, event_errors, journal_errors
from guard.exchange import Exchange
from guard.identity import Principal
from guard.screens.base import Verdict

from .conftest import make_settings


@dataclass
class _Decision:
    effect: str
    rule: str
    policy_version: str


def _exchange() -> Exchange:
    ex = Exchange(
        request_id="req-1",
        api="openai",
        operation="chat",
        model="gpt-4o",
        path="/v1/chat/completions",
        body={"model": "gpt-4o", "messages": []},
        stream=True,
        client_ip="10.0.0.7",
        body_bytes=321,
        upstream="local",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    ex.principal = Principal(
        subject="CN=app-a,OU=team-x",
        cn="app-a",
        ou=("team-x",),
        spiffe_id="spiffe://example.org/app-a",
        fingerprint="cd" * 32,
    )
    ex.access = _Decision("allow", "p, team-x, gpt-*, chat", "sha256:abc")
    ex.content = {"effect": "allow", "rule": "c1", "policy_version": "sha256:abc", "profile": "default"}
    ex.stage_ms = {"identity": 0.02, "access": 0.1, "screens": 3.0}
    ex.verdicts = [
        Verdict("pii", "prompt", action="redact", entities={"EMAIL_ADDRESS": 2}, latency_ms=2.5, modified=True),
        Verdict("safety", "prompt", score=0.01, latency_ms=12.0),
        Verdict(
            "safety",
            "response",
            status="ok",
            categories=["S2"],
            score=1.0,
            action="block",
            blocked=True,
            code="unsafe_content",
            latency_ms=9.0,
        ),
    ]
    return ex


def all_events(capture: ev.ContentCapture) -> list[dict[str, Any]]:
    ex = _exchange()
    return [
        ev.guard_started("0.1.0", worker=0),
        ev.config_loaded("/etc/guard/guard.yaml", "ab" * 32, {"upstreams": ["local"], "routes": 1}),
        ev.policy_reloaded("sha256:abc", 12, "policies/policy.csv", shadow_version="sha256:def"),
        ev.policy_reload_failed("line 3: bad rule", "sha256:abc", "policies/policy.csv"),
        ev.config_reload("filters", True, "ab" * 32, ["filters/pii.yaml"], "signal"),
        ev.config_reload("tls", False, "cd" * 32, ["tls/crl.pem"], "admin", "unreadable CRL", "tls/crl.pem", 3),
        ev.exchange_started(ex, capture, prompt="hello alice@example.com", shadow={"access": {"effect": "deny"}}),
        ev.exchange_completed(
            ex,
            200,
            "stop",
            1234,
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            capture,
            prompt="hello",
            answer="hi there",
            latency_ms={"upstream": 40.0, "total": 55.5},
        ),
        ev.exchange_completed(ex, 502, None, 0, None, capture, error="upstream_timeout"),
        ev.exchange_denied(ex, 403, "access_denied", "access", capture, prompt="hello"),
        ev.guard_stopped("shutdown"),
        ev.console_access(
            "console.view",
            "CN=carol-auditor,OU=auditors",
            "certificate",
            "/console/search",
            200,
            "ab" * 32,
            query={"model": "gpt-4o", "decision": "blocked"},
            results=3,
        ),
        ev.console_access(
            "console.export",
            "token",
            "token",
            "/console/export",
            200,
            query={"principal": "app"},
            results=5,
            formats=["jsonl", "csv"],
            pack_sha256="cd" * 32,
        ),
    ]


@pytest.mark.parametrize("level", ["none", "hash", "redacted", "full"])
def test_every_event_type_validates_when_sealed_in_the_journal(tmp_path: Path, level: str) -> None:
    settings = make_settings(tmp_path, capture=level, checkpoint_events=3)
    capture = ev.ContentCapture.from_settings(settings)
    j = Journal(settings, "w1")
    for e in all_events(capture):
        j.append_sync(e)
    j.close()
    n = assert_journal_valid(tmp_path)
    types = {
        json.loads(line)["type"]
        for s in (tmp_path / "chains" / "w1").glob("*.jsonl")
        for line in s.read_bytes().splitlines()
    }
    assert types == set(ev.EVENT_TYPES) and n >= 9


def test_schema_is_draft_2020_12_and_lists_every_type() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["type"]["enum"] == list(ev.EVENT_TYPES)
    assert schema["properties"]["schema_version"]["const"] == ev.SCHEMA_VERSION


def test_schema_rejects_values_where_only_counts_belong(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path), "w1")
    e = j.append_sync(ev.exchange_started(_exchange()))
    j.close()
    bad = dict(e, screens=[dict(e["screens"][0], entities={"EMAIL_ADDRESS": "alice@example.com"})])
    assert event_errors(bad)
    assert event_errors({k: v for k, v in e.items() if k != "hash"})  # hash is required; sig only in the earlier format
    assert not event_errors(e)
    assert journal_errors(tmp_path) == []


def test_ids_are_uuid7_in_time_order_and_times_have_microseconds() -> None:
    ids = [ev.uuid7() for _ in range(50)]
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
    assert len(ev.utc_now()) == len("2026-11-25T01:20:27.123456Z") and ev.utc_now().endswith("Z")


def test_hash_capture_is_keyed_and_never_stores_text_or_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_TEST_HMAC", "k" * 32)
    settings = make_settings(tmp_path, capture="hash", hash_key_env="GUARD_TEST_HMAC")
    c = ev.ContentCapture.from_settings(settings)
    rec = c.record(prompt="secret prompt", answer="secret answer")
    assert rec and set(rec) == {"capture", "key_id", "prompt_hmac", "answer_hmac"}
    assert "k" * 32 not in json.dumps(rec) and "secret" not in json.dumps(rec)
    other = ev.ContentCapture("hash", b"another key").record(prompt="secret prompt")
    assert other and other["prompt_hmac"] != rec["prompt_hmac"]
    assert ev.ContentCapture("none").record(prompt="x") is None
    # default: a generated key file beside the journal, mode 0600
    c2 = ev.ContentCapture.from_settings(make_settings(tmp_path / "b"))
    key = tmp_path / "b" / "keys" / "content-hmac.key"
    assert c2.level == "hash" and key.exists() and (key.stat().st_mode & 0o777) == 0o600
    assert "key" not in repr(c2).replace("key_id", "")


def test_canonical_form_equals_rfc8785_for_any_json_value() -> None:
    import rfc8785
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from guard.audit.seal import canonical

    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53) + 1, 2**53 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    values = st.recursive(
        scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4), max_leaves=20
    )

    @settings(max_examples=400, deadline=None, database=None)
    @given(values)
    def check(v: object) -> None:
        try:
            ref = rfc8785.dumps(v)
        except Exception:
            return
        assert canonical(v) == ref

    check()


def test_canonical_numbers_equal_rfc8785_across_magnitudes() -> None:
    """The fast path (orjson) and JCS agree on every float it admits; the rest goes to the reference encoder.
    Spread over 1e-9 .. 1e22, rounded and raw bit patterns, boundaries of both encoders' exponent forms."""
    import random
    import struct

    import rfc8785

    from guard.audit.seal import canonical

    r = random.Random(8785)
    values: list[float] = [
        1e-7,
        1e-6,
        9.999999e-6,
        1e-5,
        1e-4,
        0.0001,
        1e15,
        9.999999999999998e15,
        1e16,
        1e20,
        1e21,
        2.0**53,
        2.0**53 - 1,
        -0.0,
        0.0,
        0.1 + 0.2,
        5e-324,
        1.7976931348623157e308,
    ]
    for i in range(30000):
        x = r.choice((1, -1)) * 10 ** r.uniform(-9, 22)
        if i % 3 == 0:
            x = round(x, r.randint(0, 6))
        values.append(x)
        b = struct.unpack("d", struct.pack("Q", r.getrandbits(64)))[0]
        if b == b and abs(b) != float("inf"):
            values.append(b)
    for x in values:
        assert canonical({"v": x, "l": [x]}) == rfc8785.dumps({"v": x, "l": [x]}), repr(x)


def test_the_c_number_check_answers_as_the_python_walk() -> None:
    """guard/audit/_canon.c (built by setup.py) and seal._numbers give the same answer for any nesting of dicts,
    lists and tuples of numbers: ints around +-2^53, bools, integral and fractional floats at the fast path's
    bounds, NaN, infinities, and subclasses (which both leave to the encoders)."""
    import enum
    import math

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from guard.audit import seal

    if seal._numbers_c is None:
        pytest.skip("the C extension is not built (no C compiler): seal._numbers is used")

    class Level(enum.IntEnum):
        HIGH = 2**60

    class Ratio(float):
        pass

    edges = st.sampled_from(
        [
            2**53 - 1,
            2**53,
            -(2**53) + 1,
            -(2**53),
            2**64,
            -(2**70),
            0,
            True,
            False,
            1e-4,
            9.9999e-5,
            1e16,
            9.999999999999998e15,
            2.0**53,
            2.0**53 - 1,
            -0.0,
            0.0,
            1.0,
            0.5,
            math.nan,
            math.inf,
            -math.inf,
            Level.HIGH,
            Ratio(1e-9),
            None,
            "1e400",
        ]
    )
    scalars = edges | st.integers() | st.floats() | st.text(max_size=3)
    values = st.recursive(
        scalars,
        lambda c: st.lists(c, max_size=4) | st.tuples(c, c) | st.dictionaries(st.text(max_size=3), c, max_size=4),
        max_leaves=25,
    )

    @settings(max_examples=1500, deadline=None, database=None)
    @given(values)
    def check(v: object) -> None:
        assert seal._numbers_c(v) == seal._numbers(v)

    check()
    deep: object = 1.5
    for _ in range(900):
        deep = [deep]
    assert seal._numbers_c(deep) == seal._numbers(deep) == 2
    for _ in range(200):
        deep = [deep]
    assert seal._numbers_c(deep) == 0  # past 1000 levels the reference encoder decides
