"""Guard's recognizers on real-world formats, and what they must leave alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.screens.pii.profile import PIIProfile, load_pii_profiles
from guard.screens.pii.recognizers import iban_mod97, luhn, mod11, verhoeff


@pytest.fixture(scope="module")
def default() -> PIIProfile:
    return load_pii_profiles(Path(__file__).parents[2] / "filters" / "pii.yaml")["default"]


def types(profile: PIIProfile, text: str) -> list[tuple[str, str]]:
    return [(f.entity_type, text[f.start : f.end]) for f in profile.findings(text)]


@pytest.mark.parametrize(
    "text, value",
    [
        ("Call me on +44 20 7946 0958 tomorrow", "+44 20 7946 0958"),
        ("Desk: +41 (0)44 668 18 00", "+41 (0)44 668 18 00"),
        ("office (212) 555-7788 ext. 12", "(212) 555-7788 ext. 12"),
        ("reach me at 415.555.0134", "415.555.0134"),
        ("Tel: 030 901820", "030 901820"),
        ("Mobile:\n06 12 34 56 78", "06 12 34 56 78"),
        ("They're not answering at 99 668472", "99 668472"),
        ("0412 345 678 - mobile", "0412 345 678"),
        ("001-202-555-0101 is the hotline", "001-202-555-0101"),
    ],
)
def test_phone_numbers_in_many_national_formats(default: PIIProfile, text: str, value: str) -> None:
    assert ("PHONE_NUMBER", value) in types(default, text)


@pytest.mark.parametrize(
    "text",
    [
        "Order 2023-08-28 12:13:52 shipped",
        "the server at 192.168.10.20 is down",
        "invoice 4417 1234 was paid",
        "our office is at 17031 2202 Rissik St",
        "version 1.2.3.4 released",
        "SSN 536-90-4399",
        "total 1234567 units",
    ],
)
def test_numbers_that_are_not_phone_numbers(default: PIIProfile, text: str) -> None:
    assert "PHONE_NUMBER" not in {t for t, _ in types(default, text)}


@pytest.mark.parametrize(
    "value",
    [
        "4012888888881881",
        "4222222222222",
        "5555 5555 5555 4444",
        "2223 0031 2200 3222",
        "3782 822463 10005",
        "6011-1111-1111-1117",
        "3530111333300000",
        "6304000000000000",
        "4131034282458809939",
    ],
)
def test_card_numbers_of_every_network(default: PIIProfile, value: str) -> None:
    assert types(default, f"pay with {value} today") == [("CREDIT_CARD", value)]


def test_cards_need_luhn_and_unknown_ranges_need_a_card_word(default: PIIProfile) -> None:
    assert types(default, "ref 4012888888881882 today") == []  # Luhn fails
    assert types(default, "ref 9999999999999995 today") == []  # Luhn ok, no network, no context
    assert types(default, "my card 9999999999999995") == [("CREDIT_CARD", "9999999999999995")]


def test_lower_case_iban_and_other_types(default: PIIProfile) -> None:
    assert types(default, "my iban is gb82west12345698765432") == [("IBAN_CODE", "gb82west12345698765432")]
    assert types(default, "host 10.0.0.7 mail ops@acme-corp.com") == [
        ("IP_ADDRESS", "10.0.0.7"),
        ("EMAIL_ADDRESS", "ops@acme-corp.com"),
    ]


def test_checksums() -> None:
    assert luhn("79927398713") and not luhn("79927398710")
    assert iban_mod97("GB82 WEST 1234 5698 7654 32") and not iban_mod97("GB82 WEST 1234 5698 7654 33")
    assert mod11("9434765919") and not mod11("9434765918")  # NHS number
    assert verhoeff("2363") and not verhoeff("2364")
