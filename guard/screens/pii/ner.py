"""Optional named-entity recognition (names, places, organisations) from a local model folder.

Off by default: the pattern recognizers need no model. A profile's ``ner`` names either a saved spaCy
pipeline or a transformers token-classification model; neither is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from presidio_analyzer import LocalRecognizer, RecognizerResult

from guard.config import ConfigError
from guard.screens.pii.settings import Ner


class _NerRecognizer(LocalRecognizer):
    guard_self_contained = True  # runs its own model; needs no tokens from the analyzer

    def __init__(self, labels: dict[str, str], score: float, name: str) -> None:
        self.labels, self.score = labels, score
        super().__init__(
            supported_entities=sorted(set(labels.values())), supported_language="en", name=name, context=[]
        )

    def load(self) -> None:
        pass

    def _result(self, label: str, start: int, end: int, score: float) -> RecognizerResult | None:
        etype = self.labels.get(label)
        if etype is None:
            return None
        return RecognizerResult(
            etype,
            start,
            end,
            score,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: str(getattr(self, "name", "")),
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


class SpacyNerRecognizer(_NerRecognizer):
    def __init__(self, path: Path, labels: dict[str, str], score: float) -> None:
        import spacy

        try:
            self.nlp = spacy.load(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"ner.spacy: cannot load the spaCy pipeline at {path}: {e}") from None
        super().__init__(labels, score, "GuardSpacyNer")

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        doc = self.nlp(text)
        found = (self._result(e.label_, e.start_char, e.end_char, self.score) for e in doc.ents)
        return [r for r in found if r is not None and r.entity_type in entities]


class TransformersNerRecognizer(_NerRecognizer):
    def __init__(self, path: Path, labels: dict[str, str], score: float) -> None:
        try:
            from transformers import pipeline
        except ImportError:
            raise ConfigError("ner.transformers: the transformers package is not installed") from None
        if not Path(path).is_dir():
            raise ConfigError(f"ner.transformers: {path} is not a model folder")
        self.pipe = pipeline("token-classification", model=str(path), aggregation_strategy="simple")
        super().__init__(labels, score, "GuardTransformersNer")

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out = []
        for e in self.pipe(text):
            r = self._result(e["entity_group"], int(e["start"]), int(e["end"]), min(self.score, float(e["score"])))
            if r is not None and r.entity_type in entities:
                out.append(r)
        return out


def ner_recognizer(spec: Ner) -> _NerRecognizer:
    if spec.spacy is not None:
        return SpacyNerRecognizer(spec.spacy, spec.labels, spec.score)
    return TransformersNerRecognizer(spec.transformers, spec.labels, spec.score)  # type: ignore[arg-type]
