"""`audit:` section of guard.yaml (owned by the audit package)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Path = Path("var/audit")
    signing_key: Path | None = None  # Ed25519 private key PEM; generated beside the journal when unset
    durability: Literal["fsync", "batch"] = "fsync"
    capture: Literal["none", "hash", "redacted", "full"] = "hash"

    def resolve(self, base: Path) -> None:
        fix = lambda p: p if p.is_absolute() else base / p  # noqa: E731
        self.dir = fix(self.dir)
        if self.signing_key:
            self.signing_key = fix(self.signing_key)
