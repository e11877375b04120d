"""Where a PII profile comes from: its settings file and a digest of the file's bytes.

The screening processes (guard.screens.pii.pool) load a profile themselves, only while the file is the one
the serving process loaded (guard.screens.pii.profile records it with each profile).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """Where a profile comes from: the pii.yaml path and a digest of its bytes (a reload changes it)."""

    path: str
    digest: str
    profile: str


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def source_of(path: str | os.PathLike[str], profile: str) -> Source:
    p = Path(path).resolve()
    return Source(str(p), digest(p), profile)
