"""Guard's own recognizers where Presidio's stock ones miss real-world formats.

Phone numbers: the stock recognizer runs libphonenumber's matcher for eight regions over the whole text
(most of the analyzer's time) and misses national formats of other countries. This one finds
phone-shaped digit groups with one regular expression, scores them by shape (international prefix,
North American layout, trunk prefix valid in a known region) and by nearby words (``Phone:``,
``call me on``, ``... -Fax``), and lets libphonenumber validate only the few candidates.

(IBAN, e-mail, SSN and IP addresses: guard/screens/pii/formats.py.)

Credit cards: Luhn plus the issuer ranges and lengths of the real networks (Visa 13/16/19 digits,
Mastercard 2-series, JCB 15-digit, Maestro 12-19, ...); numbers that pass Luhn but fit no network
need a card word nearby.

Both score context from the raw text around the match (a few words before, a label right after), so
they need no tokens and their result does not depend on how far the text reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import phonenumbers
import regex as re
from presidio_analyzer import LocalRecognizer, Pattern, PatternRecognizer, RecognizerResult

from guard.screens import linear_re

_WORD = re.compile(r"[^\W\d_]+")


def words_before(text: str, start: int, n: int, chars: int = 60) -> list[str]:
    return [w.lower() for w in _WORD.findall(text, max(0, start - chars), start)][-n:]


WORD_AFTER_CHARS = 14  # a label word after a value is looked for this far (and read no farther)


def word_after(text: str, end: int, chars: int = WORD_AFTER_CHARS) -> str:
    m = _WORD.search(text, end, min(len(text), end + chars))
    if m is None or text[end : m.start()].strip(" -,.(/\\") != "":
        return ""
    return m.group().lower()


def _result(rec: LocalRecognizer, entity: str, start: int, end: int, score: float) -> RecognizerResult:
    return RecognizerResult(
        entity,
        start,
        end,
        min(score, 1.0),
        recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: str(getattr(rec, "name", "")),
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: rec.id,
        },
    )


# --- validators ------------------------------------------------------------------------------------------


def luhn(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_mod97(value: str) -> bool:
    s = "".join(c for c in value.upper() if c.isalnum())
    if len(s) < 15 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    n = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(n) % 97 == 1


def mod11(value: str) -> bool:
    """Weighted mod-11 with weights n..2 over the leading digits, last digit the check (NHS-style)."""
    digits = [int(c) for c in value if c.isdigit()]
    if len(digits) < 2:
        return False
    body, check = digits[:-1], digits[-1]
    rem = sum(d * w for d, w in zip(body, range(len(body) + 1, 1, -1), strict=False)) % 11
    expect = (11 - rem) % 11
    return expect != 10 and expect == check


_VD = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VP = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def verhoeff(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()]
    c = 0
    for i, d in enumerate(reversed(digits)):
        c = _VD[c][_VP[i % 8][d]]
    return bool(digits) and c == 0


VALIDATORS: dict[str, Callable[[str], bool]] = {"luhn": luhn, "iban": iban_mod97, "mod11": mod11, "verhoeff": verhoeff}


class ConfiguredRecognizer(PatternRecognizer):
    """A recognizer declared in filters/pii.yaml: regexes, context words, an optional checksum.

    The regexes run on RE2 (linear time, guard.screens.linear_re) with Presidio's default flags (case
    insensitive, ``.`` matches a newline, ``^``/``$`` at line ends); a group named ``hit`` marks the finding
    inside a longer match. A passing checksum sets the score to 1.0 and a failing one drops the match
    (Presidio's rule)."""

    patterns: list[Pattern]  # set by PatternRecognizer.__init__
    name: str

    def __init__(self, validator: str | None = None, **kwargs: Any) -> None:
        self._validator = VALIDATORS[validator] if validator else None
        super().__init__(**kwargs)
        self._linear = [(p, linear_re.compile("(?ms)" + p.regex, ignore_case=True)) for p in self.patterns]

    def validate_result(self, pattern_text: str) -> bool | None:
        return None if self._validator is None else self._validator(pattern_text)

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: Any = None, regex_flags: int | None = None
    ) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        for pattern, rx in self._linear:
            for start, end in linear_re.spans(rx, text):
                if start == end:
                    continue
                value = text[start:end]
                ok = self.validate_result(value)
                score = pattern.score if ok is None else self.MAX_SCORE if ok else self.MIN_SCORE
                if score > self.MIN_SCORE:
                    r = _result(self, self.supported_entities[0], start, end, score)
                    r.analysis_explanation = self.build_regex_explanation(  # the context pass notes its boost here
                        self.name, pattern.name, pattern.regex, score, cast("bool", ok), 0
                    )  # Presidio passes None too
                    out.append(r)
        return self.remove_duplicates(out)


