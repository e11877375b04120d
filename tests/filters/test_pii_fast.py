"""The fast path finds exactly what AnalyzerEngine.analyze finds; bad input is scanned in bounded time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.screens.pii.analyzer import FastAnalyzer
from guard.screens.pii.profile import PIIProfile, load_pii_profiles

DATASET = Path(__file__).parents[3] / "shared" / "datasets" / "presidio-synth" / "synth_dataset_v2.json"
SETTINGS = r"""
recognizers:
  - name: employee_id
    entity_type: EMPLOYEE_ID
    patterns: [{regex: '\bEMP-?\d{6}\b', score: 0.3}]
    context: [employee, badge]
profiles:
  all:
    entities:
      EMAIL_ADDRESS: {}
      PHONE_NUMBER: {}
      CREDIT_CARD: {}
      IBAN_CODE: {}
      US_SSN: {}
      IP_ADDRESS: {}
      EMPLOYEE_ID: {}
"""
PIECES = [
    "536-90-4399",
    "536904399",
    "536 90 4399",
    "SSN",
    "ssn:",
    "social",
    "security",
    "10.0.0.1",
    "ip",
    "fe80::1",
    "iban",
    "DE89370400440532013000",
    "bank",
    "EMP-123456",
    "employee",
    "badge:EMP-654321",
    "a@b.io",
    "email",
    "+1 415-555-0134",
    "call",
    "the",
    "a",
    "of",
    "and",
    "...",
    ":",
    "-",
    "\n",
    "  ",
    "x:y",
    "the:ssn",
    "is",
    "was",
    "lorem",
    "ipsum",
    "(",
    ")",
    "4012888888881881",
    "card",
]


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> PIIProfile:
    path = tmp_path_factory.mktemp("pii") / "pii.yaml"
    path.write_text(SETTINGS)
    return load_pii_profiles(path)["all"]


def key(results: list) -> list[tuple]:
    return sorted((r.entity_type, r.start, r.end, r.score) for r in results)


def same(fa: FastAnalyzer, text: str, entities: list[str]) -> None:
    assert key(fa.analyze(text, entities)) == key(fa.reference(text, entities)), text


@pytest.mark.skipif(not DATASET.exists(), reason="dataset not present")
def test_fast_path_equals_presidio_on_the_dataset(profile: PIIProfile) -> None:
    data = json.loads(DATASET.read_text())
    for row in data[::3]:
        same(profile.analyzer, row["full_text"], profile.entities)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.sampled_from(PIECES), max_size=60),
    sep=st.sampled_from([" ", "  ", "\n", ", "]),
    pad=st.integers(min_value=0, max_value=400),
)
def test_fast_path_equals_presidio_on_random_texts(profile: PIIProfile, parts: list[str], sep: str, pad: int) -> None:
    text = sep.join(parts)
    same(profile.analyzer, text, profile.entities)
    same(profile.analyzer, "lorem " * pad + text + " ipsum" * (pad // 3), profile.entities)


def test_bad_input_is_scanned_in_bounded_time(profile: PIIProfile) -> None:
    cases = {
        "digits": "7" * 1_000_000,
        "digit groups": "12 34 " * 50_000,
        "dashes": "1-2-3-4-" * 40_000,
        "at signs": ("a" * 5000 + "@") * 60,
        "email-ish run": "x." * 150_000 + "@",  # quadratic for the stock email pattern
        "dots": "1.2.3." * 50_000,
        "hex colons": "ab:" * 100_000,
        "ssn soup": "536-90-4399," * 25_000,
        "iban-ish groups": "GB82 WEST " * 50_000,
        "letter-digit groups": "ab12-" * 100_000,
        "colons": ":" * 300_000,
        "address runs": "x@x." * 100_000,
        "dotted hosts": "a." * 200_000 + "internal",
        "non-utf8 decoded": (b"\xff\xfe\x00abc" * 50_000).decode("utf-8", "replace"),
    }
    for name, text in cases.items():
        t = time.perf_counter()
        profile.findings(text)
        assert time.perf_counter() - t < 5, name


def test_long_texts_are_scanned_in_overlapping_pieces_with_the_same_findings(profile: PIIProfile) -> None:
    from guard.screens.pii.profile import PIIProfile as P

    unit = "note {i}: mail user{i}@mailbox.org, call +1 415-555-{i:04d}, card 4012888888881881. "
    text = "".join(unit.format(i=i) for i in range(600))  # about 50 KB
    small = P("small", profile.settings.model_copy(update={"max_scan_chars": 4096}), profile.analyzer)
    whole = P("whole", profile.settings.model_copy(update={"max_scan_chars": 10**7}), profile.analyzer)
    assert small.findings(text) == whole.findings(text)
    assert len(whole.findings(text)) == 1800


def test_a_stock_analyzer_still_builds_beside_guards_recognizers() -> None:
    """Presidio's registry loader finds recognizer classes by name: Guard's must not shadow them."""
    from presidio_analyzer import AnalyzerEngine

    from guard.screens.pii.engine import BlankSpacyEngine

    stock = AnalyzerEngine(nlp_engine=BlankSpacyEngine())
    names = {type(r).__name__ for r in stock.registry.recognizers}
    assert {"PhoneRecognizer", "CreditCardRecognizer", "EmailRecognizer"} <= names
