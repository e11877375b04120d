"""Guard's IBAN, e-mail, SSN and IP recognizers: the formats people type, validated by checksum or rule.

- IBAN: upper, lower or mixed case, compact or in groups split by spaces, dots or dashes
  (``GB82 WEST 1234 5698 7654 32``, ``de89-3704-...``); the country's length and the mod-97 check decide.
- E-mail: any address whose top-level domain is a public one (the public suffix list bundled with
  tldextract, read offline) or a reserved / internal name companies use (``.internal``, ``.corp``,
  ``.local``, ``.example``, ``.test``, ``home.arpa``, ...), in any case.
- US SSN: ``123-45-6789``, ``123 45 6789``, ``123.45.6789`` (one separator throughout); nine digits in a
  row only next to SSN words. Numbers the SSA never issues (area 000, 666, 900-999, group 00, serial
  0000, one repeated digit) are dropped.
- IP: IPv4 (with an optional prefix length) and IPv6 in any case, as Python's ``ipaddress`` parses
  them; a dotted quad right after ``version``/``v``/``release`` is a version number, not an address.

Each scores from the raw text around the match (no tokens), so the fast analyzer needs no spaCy pass,
and each names ``stream_source``: a pattern (``regex`` syntax) whose matches cover every finding, for
the partial matching of streamed answers (guard/screens/pii/stream.py).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import tldextract
from presidio_analyzer import LocalRecognizer, RecognizerResult

from guard.screens.pii.recognizers import _result, iban_mod97, words_before

# --- IBAN ------------------------------------------------------------------------------------------------

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BI": 27,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DJ": 27,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FK": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HN": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MN": 20,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NI": 28,
    "NL": 18,
    "NO": 15,
    "OM": 23,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "RU": 33,
    "SA": 24,
    "SC": 31,
    "SD": 18,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "SO": 23,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
    "YE": 30,
}
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}")
_IBAN_BODY = re.compile(r"(?:[ .\-]?[A-Za-z0-9]){11,30}")
IBAN_STREAM = r"(?i)(?<![a-z0-9])[a-z]{2}[0-9]{2}(?:[ .\-]?[a-z0-9]){11,30}"


def iban_at(text: str, start: int) -> int:
    """End of a valid IBAN starting at ``start`` (its country code), or -1."""
    need = IBAN_LENGTHS.get(text[start : start + 2].upper())
    if need is None:
        return -1
    m = _IBAN_BODY.match(text, start + 4)
    if m is None:
        return -1
    seen, end, seps = 4, start + 4, set()
    for i in range(start + 4, m.end()):
        c = text[i]
        if c.isalnum():
            seen += 1
            if seen == need:
                end = i + 1
                break
        else:
            seps.add(c)
    else:
        return -1
    if (end < len(text) and text[end].isalnum()) or len(seps) > 1:
        return -1  # the value runs on (a longer code), or mixes separators
    return end if iban_mod97(text[start:end]) else -1


class GuardIbanRecognizer(LocalRecognizer):
    """IBANs in any case, compact or grouped (spaces, dots or dashes), valid by length and mod-97: 1.0."""

    stream_source = (IBAN_STREAM, 0)

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["IBAN_CODE"], supported_language="en", name="GuardIbanRecognizer", context=[]
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out, last = [], 0
        for m in _IBAN_START.finditer(text):
            if m.start() < last:
                continue
            end = iban_at(text, m.start())
            if end > 0:
                out.append(_result(self, "IBAN_CODE", m.start(), end, 1.0))
                last = end
        return out


# --- e-mail ----------------------------------------------------------------------------------------------

# Names reserved for documentation, tests and private networks (RFC 2606, 6761, 6762, 8375) and the
# internal top-level names companies use; the public suffix list does not hold them.
RESERVED_TLDS = frozenset(
    {
        "example",
        "test",
        "invalid",
        "localhost",
        "local",
        "internal",
        "intranet",
        "corp",
        "lan",
        "home",
        "private",
        "localdomain",
        "domain",
        "priv",
    }
)
_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~.-")
_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-]{1,63}(?<!-)|xn--[A-Za-z0-9\-]{1,59}")
EMAIL_STREAM = r"[\w!#$%&'*+/=?^`{|}~.\-]+@[\w.\-]*"
_TLDS: frozenset[str] | None = None


def public_tlds() -> frozenset[str]:
    """Top-level names of the public suffix list snapshot bundled with tldextract (no network)."""
    global _TLDS
    if _TLDS is None:
        extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
        _TLDS = frozenset(s.rsplit(".", 1)[-1].lower() for s in extract.tlds)
    return _TLDS


def _local_ok(c: str) -> bool:
    return c in _LOCAL or (c > "\x7f" and c.isalnum())


def _host_ok(c: str) -> bool:
    return c in _HOST or (c > "\x7f" and c.isalnum())


def email_at(text: str, at: int) -> tuple[int, int] | None:
    """The address around the ``@`` at ``at``, or None."""
    a = at
    while a > 0 and at - a < 64 and _local_ok(text[a - 1]):
        a -= 1
    while a < at and not (text[a].isalnum() or text[a] == "_"):
        a += 1  # an address starts with a letter, digit or underscore
    b, n = at + 1, len(text)
    while b < n and b - at <= 253 and _host_ok(text[b]):
        b += 1
    while b > at + 1 and text[b - 1] in ".-":
        b -= 1  # the end of a sentence, not of the domain
    local, host = text[a:at], text[at + 1 : b]
    if not local or local.endswith(".") or ".." in local or (a > 0 and text[a - 1] == "@"):
        return None
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(x) or (not x.isascii() and x) for x in labels):
        return None
    tld = labels[-1].lower()
    if not (tld.isalpha() and len(tld) >= 2) and not tld.startswith("xn--"):
        return None
    if tld in public_tlds() or tld in RESERVED_TLDS or not tld.isascii():
        return a, b
    return None


class GuardEmailRecognizer(LocalRecognizer):
    """Addresses at public and reserved/internal domains, any case: 1.0. Linear time: each ``@`` reads
    at most 64 characters back and 254 forward."""

    stream_source = (EMAIL_STREAM, 0)

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["EMAIL_ADDRESS"], supported_language="en", name="GuardEmailRecognizer", context=[]
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out, last = [], 0
        at = text.find("@")
        while at >= 0:
            span = email_at(text, at) if at >= last else None
            if span is not None:
                out.append(_result(self, "EMAIL_ADDRESS", span[0], span[1], 1.0))
                last = span[1]
            at = text.find("@", at + 1)
        return out


# --- US SSN ----------------------------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w.\-])(?:([0-9]{3})([ .\-])([0-9]{2})\2([0-9]{4})|([0-9]{9}))(?![\w\-]|[.,][0-9])")
SSN_STREAM = r"(?<![\w.\-])[0-9]{3}([ .\-]?)[0-9]{2}\1[0-9]{4}"
SSN_CONTEXT = frozenset({"ssn", "ssns", "social", "security", "ss", "ssa", "taxpayer", "itin"})


def ssn_issued(digits: str) -> bool:
    """Could the SSA have issued it (area 001-665, 667-899; group 01-99; serial 0001-9999)?"""
    area = int(digits[:3])
    return 0 < area < 900 and area != 666 and digits[3:5] != "00" and digits[5:] != "0000" and len(set(digits)) > 1


class GuardSsnRecognizer(LocalRecognizer):
    """SSNs: grouped with one separator 0.6 (0.95 near SSN words); nine digits in a row only near SSN
    words (0.7)."""

    stream_source = (SSN_STREAM, 0)

    def __init__(self) -> None:
        super().__init__(supported_entities=["US_SSN"], supported_language="en", name="GuardSsnRecognizer", context=[])

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out = []
        for m in _SSN.finditer(text):
            digits = m.group(5) or m.group(1) + m.group(3) + m.group(4)
            if not ssn_issued(digits):
                continue
            near = bool(SSN_CONTEXT.intersection(words_before(text, m.start(), 5)))
            if m.group(5) and not near:
                continue
            score = 0.7 if m.group(5) else 0.95 if near else 0.6
            out.append(_result(self, "US_SSN", m.start(), m.end(), score))
        return out


# --- IP addresses ----------------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:/[0-9]{1,2})?(?![\w]|\.[0-9])")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    r"(?:%[0-9A-Za-z]+)?(?:/[0-9]{1,3})?(?![\w:]|\.[0-9])"
)
IP_STREAM = r"(?i)(?<![\w.:])(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:/[0-9]{1,2})?|(?:[0-9a-f]{0,4}:){2,7}[0-9a-z.%/]*)"
_VERSION_WORDS = frozenset({"version", "versions", "v", "ver", "release", "build", "firmware"})
IP_CONTEXT = frozenset({"ip", "ipv4", "ipv6", "address", "host", "server", "addr"})


def _ip(value: str) -> bool:
    try:
        net = ipaddress.ip_interface(value) if "/" in value else ipaddress.ip_address(value.split("%")[0])
    except ValueError:
        return False
    return not isinstance(net, ipaddress.IPv6Address) or sum(1 for g in value.split(":") if g) >= 2


class GuardIpRecognizer(LocalRecognizer):
    """IPv4 and IPv6 addresses that ``ipaddress`` accepts: 0.6, 0.95 near address words; a dotted quad
    after a version word is dropped."""

    stream_source = (IP_STREAM, 0)

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["IP_ADDRESS"], supported_language="en", name="GuardIpRecognizer", context=[]
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out = []
        for rx in (_IPV4, _IPV6):
            if rx is _IPV6 and ":" not in text:
                continue
            for m in rx.finditer(text):
                if not _ip(m.group()):
                    continue
                before = words_before(text, m.start(), 2)
                if rx is _IPV4 and before[-1:] and before[-1] in _VERSION_WORDS:
                    continue
                score = 0.95 if IP_CONTEXT.intersection(before) else 0.6
                out.append(_result(self, "IP_ADDRESS", m.start(), m.end(), score))
        return out