# --- credit cards ----------------------------------------------------------------------------------------

_CARD = re.compile(
    r"(?<![\w.\-])(?:\d{4}([ .\-]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{4}([ .\-])\d{6}\2\d{4,5}|\d{12,19})"
    r"(?![\w\-]|[.,]\d)"
)

# (first digits, lowest, highest, allowed lengths): the issuer ranges of the card networks
_NETWORKS: list[tuple[int, int, int, frozenset[int]]] = [
    (1, 4, 4, frozenset({13, 16, 19})),  # Visa
    (2, 51, 55, frozenset({16})),  # Mastercard
    (4, 2221, 2720, frozenset({16})),  # Mastercard 2-series
    (2, 34, 34, frozenset({15})),
    (2, 37, 37, frozenset({15})),  # American Express
    (4, 6011, 6011, frozenset(range(16, 20))),
    (3, 644, 649, frozenset(range(16, 20))),  # Discover
    (2, 65, 65, frozenset(range(16, 20))),
    (4, 3528, 3589, frozenset(range(16, 20))),
    (4, 2131, 2131, frozenset({15})),  # JCB
    (4, 1800, 1800, frozenset({15})),
    (3, 300, 305, frozenset(range(14, 20))),
    (2, 36, 36, frozenset(range(14, 20))),  # Diners
    (2, 38, 39, frozenset(range(16, 20))),
    (2, 50, 50, frozenset(range(12, 20))),
    (2, 56, 69, frozenset(range(12, 20))),  # Maestro
    (4, 2200, 2204, frozenset(range(16, 20))),  # Mir
]
CARD_CONTEXT = frozenset(
    {
        "card",
        "cards",
        "credit",
        "debit",
        "cc",
        "visa",
        "mastercard",
        "amex",
        "maestro",
        "jcb",
        "discover",
        "diners",
        "unionpay",
        "pan",
        "payment",
        "billing",
        "charge",
        "cvv",
        "expiry",
        "creditcard",
    }
)


def card_network(digits: str) -> bool:
    n = len(digits)
    return any(n in lengths and lo <= int(digits[:k]) <= hi for k, lo, hi, lengths in _NETWORKS)


class GuardCardRecognizer(LocalRecognizer):
    """Luhn-valid 12-19 digit numbers, compact or in groups split by spaces, dashes or dots: 0.9 when
    they fit a network, else 0.4, plus 0.4 near card words."""

    stream_source = (_CARD.pattern, 0)

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["CREDIT_CARD"], supported_language="en", name="GuardCreditCardRecognizer", context=[]
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out = []
        for m in _CARD.finditer(text):
            digits = "".join(c for c in m.group() if c.isdigit())
            if not luhn(digits):
                continue
            score = 0.9 if card_network(digits) else 0.4
            if CARD_CONTEXT.intersection(words_before(text, m.start(), 6)):
                score += 0.4
            out.append(_result(self, "CREDIT_CARD", m.start(), m.end(), score))
        return out


