"""Presidio, offline: a blank spaCy pipeline, an offline public-suffix list, Guard's recognizers.

Building an AnalyzerEngine is the slow part (recognizer registry, spaCy vocabulary); ``shared_engine``
builds one per process and per set of custom recognizers, and every profile shares it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from spacy.attrs import LEMMA, LOWER
from spacy.language import Language

from guard.screens.pii.formats import (
    GuardEmailRecognizer,
    GuardIbanRecognizer,
    GuardIpRecognizer,
    GuardSsnRecognizer,
)
from guard.screens.pii.recognizers import GuardCardRecognizer, GuardPhoneRecognizer

LANGUAGE = "en"
BUILTIN_ENTITIES = ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "PHONE_NUMBER", "US_SSN", "IP_ADDRESS")

# Presidio logs candidate values on some errors (e.g. "Failed to validate text ..."): keep it quiet.
logging.getLogger("presidio-analyzer").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Finding:
    """One detected value: where it is, what it is, how sure. The value itself is read from the text."""

    entity_type: str
    start: int
    end: int
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"entity_type": self.entity_type, "start": self.start, "end": self.end, "score": round(self.score, 4)}


# --- offline pieces --------------------------------------------------------------------------------------

_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _patch_tldextract() -> None:
    """The email recognizer calls ``tldextract.extract``, which fetches the public suffix list on first
    use. Point it at an extractor that only reads the snapshot bundled with tldextract."""
    from guard.compat.presidio_engine import use_offline_suffix_list

    use_offline_suffix_list(_OFFLINE_TLD)


@Language.component("guard_lower_lemma")
def _lower_lemma(doc: Any) -> Any:
    """A blank pipeline leaves lemmas empty, which silently turns off Presidio's context boosting.
    (Same as ``token.lemma_ = token.lower_`` for each token, without making a Token object each.)"""
    if len(doc):
        doc.from_array([LEMMA], doc.to_array([LOWER]))
    return doc


def blank_nlp() -> Language:
    nlp = spacy.blank(LANGUAGE)
    nlp.add_pipe("guard_lower_lemma")
    return nlp


class BlankSpacyEngine(SpacyNlpEngine):
    """SpacyNlpEngine that never loads or downloads a model: it is given its pipeline."""

    def __init__(self, nlp: Language | None = None) -> None:
        super().__init__(
            models=[{"lang_code": LANGUAGE, "model_name": "blank"}],
            ner_model_configuration=NerModelConfiguration(labels_to_ignore=[]),
        )
        self.nlp = {LANGUAGE: nlp or blank_nlp()}  # type: ignore[assignment]

    def load(self) -> None:  # never spacy.cli.download
        pass


# --- engine --------------------------------------------------------------------------------------------


def builtin_recognizers() -> list[EntityRecognizer]:
    return [
        GuardEmailRecognizer(),
        GuardCardRecognizer(),
        GuardIbanRecognizer(),
        GuardPhoneRecognizer(),
        GuardSsnRecognizer(),
        GuardIpRecognizer(),
    ]


def build_engine(extra: Iterable[EntityRecognizer] = (), nlp: Language | None = None) -> AnalyzerEngine:
    """An AnalyzerEngine with Guard's recognizers only (no NER unless ``extra`` brings one)."""
    _patch_tldextract()
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for rec in [*builtin_recognizers(), *extra]:
        registry.add_recognizer(rec)
    return AnalyzerEngine(registry=registry, nlp_engine=BlankSpacyEngine(nlp), supported_languages=[LANGUAGE])


_LOCK = threading.Lock()
_ENGINES: dict[Any, AnalyzerEngine] = {}


def shared_engine(key: Any = (), extra: Callable[[], Iterable[EntityRecognizer]] = tuple) -> AnalyzerEngine:
    """One engine per process per ``key`` (the identity of the custom recognizers and NER model);
    ``extra`` builds those recognizers, only when the engine is new."""
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = build_engine(extra())
        return eng
