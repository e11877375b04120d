"""The post-processing steps of Presidio's ``AnalyzerEngine.analyze``, for guard.screens.pii.analyzer's
FastAnalyzer (which runs the recognizers itself, then must finish exactly as ``analyze`` does), and the
module-level ``tldextract`` name of Presidio's email recognizer (kept offline).

Presidio keeps these steps as name-mangled private methods of ``AnalyzerEngine``. Calling them keeps
FastAnalyzer's results identical to ``analyze`` (score thresholds per recognizer and entity included)
rather than re-implementing rules that change between releases. This module is the only caller; the
compatible range is pinned in pyproject.toml (presidio-analyzer) and tests/core/test_compat_contracts.py
checks each step on the installed version.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult

__all__ = ["add_recognizer_id", "finish", "use_offline_suffix_list"]

_ADD_ID = "_AnalyzerEngine__add_recognizer_id_if_not_exists"
_REMOVE_LOW = "_AnalyzerEngine__remove_low_scores"
_REMOVE_DECISION = "_AnalyzerEngine__remove_decision_process"


def add_recognizer_id(engine: AnalyzerEngine, results: list[RecognizerResult], rec: EntityRecognizer) -> None:
    """Stamp each result with its recognizer's id and name (what context enhancement looks up)."""
    getattr(engine, _ADD_ID)(results, rec)


def finish(
    engine: AnalyzerEngine, results: list[RecognizerResult], recognizers: list[EntityRecognizer]
) -> list[RecognizerResult]:
    """``analyze``'s last steps after context enhancement: drop results under their recognizer's (or the
    engine's) score threshold, drop duplicates, drop the decision process."""
    kept = getattr(engine, _REMOVE_LOW)(results, None, recognizers)
    kept = EntityRecognizer.remove_duplicates(kept)
    return getattr(engine, _REMOVE_DECISION)(kept)  # type: ignore[no-any-return]


def use_offline_suffix_list(extract: Callable[[str], Any]) -> None:
    """Presidio's email recognizer validates a match's domain with its module's ``tldextract.extract``,
    which fetches the public suffix list on first use. Point that name at ``extract`` (an extractor that
    reads only the snapshot bundled with tldextract): Guard never fetches anything at run time."""
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    email_recognizer.tldextract = types.SimpleNamespace(extract=extract)  # type: ignore[assignment]
