"""`policy:` section of guard.yaml (owned by the policy package)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ShadowPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Path | None = None  # defaults to the active model
    rules: list[Path]


class PolicySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Path = Path("policies/model.conf")
    rules: list[Path] = [Path("policies/policy.csv")]
    tests: list[Path] = []  # policy test files run before a reload is accepted
    shadow: ShadowPolicy | None = None
    watch: bool = True  # reload when the files change
    watch_interval_s: float = Field(1.0, gt=0)  # how often the watcher polls the files
    cache: bool = True  # cache decisions per attribute tuple (off only to measure or debug)

    def resolve(self, base: Path) -> None:
        fix = lambda p: p if p.is_absolute() else base / p  # noqa: E731
        self.model = fix(self.model)
        self.rules = [fix(p) for p in self.rules]
        self.tests = [fix(p) for p in self.tests]
        if self.shadow:
            self.shadow.model = fix(self.shadow.model) if self.shadow.model else None
            self.shadow.rules = [fix(p) for p in self.shadow.rules]
