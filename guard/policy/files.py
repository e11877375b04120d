"""Reading the casbin model and the rule files, keeping each rule's file and line.

Rule files are casbin policy CSV exactly as pycasbin's file adapter reads it: one rule a line, fields
separated by commas, commas inside ``( )`` or ``[ ]`` do not split, lines starting with ``#`` are comments.
There is no quoting: wrap an expression that needs a comma in parentheses.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from casbin.model import Model

from guard.config import ConfigError


@dataclass(frozen=True)
class RuleLine:
    loc: str  # "policies/policy.csv:4"
    ptype: str  # "p"
    values: tuple[str, ...]


@dataclass(frozen=True)
class ModelText:
    path: Path
    model: Model
    lines: dict[str, int]  # "m" -> line of "m = ..." (for error messages)

    @property
    def display(self) -> str:
        return display_path(self.path)


def display_path(path: Path | str) -> str:
    """The path as a person typed it: relative to the working directory when it lies under it."""
    p = Path(path)
    if not p.is_absolute():
        return os.path.normpath(p)  # "deploy/../policies/policy.csv" -> "policies/policy.csv"
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{display_path(path)}: cannot read: {e.strerror}") from None


_KEY_LINE = re.compile(r"^\s*([a-z]\w*)\s*=")


def load_model(path: Path) -> ModelText:
    raw = _read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{display_path(path)}: not UTF-8 text") from None
    lines: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _KEY_LINE.match(line)
        if m:
            lines.setdefault(m.group(1), n)
    model = Model()
    try:
        model.load_model_from_text(text)
    except Exception as e:
        raise ConfigError(f"{display_path(path)}:1: invalid casbin model: {e}") from None
    return ModelText(path=Path(path), model=model, lines=lines)


def split_line(line: str) -> list[str] | None:
    """Split one policy line exactly as pycasbin's ``load_policy_line`` does; None when brackets are
    unbalanced (casbin itself would fail with an IndexError or keep a broken token)."""
    depth = 0
    tokens: list[str] = []
    for c in line:
        if c in "[(":
            depth += 1
            tokens[-1:] = [(tokens[-1] if tokens else "") + c]
        elif c in "])":
            depth -= 1
            if depth < 0:
                return None
            tokens[-1:] = [(tokens[-1] if tokens else "") + c]
        elif c == "," and depth == 0:
            tokens.append("")
        elif not tokens:
            tokens.append(c)
        else:
            tokens[-1] += c
    if depth != 0:
        return None
    return [t.strip() for t in tokens]


def load_rules(path: Path) -> tuple[list[RuleLine], list[str]]:
    """Rules of one file, and errors ("file:line: reason") for lines casbin would misread."""
    raw = _read(path)
    shown = display_path(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text") from None
    rules: list[RuleLine] = []
    errors: list[str] = []
    # casbin reads lines with readline(): split on "\n" only, then strip
    for n, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = split_line(line)
        if tokens is None:
            errors.append(f"{shown}:{n}: unbalanced ( ) or [ ]")
            continue
        rules.append(RuleLine(loc=f"{shown}:{n}", ptype=tokens[0], values=tuple(tokens[1:])))
    return rules, errors


def policy_version(model_path: Path, rule_paths: list[Path]) -> str:
    """SHA-256 over the model file's bytes, then each rule file's bytes in order, each followed by NUL."""
    h = hashlib.sha256()
    for p in [model_path, *rule_paths]:
        h.update(_read(p))
        h.update(b"\0")
    return h.hexdigest()
