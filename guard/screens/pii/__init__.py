"""PII screen: Presidio recognizers on linear-time patterns, redaction, reversible pseudonyms, streams."""

from guard.compat.presidio_import import import_presidio

import_presidio()  # before any module of this package imports Presidio

# ruff: noqa: E402

from guard.screens.pii.engine import Finding
from guard.screens.pii.profile import PIIProfile, load_pii_profiles
from guard.screens.pii.screen import PIIScreen
from guard.screens.pii.stream import PIIStream
from guard.screens.pii.transform import Pseudonyms

__all__ = ["Finding", "PIIProfile", "PIIScreen", "PIIStream", "Pseudonyms", "load_pii_profiles"]
