"""The denylist's settings (filters/denylist.yaml): rules, profiles, and their loader with file:line:key errors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guard.config import ConfigError, load_yaml, validate
from guard.screens import linear_re

Action = Literal["block", "redact", "off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _regex(v: str | None) -> str | None:
    return None if v is None else linear_re.check(v)


class DenylistRule(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["secret", "phrase"] = "secret"  # secret -> code secret_blocked, phrase -> denylisted
    pattern: str | None = None  # an RE2 regex (linear time; no lookaround or backreferences: docs/regex.md)
    phrases: list[str] | None = None  # matched case-insensitively, any whitespace between words
    ignore_case: bool = False
    hints: list[str] | None = None  # literal substrings (any case), one of which every match contains:
    #                                 the regex runs only when one occurs (phrases: their first words)
    prompt: Action = "block"
    response: Action = "redact"
    replacement: str | None = None  # default "[REDACTED:<name>]"
    stream_start: str | None = None  # a block's opening marker: streams hold from here until the match ends
    stream_end: str | None = None  # its closing marker (needed with stream_start)

    _rx = field_validator("pattern", "stream_start", "stream_end")(classmethod(lambda cls, v: _regex(v)))

    @model_validator(mode="after")
    def _one_source(self) -> DenylistRule:
        if (self.pattern is None) == (self.phrases is None):
            raise ValueError("give exactly one of pattern or phrases")
        if (self.stream_start is None) != (self.stream_end is None):
            raise ValueError("stream_start and stream_end go together")
        return self


class DenylistProfile(_Strict):
    hold_chars: int = Field(256, ge=16)  # longest single-line secret a stream waits for (then screened as is)
    max_hold_chars: int = Field(8192, ge=256)  # longest multi-line block held in a stream
    rules: list[DenylistRule] = []

    @model_validator(mode="after")
    def _unique(self) -> DenylistProfile:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("duplicate rule name")
        return self


class DenylistSettings(_Strict):
    default: str = "default"
    profiles: dict[str, DenylistProfile]

    @model_validator(mode="after")
    def _default_exists(self) -> DenylistSettings:
        if self.default not in self.profiles:
            raise ValueError(f"default names unknown profile {self.default!r}")
        return self

    def profile(self, name: str | None = None) -> DenylistProfile:
        return self.profiles[name or self.default]


def load_denylist(path: str | Path) -> DenylistSettings:
    """Load filters/denylist.yaml (or a folder holding it); errors name file:line: key."""
    p = Path(path)
    if p.is_dir():
        p = p / "denylist.yaml"
    data, lines = load_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}:1: the denylist settings must be a mapping")
    return validate(DenylistSettings, data, p, lines)
