"""`console:` section of guard.yaml: the compliance console on the admin listener (guard/console)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    # Name of an environment variable holding the console token (login form or Authorization: Bearer).
    token_env: str | None = None
    # CA that signs auditors' client certificates. Set: the admin listener speaks TLS (tls.cert/tls.key) and
    # asks for a client certificate (optional, so probes without one still reach /healthz); a certificate
    # opens the console only when the policy grants its principal the action audit_read.
    client_ca: Path | None = None
    session_ttl_s: int = Field(8 * 3600, ge=60, le=7 * 24 * 3600)
    page_size: int = Field(50, ge=5, le=500)
    index: Path | None = None  # the search index; default <audit.dir>/index/console.sqlite
    public_keys: list[Path] = []  # further trusted public keys for verification (beside <audit.dir>/keys)

    @model_validator(mode="after")
    def _auth(self) -> ConsoleSettings:
        if self.enabled and not self.token_env and self.client_ca is None:
            raise ValueError("console.enabled needs token_env or client_ca: the console is never open")
        return self

    def token(self) -> str | None:
        """The console token, or None when none is configured; a named variable that is empty is an error."""
        if not self.token_env:
            return None
        token = os.environ.get(self.token_env, "")
        if not token:
            raise ValueError(f"console.token_env: environment variable {self.token_env} is not set")
        if len(token) < 16:
            raise ValueError(f"console.token_env: the token in {self.token_env} is shorter than 16 characters")
        return token

    def resolve(self, base: Path) -> None:
        if self.client_ca is not None and not self.client_ca.is_absolute():
            self.client_ca = base / self.client_ca
        if self.index is not None and not self.index.is_absolute():
            self.index = base / self.index
        self.public_keys = [p if p.is_absolute() else base / p for p in self.public_keys]