# --- phone numbers ---------------------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?<![\w+@/.\-])"
    r"(?P<intl>(?:\+|\b00)\d{1,3}(?:[ .\-]?\(0\))?[ .\-]?)?"
    r"(?P<body>(?:\(\d{1,5}\)[ .\-]?)?\d{1,12}(?:[ .\-]\d{1,8}){0,6})"
    r"(?P<ext>[ ]?(?:x|ext\.?|extension)[ ]?\d{1,6})?"
    r"(?![\w@]|[.\-]\d|:\d)",
    re.I,
)
_NANP = re.compile(r"(?:1[ .\-])?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}")
_IPV4ISH = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DATEISH = re.compile(r"\d{4}[\-.]\d{1,2}[\-.]\d{1,2}(?:\D.*)?|\d{1,2}[\-.]\d{1,2}[\-.]\d{4}")
_SSNISH = re.compile(r"\d{3}([ .\-])\d{2}\1\d{4}")
# "T: ...", "Desk: ...", "Office: ..." (but not "the office is at ...")
_LABEL = re.compile(r"(?:^|\W)(?:[tmpfhoc]|desk|office|direct|home|work|main)\s*[.:]\s*$", re.I)
PHONE_CONTEXT = frozenset(
    {
        "phone",
        "phones",
        "telephone",
        "tel",
        "tele",
        "mobile",
        "mob",
        "cell",
        "cellphone",
        "cellular",
        "fax",
        "call",
        "calls",
        "called",
        "calling",
        "dial",
        "ring",
        "text",
        "texting",
        "sms",
        "message",
        "messages",
        "whatsapp",
        "contact",
        "reach",
        "answer",
        "answering",
        "landline",
        "hotline",
        "helpline",
        "ph",
        "tlf",
        "telefon",
        "telefono",
        "phonenumber",
    }
)
PHONE_LABELS_AFTER = frozenset(
    {"office", "fax", "mobile", "cell", "home", "work", "desk", "direct", "tel", "phone", "landline"}
)
TRUNK_REGIONS = (
    "GB",
    "DE",
    "FR",
    "IT",
    "ES",
    "NL",
    "BE",
    "CH",
    "AT",
    "SE",
    "AU",
    "ZA",
    "IN",
    "BR",
    "IE",
    "PL",
    "PT",
    "DK",
    "NO",
    "FI",
    "IL",
    "JP",
)


def _valid(number: str, region: str | None) -> tuple[bool, bool]:
    try:
        n = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False, False
    return phonenumbers.is_valid_number(n), phonenumbers.is_possible_number(n)


def phone_shape_score(intl: str, body: str) -> float:
    """Score from the number alone: 0 means 'not a phone number' (an IP, a date, an SSN)."""
    digits = sum(c.isdigit() for c in intl + body)
    grouped = any(c in body for c in " .-()")
    if not 7 <= digits <= 15 or (not intl and not grouped and digits > 12):
        return 0.0
    if intl:
        number = intl + body
        valid, possible = _valid("+" + number[2:] if number.startswith("00") else number, None)
        return 0.7 if valid else 0.6 if possible else 0.35
    if _IPV4ISH.fullmatch(body) or _DATEISH.fullmatch(body) or _SSNISH.fullmatch(body):
        return 0.0
    if _NANP.fullmatch(body):
        return 0.6 if _valid(body, "US")[0] else 0.4
    if grouped and body.lstrip("(").startswith("0") and any(_valid(body, r)[0] for r in TRUNK_REGIONS):
        return 0.45
    return 0.3


def phone_context(text: str, start: int, end: int) -> bool:
    if PHONE_CONTEXT.intersection(words_before(text, start, 4, 48)):
        return True
    if _LABEL.search(text, max(0, start - 10), start):
        return True
    return word_after(text, end) in PHONE_LABELS_AFTER


class GuardPhoneRecognizer(LocalRecognizer):
    """Phone-shaped digit groups, 7-15 digits; shape score plus 0.35 near phone words."""

    stream_source = (_PHONE.pattern, _PHONE.flags)

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["PHONE_NUMBER"], supported_language="en", name="GuardPhoneRecognizer", context=[]
        )

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out = []
        for m in _PHONE.finditer(text):
            score = phone_shape_score(m.group("intl") or "", m.group("body"))
            if score <= 0:
                continue
            if phone_context(text, m.start(), m.end()):
                score += 0.35
            out.append(_result(self, "PHONE_NUMBER", m.start(), m.end(), score))
        return out
