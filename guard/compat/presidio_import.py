"""Import Presidio without the deep-learning stacks Guard never uses through it.

``presidio_analyzer`` imports its Hugging Face pipeline component at import time, which imports
``transformers`` and ``torch``: two thirds of the import time of Guard's PII screen, paid by every worker
and screening process although Guard runs Presidio's pattern recognizers and spaCy only (a transformers
NER model, when configured, is loaded by guard.screens.pii.ner itself). While Presidio is first imported,
both names are marked absent in ``sys.modules`` (the documented way to make an import fail), so Presidio
and the libraries it pulls in (spaCy, thinc) take their own "not installed" paths; the marks are removed
afterwards, so Guard's own later ``import torch`` / ``import transformers`` work as usual. If either is
already imported, it is left alone. Consequence: Presidio's ``TransformersNlpEngine`` and spaCy pipelines
that run on torch are unavailable in a Guard process; Guard uses neither.
Checked by tests/core/test_compat_contracts.py (presidio_import).
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["SKIPPED", "import_presidio"]

SKIPPED = ("transformers", "torch")


def import_presidio() -> None:
    if "presidio_analyzer" in sys.modules:
        return
    marked = [name for name in SKIPPED if name not in sys.modules]
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        importlib.import_module("presidio_analyzer")
        importlib.import_module("presidio_analyzer.nlp_engine")
    finally:
        for name in marked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
