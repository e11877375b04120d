"""Every shipped entity type in the formats people write (spaced, dashed, dotted, any case), validated by
checksum or rule, and a corpus of ordinary text that must yield no finding at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.screens.pii.formats import (
    IBAN_LENGTHS,
    RESERVED_TLDS,
    public_tlds,
    ssn_issued,
)
from guard.screens.pii.profile import PIIProfile, load_pii_profiles
from guard.screens.pii.recognizers import iban_mod97

SHIPPED = Path(__file__).parents[2] / "filters" / "pii.yaml"


@pytest.fixture(scope="module")
def profiles() -> dict[str, PIIProfile]:
    return load_pii_profiles(SHIPPED)


@pytest.fixture(scope="module")
def strict(profiles: dict[str, PIIProfile]) -> PIIProfile:
    return profiles["strict"]  # every built-in type on, no allowlist


def found(profile: PIIProfile, text: str) -> list[tuple[str, str]]:
    return [(f.entity_type, text[f.start : f.end]) for f in profile.findings(text)]


def variants(value: str) -> list[str]:
    """The value grouped by spaces, dashes and dots, in upper, lower and mixed case."""
    out = []
    for sep in (" ", "-", "."):
        v = value.replace(" ", sep)
        out += [v, v.upper(), v.lower(), "".join(c.lower() if i % 2 else c for i, c in enumerate(v))]
    return out


# --- IBAN ------------------------------------------------------------------------------------------------

IBANS = [
    "GB82 WEST 1234 5698 7654 32",
    "DE89 3704 0044 0532 0130 00",
    "FR76 3000 6000 0112 3456 7890 189",
    "NL91 ABNA 0417 1643 00",
    "CH93 0076 2011 6238 5295 7",
    "NO93 8601 1117 947",
    "BE68 5390 0754 7034",
    "IT60 X054 2811 1010 0000 0123 456",
    "ES91 2100 0418 4502 0005 1332",
    "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
]


@pytest.mark.parametrize("iban", [v for i in IBANS for v in variants(i)] + [i.replace(" ", "") for i in IBANS])
def test_iban_in_every_grouping_and_case(strict: PIIProfile, iban: str) -> None:
    for text in (f"pay to {iban} today", f"IBAN: {iban}.", f"({iban})", iban):
        assert found(strict, text) == [("IBAN_CODE", iban)], text


@pytest.mark.parametrize(
    "text",
    [
        "pay to GB82 WEST 1234 5698 7654 33 today",  # mod-97 fails
        "pay to GB82 WEST 1234 5698 7654 3 today",  # one character short for GB
        "ref GB82WEST123456987654321",  # runs on past GB's 22 characters
        "pay to GB82 WEST-1234.5698 7654 32",  # mixed separators
        "code ZZ82 WEST 1234 5698 7654 32",  # no such country
        "the SKU AB12 CD34 EF56 is back in stock",
    ],
)
def test_iban_look_alikes(strict: PIIProfile, text: str) -> None:
    assert "IBAN_CODE" not in {t for t, _ in found(strict, text)}


def test_iban_table_and_checksum() -> None:
    assert IBAN_LENGTHS["GB"] == 22 and IBAN_LENGTHS["DE"] == 22 and IBAN_LENGTHS["NO"] == 15
    assert all(iban_mod97(i) for i in IBANS)


# --- e-mail ----------------------------------------------------------------------------------------------

RESERVED = [
    "ops@billing.internal",
    "jane.doe@acme.corp",
    "printer@office.local",
    "dev+ci@build.example",
    "qa@staging.test",
    "x@bad.invalid",
    "root@box.localhost",
    "nas@home.lan",
    "pi@router.home.arpa",
    "a.b_c-d@sub.intranet",
    "OPS@BILLING.INTERNAL",
    "Jane.Doe@Acme.Corp",
]
PUBLIC = [
    "ann.lee@mailbox.org",
    "b_o+x@sub.example.co.uk",
    "JOHN@EXAMPLE.COM",
    "t'o@acme-corp.io",
    "u@xn--bcher-kva.de",
]


@pytest.mark.parametrize("addr", RESERVED + PUBLIC)
def test_email_at_public_reserved_and_internal_domains(strict: PIIProfile, addr: str) -> None:
    for text in (f"mail {addr} today", f"<{addr}>", f"Contact: {addr}.", f"({addr}),", addr):
        assert found(strict, text) == [("EMAIL_ADDRESS", addr)], text


@pytest.mark.parametrize(
    "text",
    [
        "install left-pad@1.3.0 with npm",
        "ping @alice and @bob",
        "user@localhost is not routable",
        "name@domain.notatld",
        "a@b",
        "x@y.z1",
        "see foo@.com",
        "price @ 3.50 each",
        "git tag v1@2.0",
    ],
)
def test_email_look_alikes(strict: PIIProfile, text: str) -> None:
    assert "EMAIL_ADDRESS" not in {t for t, _ in found(strict, text)}


def test_reserved_names_are_not_public_tlds() -> None:
    assert "com" in public_tlds() and "uk" in public_tlds()
    assert {"internal", "corp", "local", "example", "test", "invalid", "localhost", "lan"} <= RESERVED_TLDS


def test_a_long_run_of_at_signs_is_linear(strict: PIIProfile) -> None:
    text = "a." * 50_000 + "@" + "b." * 50_000 + "@x.internal"
    assert found(strict, text) == []  # no valid local part; finishes (each @ reads at most ~320 characters)


# --- credit cards ----------------------------------------------------------------------------------------

CARDS = [
    "4012 8888 8888 1881",
    "5555 5555 5555 4444",
    "2223 0031 2200 3222",
    "6011 1111 1111 1117",
    "3530 1113 3330 0000",
]


@pytest.mark.parametrize(
    "card",
    [c.replace(" ", s) for c in CARDS for s in (" ", "-", ".", "")]
    + ["3782 822463 10005", "3782-822463-10005", "3782.822463.10005"],
)
def test_cards_spaced_dashed_dotted_compact(strict: PIIProfile, card: str) -> None:
    for text in (f"card {card} exp 12/29", f"pay with {card}.", card):
        assert found(strict, text) == [("CREDIT_CARD", card)], text


@pytest.mark.parametrize(
    "text",
    [
        "card 4012 8888 8888 1882",
        "card 4012-8888.8888 1881",
        "tracking 1Z999AA10123456784",
        "build 4012.8888.8888.1881.7",
    ],
)
def test_card_look_alikes(strict: PIIProfile, text: str) -> None:
    assert "CREDIT_CARD" not in {t for t, _ in found(strict, text)}


# --- phone numbers ---------------------------------------------------------------------------------------

PHONES = [
    "+1 415 555 0134",
    "+1-415-555-0134",
    "+1.415.555.0134",
    "+1 (415) 555-0134",
    "(415) 555-0134",
    "415-555-0134",
    "415.555.0134",
    "415 555 0134",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "+49 30 901820",
    "+49-30-901820",
    "0049 30 901820",
    "+33 1 42 68 53 00",
    "+33.1.42.68.53.00",
    "+61 2 9876 5432",
    "+91 98765 43210",
]


@pytest.mark.parametrize("phone", PHONES)
def test_phone_formats(strict: PIIProfile, phone: str) -> None:
    for text in (f"call me on {phone} tomorrow", f"Phone: {phone}", f"{phone} (mobile)"):
        assert found(strict, text) == [("PHONE_NUMBER", phone)], text


# --- US SSN ----------------------------------------------------------------------------------------------

SSNS = ["536-90-4399", "536 90 4399", "536.90.4399", "123-45-6789", "078-05-1121"]


@pytest.mark.parametrize("ssn", SSNS)
def test_ssn_with_one_separator(strict: PIIProfile, ssn: str) -> None:
    for text in (f"my SSN is {ssn}", f"ssn: {ssn}.", f"the number {ssn} on file", ssn):
        assert found(strict, text) == [("US_SSN", ssn)], text


def test_nine_digits_are_an_ssn_only_next_to_ssn_words(strict: PIIProfile) -> None:
    assert found(strict, "Social Security number 536904399") == [("US_SSN", "536904399")]
    assert found(strict, "SSN: 536904399") == [("US_SSN", "536904399")]
    assert "US_SSN" not in {t for t, _ in found(strict, "order 536904399 shipped")}


@pytest.mark.parametrize(
    "value",
    [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "987-65-4321",
        "536-00-4399",
        "536-90-0000",
        "111-11-1111",
        "536-90 4399",
        "536.90-4399",
    ],
)
def test_ssns_never_issued_or_mixed_separators(strict: PIIProfile, value: str) -> None:
    assert "US_SSN" not in {t for t, _ in found(strict, f"my SSN is {value}")}


def test_ssn_area_rules() -> None:
    assert ssn_issued("536904399") and ssn_issued("899990001")
    assert not any(ssn_issued(v) for v in ("000123456", "666123456", "900123456", "536004399", "536900000"))


# --- IP addresses ----------------------------------------------------------------------------------------

IPS = [
    "10.0.0.7",
    "192.168.10.20",
    "8.8.8.8",
    "10.20.0.0/16",
    "2001:db8::ff00:42:8329",
    "2001:DB8::FF00:42:8329",
    "Fe80::1ff:FE23:4567:890a",
    "fe80::1%eth0",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "::ffff:192.0.2.128",
]


@pytest.mark.parametrize("ip", IPS)
def test_ip_addresses(strict: PIIProfile, ip: str) -> None:
    for text in (f"the host at {ip} is down", f"ip={ip}", f"({ip}).", ip):
        assert found(strict, text) == [("IP_ADDRESS", ip)], text


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3.4 released",
        "upgrade to v 2.10.0.1",
        "999.10.10.10 units",
        "meet at 12:30:45",
        "MAC 00:1A:2B:3C:4D:5E",
        "std::vector<int>",
        "release 10.0.19041.1",
        "the ratio 1:2:3",
    ],
)
def test_ip_look_alikes(strict: PIIProfile, text: str) -> None:
    assert "IP_ADDRESS" not in {t for t, _ in found(strict, text)}


# --- precision: ordinary text ----------------------------------------------------------------------------

PROSE = [
    "Please summarize the meeting notes from 2024-03-12 and list the action items.",
    "The build for version 4.2.1 failed; 3.9.12 and 10.0.19041.1 still pass.",
    "Order #A-20931-7781 shipped on 12/03/2024, invoice INV-2024-000187 is attached.",
    "Prices: $1,299.00 for the laptop, EUR 49.99 for the bag, 3 x 12.50 for cables.",
    "The meeting moved from 09:30 to 14:45 on Friday 15.03.2024 (room 4.12).",
    "Our revenue grew 12.5% to 4,350,000 in Q3 2023; headcount is 1,204.",
    "Use pip install requests==2.31.0 and numpy>=1.26; Python 3.11.7 is required.",
    "Ticket JIRA-48213 blocks PR #5521; see commit 9f8e7d6c5b4a3f2e1d0c.",
    "The coordinates are 48.8566, 2.3522 and the elevation 35 m.",
    "Serial numbers 2024 0001 through 2024 0450 were recalled.",
    "ISBN 978-3-16-148410-0 and ISSN 2049-3630 are both listed.",
    "Send the report to the team lead at the usual address before noon.",
    "The tracking number is 1Z999AA10123456784 per the carrier.",
    "Room temperatures ranged from 18.5 to 23.0 degrees over 7 days.",
    "Chapter 3, section 4.1.2, paragraph 7 explains the retention rule.",
    "We shipped 1234567 units, 7654321 returns and 1000000 spares.",
    "The UUID is 123e4567-e89b-12d3-a456-426614174000 for that record.",
    "Date range: 2023-01-01 to 2023-12-31, times 08:00-17:00 UTC.",
    "Call the function with args (1, 2, 3) and kwargs {'a': 1}.",
    "Product code SKU AB12CD34 and batch B2024-11-07-003.",
    "Latency p50 12.3 ms, p99 187.4 ms, 99.95% availability over 30 days.",
    "See RFC 5321 section 4.5.3.1.1 for the 64 octet local part limit.",
    "Our SLA is 99.9; the page had 404 and 502 errors at 3:14 am.",
    "Docker image python:3.12-slim@sha256 pinned in the Dockerfile.",
]


@pytest.mark.parametrize("text", PROSE)
def test_ordinary_text_has_no_findings(profiles: dict[str, PIIProfile], text: str) -> None:
    for name, profile in profiles.items():
        assert found(profile, text) == [], name
