"""The fast path through Presidio: the same findings as ``AnalyzerEngine.analyze``, at a fraction of the cost.

``AnalyzerEngine.analyze`` runs every recognizer over the text and tokenizes the whole text with spaCy,
only to look at the five words before each match (context boosting). Here:

1. a recognizer whose cheap necessary condition fails (no ``@`` for email, no three digits in a row for
   an SSN, ...) is skipped: it could not have matched;
2. spaCy runs only when a match comes from a recognizer with context words, and only over a window
   around the match. spaCy tokenizes each space-separated piece of text on its own, so a window cut at
   spaces gives the same tokens; the window is widened until it holds the words the context walk
   visits (six keywords back, one forward), and keyword membership includes the ``a:b`` pieces of the
   whole text, as Presidio's does;
3. the rest (context enhancer, score thresholds, de-duplication) is Presidio's own code.

``tests/filters/test_pii_fast.py`` checks the equality against ``AnalyzerEngine.analyze``. The one
deliberate divergence: a piece of text with more than ``_MAX_CONTEXT_RESULTS`` context-scored matches
(a dump of thousands of IP addresses, not a prompt) keeps the matches' base scores, because Presidio's
context pass costs time quadratic in the number of matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts

from guard.compat import presidio_engine
from guard.screens import budget
from guard.screens.pii.engine import LANGUAGE
from guard.screens.pii.formats import (
    GuardEmailRecognizer,
    GuardIbanRecognizer,
    GuardIpRecognizer,
    GuardSsnRecognizer,
)
from guard.screens.pii.recognizers import GuardCardRecognizer, GuardPhoneRecognizer

_IBAN = re.compile(r"[A-Za-z]{2}[0-9]{2}")
_SSN = re.compile(r"[0-9]{3}[- .]?[0-9]{2}")  # every stock SSN pattern holds this
_IP = re.compile(r"\d\.\d|::|[0-9A-Fa-f]:[0-9A-Fa-f]")  # IPv4 has d.d; each IPv6 form :: or h:h
_CARD = re.compile(r"\d{4}")
_COLON_CHUNK = re.compile(r"\S*:\S+")
_PHONE = re.compile(r"\d(?:\D{0,8}\d){6}")
_DIGIT = re.compile(r"\d")

# Necessary conditions: when one is false, the recognizer cannot produce a result on this text.
PREFILTERS: dict[type, Callable[[str], bool]] = {
    GuardEmailRecognizer: lambda t: "@" in t,
    GuardIbanRecognizer: lambda t: _IBAN.search(t) is not None,
    GuardSsnRecognizer: lambda t: _SSN.search(t) is not None,
    GuardIpRecognizer: lambda t: _IP.search(t) is not None,
    GuardCardRecognizer: lambda t: _CARD.search(t) is not None,
    GuardPhoneRecognizer: lambda t: _PHONE.search(t) is not None,
}

# none of these can match a text without a digit (an IPv6 address can: dead::beef)
NEED_DIGITS = frozenset({GuardIbanRecognizer, GuardSsnRecognizer, GuardCardRecognizer, GuardPhoneRecognizer})

_TOKENS_NEED_NOTHING = (
    PatternRecognizer,
    GuardCardRecognizer,
    GuardPhoneRecognizer,
    GuardEmailRecognizer,
    GuardIbanRecognizer,
    GuardSsnRecognizer,
    GuardIpRecognizer,
)
_BACK_KEYWORDS = 6  # Presidio's context walk: five words before, plus the match's own token
_MAX_SPAN = 4096  # windows grow up to this; beyond, the whole text is tokenized
_MAX_WINDOWS = 32
_MAX_CONTEXT_RESULTS = 256  # per scanned piece; beyond, base scores stand (the only divergence)


def _self_contained(rec: EntityRecognizer) -> bool:
    return isinstance(rec, _TOKENS_NEED_NOTHING) or getattr(rec, "guard_self_contained", False)


def _own_enhancer(rec: EntityRecognizer) -> bool:
    return type(rec).enhance_using_context is not EntityRecognizer.enhance_using_context


class FastAnalyzer:
    """``analyze(text, entities)`` returning exactly what ``engine.analyze(text, 'en', entities)`` would."""

    def __init__(self, engine: AnalyzerEngine) -> None:
        self.engine = engine
        # per entity list: the recognizers, and whether the fast path can serve them (the registry is
        # complete once the engine is built)
        self._plans: dict[tuple[str, ...], tuple[list[EntityRecognizer], bool]] = {}

    def _plan(self, entities: list[str]) -> tuple[list[EntityRecognizer], bool]:
        key = tuple(entities)
        plan = self._plans.get(key)
        if plan is None:
            recs = self.engine.registry.get_recognizers(language=LANGUAGE, entities=entities, all_fields=False)
            fast = all(_self_contained(r) and not _own_enhancer(r) for r in recs)
            plan = self._plans[key] = (recs, fast)
        return plan

    def reference(self, text: str, entities: list[str]) -> list[RecognizerResult]:
        """The straightforward path, for differential tests and benchmarks."""
        return self.engine.analyze(text, language=LANGUAGE, entities=entities)

    def analyze(self, text: str, entities: list[str]) -> list[RecognizerResult]:
        eng = self.engine
        recognizers, fast = self._plan(entities)
        if not fast:
            return self.reference(text, entities)  # NER or custom hooks need the whole document
        digits = _DIGIT.search(text) is not None
        raw: list[RecognizerResult] = []
        for rec in recognizers:
            budget.check()  # a request past its screening budget stops between recognizers
            check = PREFILTERS.get(type(rec))
            if check is not None and ((not digits and type(rec) in NEED_DIGITS) or not check(text)):
                continue
            if not rec.is_loaded:
                rec.load()
                rec.is_loaded = True
            found = rec.analyze(text=text, entities=entities, nlp_artifacts=None)  # type: ignore[arg-type]
            if found:
                presidio_engine.add_recognizer_id(eng, found, rec)
                raw.extend(found)
        if not raw:
            return []
        results = self._enhance(text, raw, recognizers)
        return presidio_engine.finish(eng, results, recognizers)

    # --- context, over windows -----------------------------------------------------------------------

    def _enhance(
        self,
        text: str,
        raw: list[RecognizerResult],
        recognizers: list[EntityRecognizer],
    ) -> list[RecognizerResult]:
        by_id = {r.id: r for r in recognizers}
        key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
        plain: list[RecognizerResult] = []
        contextual: list[RecognizerResult] = []
        for r in raw:
            rec = by_id.get(r.recognition_metadata.get(key))
            wants = (
                rec is not None
                and rec.context
                and not r.recognition_metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY)
            )
            (contextual if wants else plain).append(r)
        if not contextual:
            return list(raw)
        enhancer = self.engine.context_aware_enhancer
        if len(contextual) > _MAX_CONTEXT_RESULTS:
            return list(raw)  # junk, not prose: Presidio's context pass is quadratic in the matches
        if len(contextual) > _MAX_WINDOWS:  # many matches: one pass over the whole text is cheaper
            art = self.engine.nlp_engine.process_text(text, LANGUAGE)
            return plain + enhancer.enhance_using_context(text, contextual, art, recognizers, None)
        pieces = self._colon_pieces(text)
        out = list(plain)
        for r in contextual:
            a, b, art = self._window(text, r, pieces)
            shifted = RecognizerResult(
                r.entity_type, r.start - a, r.end - a, r.score, r.analysis_explanation, r.recognition_metadata
            )
            for d in enhancer.enhance_using_context(text[a:b], [shifted], art, recognizers, None):
                d.start += a
                d.end += a
                out.append(d)
        return out

    def _window(self, text: str, r: RecognizerResult, pieces: list[str]) -> tuple[int, int, NlpArtifacts]:
        """The smallest tried window whose tokens cover Presidio's context walk for ``r``."""
        span = 64
        while span <= _MAX_SPAN:
            a = space_cut_left(text, r.start - span)
            b = _space_cut_right(text, r.end + span // 4)
            if a >= 0 and b >= 0:
                art = self._artifacts(text[a:b], pieces)
                if self._window_enough(art, r.start - a, a > 0, b < len(text)):
                    return a, b, art
            span *= 4
        return 0, len(text), self._artifacts(text, [])

    def _artifacts(self, text: str, pieces: list[str]) -> NlpArtifacts:
        nlp_engine = self.engine.nlp_engine
        doc = nlp_engine.nlp[LANGUAGE](text)  # type: ignore[attr-defined]
        art = NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.lemma_ for t in doc],
            nlp_engine=nlp_engine,
            language=LANGUAGE,
        )
        art.keywords = art.keywords + pieces
        return art

    def _colon_pieces(self, text: str) -> list[str]:
        """Keywords Presidio gets by splitting ``a:b`` lemmas anywhere in the text."""
        # A token holds ":" only where a non-space follows it (a trailing ":" is split off as punctuation).
        chunks = [m.group() for m in _COLON_CHUNK.finditer(text)]
        if not chunks:
            return []
        art = self._artifacts(" ".join(chunks), [])
        return [k for k in art.keywords if k]

    @staticmethod
    def _window_enough(art: NlpArtifacts, start: int, cut_left: bool, cut_right: bool) -> bool:
        lemmas, idx, keywords = art.lemmas, art.tokens_indices, set(art.keywords)
        i = next((k for k, tok in enumerate(art.tokens) if idx[k] == start or start < idx[k] + len(tok)), None)
        if i is None:
            return not cut_right
        back = sum(1 for k in range(i, -1, -1) if lemmas[k].lower() in keywords)
        forward = any(lemmas[k].lower() in keywords for k in range(i, len(lemmas)))
        return (back >= _BACK_KEYWORDS or not cut_left) and (forward or not cut_right)


def space_cut_left(text: str, pos: int, limit: int = _MAX_SPAN) -> int:
    """A start at or before ``pos``, right after a single space and before a non-space (spaCy cuts
    there too); 0 at the start of the text; -1 if none within ``limit`` characters."""
    if pos <= 0:
        return 0
    for p in range(pos, max(0, pos - limit) - 1, -1):
        if p == 0 or (text[p - 1] == " " and not text[p].isspace() and (p < 2 or not text[p - 2].isspace())):
            return p
    return -1


def _space_cut_right(text: str, pos: int, limit: int = _MAX_SPAN) -> int:
    """An end at or after ``pos`` where a space follows a non-space; the text's end; -1 if none near."""
    n = len(text)
    if pos >= n:
        return n
    for p in range(max(pos, 1), min(n, pos + limit) + 1):
        if p == n or (text[p] == " " and not text[p - 1].isspace()):
            return p
    return -1
