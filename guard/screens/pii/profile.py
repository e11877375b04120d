"""A PII profile ready to use: its settings, the shared analyzer, and ``findings(text)``.

``findings`` is the one place where thresholds, allowlists and overlaps are decided, so prompts,
answers, streams and ``guard scan`` all see the same findings for the same text.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from presidio_analyzer import RecognizerResult

from guard.screens import budget, linear_re
from guard.screens.pii.analyzer import FastAnalyzer
from guard.screens.pii.engine import Finding, shared_engine
from guard.screens.pii.recognizers import ConfiguredRecognizer
from guard.screens.pii.settings import PIIFile, Profile, RecognizerSpec, read_pii_file
from guard.screens.pii.source import source_of
from guard.screens.pii.transform import Pseudonyms, Rewriter

_OVERLAP = 1024  # long texts are scanned in pieces overlapping by this much (longer than any match)


@dataclass
class PIIProfile:
    name: str
    settings: Profile
    analyzer: FastAnalyzer
    hash_key: bytes | None = field(default=None, repr=False)
    source: Any = field(default=None, repr=False)  # pii_pool.Source: where worker processes load it from

    def __post_init__(self) -> None:
        self.entities = sorted(self.settings.entities)
        self._allow_values = frozenset(self.settings.allowlist.values)
        self._allow_res = [linear_re.compile(r) for r in self.settings.allowlist.regexes]

    # --- detection ---------------------------------------------------------------------------------------

    def findings(self, text: str, exclude: Iterable[tuple[int, int]] = ()) -> list[Finding]:
        """Findings above their type's threshold, not allowlisted, not overlapping ``exclude`` spans
        (placeholders), and not overlapping each other (the higher score, then the longer, wins)."""
        if not text:
            return []
        raw = self._analyze(text)
        ex = list(exclude)
        rules = self.settings.entities
        out = []
        for r in raw:
            rule = rules.get(r.entity_type)
            if rule is None or r.score < rule.threshold or self.allowed(text[r.start : r.end]):
                continue
            if any(r.start < b and a < r.end for a, b in ex):
                continue
            out.append(Finding(r.entity_type, r.start, r.end, float(r.score)))
        return resolve_overlaps(out)

    def allowed(self, value: str) -> bool:
        return value in self._allow_values or any(p.fullmatch(value) for p in self._allow_res)

    def _analyze(self, text: str) -> list[RecognizerResult]:
        limit = self.settings.max_scan_chars
        if len(text) <= limit:
            return self.analyzer.analyze(text, self.entities)
        out: list[RecognizerResult] = []
        step, n, a = limit - _OVERLAP, len(text), 0
        while a < n:
            budget.check()  # between pieces: a request over its screening budget stops here
            b = min(n, a + limit)
            lo = a + _OVERLAP // 2 if a > 0 else 0
            hi = b - _OVERLAP // 2 if b < n else n
            for r in self.analyzer.analyze(text[a:b], self.entities):
                if lo <= r.start + a < hi:
                    r.start, r.end = r.start + a, r.end + a
                    out.append(r)
            a += step
        return out

    # --- actions ---------------------------------------------------------------------------------------

    def action(self, entity_type: str, direction: str) -> str:
        rule = self.settings.entities.get(entity_type)
        return "redact" if rule is None else getattr(rule, direction)

    def rewriter(self, direction: str, pseudonyms: Pseudonyms) -> Rewriter:
        ents = self.settings.entities
        return Rewriter(
            {k: getattr(v, direction) for k, v in ents.items()},
            {k: v.mask_keep for k, v in ents.items()},
            pseudonyms,
            self.hash_key,
        )


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings: higher score, then longer, then earlier."""
    starts: list[int] = []
    kept: list[Finding] = []  # sorted by start, never overlapping
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start, f.entity_type)):
        i = bisect.bisect_left(starts, f.end)
        if i and kept[i - 1].end > f.start:
            continue
        starts.insert(i, f.start)
        kept.insert(i, f)
    return kept


def _custom(spec: RecognizerSpec) -> ConfiguredRecognizer:
    from presidio_analyzer import Pattern

    pats = [Pattern(p.name or f"{spec.name}_{i}", p.regex, p.score) for i, p in enumerate(spec.patterns)]
    return ConfiguredRecognizer(
        validator=spec.validator,
        supported_entity=spec.entity_type,
        patterns=pats,
        context=spec.context or None,
        name=spec.name,
        supported_language="en",
    )


def _analyzer(spec: PIIFile, prof: Profile) -> FastAnalyzer:
    customs = [r.model_dump(mode="json") for r in spec.recognizers]
    ner = prof.ner.model_dump(mode="json") if prof.ner else None
    key = json.dumps([customs, ner], sort_keys=True)

    def extra() -> list[Any]:
        recs: list[Any] = [_custom(r) for r in spec.recognizers]
        if prof.ner is not None:
            from guard.screens.pii.ner import ner_recognizer

            recs.append(ner_recognizer(prof.ner))
        return recs

    return FastAnalyzer(shared_engine(key, extra))


def load_pii_profiles(path: str | os.PathLike[str]) -> dict[str, PIIProfile]:
    """All profiles of a filters/pii.yaml. Raises ConfigError naming file, line and key path."""
    spec, key = read_pii_file(Path(path))
    return {
        name: PIIProfile(name, prof, _analyzer(spec, prof), key, source_of(path, name))
        for name, prof in spec.profiles.items()
    }
