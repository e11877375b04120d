"""Rewriting text once findings are known: redact, pseudonymize (and restore), mask, hash.

Every replacement is made of letters, digits, ``<>_:*`` and the kept characters of the value, so it never
breaks the quoting of a JSON string; tool-call arguments are still parsed and rewritten string by string
(see ``map_json_strings``) so that escapes inside values are read, not guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import regex as re

from guard.screens.edits import Edit
from guard.screens.pii.engine import Finding

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d{1,6})>")
CTX_KEY = "guard.pii.pseudonyms"


@dataclass
class Pseudonyms:
    """One request's map between values and ``<TYPE_N>`` placeholders. Lives only in the request ctx."""

    by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    by_placeholder: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def placeholder(self, entity_type: str, value: str) -> str:
        key = (entity_type, value)
        ph = self.by_value.get(key)
        if ph is None:
            n = self.counters[entity_type] = self.counters.get(entity_type, 0) + 1
            ph = self.by_value[key] = f"<{entity_type}_{n}>"
            self.by_placeholder[ph] = value
        return ph

    def __repr__(self) -> str:  # never show values, even in a traceback
        return f"Pseudonyms({len(self.by_placeholder)} placeholders)"

    def known_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in PLACEHOLDER.finditer(text) if m.group() in self.by_placeholder]

    def restore(self, text: str, escape: Callable[[str], str] | None = None) -> str:
        if not self.by_placeholder or "<" not in text:
            return text

        def sub(m: re.Match[str]) -> str:
            v = self.by_placeholder.get(m.group())
            if v is None:
                return m.group()
            return escape(v) if escape else v

        return PLACEHOLDER.sub(sub, text)


def pseudonyms_of(ctx: dict[str, Any]) -> Pseudonyms:
    p = ctx.get(CTX_KEY)
    if p is None:
        p = ctx[CTX_KEY] = Pseudonyms()
    return p


def mask(value: str, keep: int) -> str:
    """Hide letters and digits except the last ``keep`` characters; keep separators for readability."""
    cut = max(0, len(value) - keep)
    return "".join("*" if c.isalnum() else c for c in value[:cut]) + value[cut:]


def keyed_hash(key: bytes, entity_type: str, value: str) -> str:
    digest = hmac.new(key, f"{entity_type}\0{value}".encode(), hashlib.sha256).hexdigest()
    return f"<{entity_type}:{digest[:16]}>"


@dataclass
class Rewriter:
    """Turns a finding into its replacement for one direction of one profile."""

    actions: dict[str, str]  # entity type -> action
    mask_keep: dict[str, int]
    pseudonyms: Pseudonyms
    hash_key: bytes | None

    def replacement(self, f: Finding, value: str, json_safe: bool = False) -> str:
        action = self.actions.get(f.entity_type, "redact")
        if json_safe and action == "mask" and "\\" in value:
            action = "redact"  # masking part of a JSON escape would break the string
        if action == "pseudonymize":
            return self.pseudonyms.placeholder(f.entity_type, value)
        if action == "mask":
            return mask(value, self.mask_keep.get(f.entity_type, 4))
        if action == "hash" and self.hash_key:
            return keyed_hash(self.hash_key, f.entity_type, value)
        if action in ("allow", "block"):
            return value
        return f"<{f.entity_type}>"

    def edits(
        self,
        text: str,
        findings: list[Finding],
        restore: list[tuple[int, int]] = (),  # type: ignore[assignment]
        json_safe: bool = False,
    ) -> list[Edit]:
        """The rewrite of ``findings`` and the original values put back at ``restore`` spans (known
        placeholders), as edits in text order (none of them overlap; guard.screens.edits).
        ``json_safe``: ``text`` is raw JSON, keep its escapes and quoting whole."""
        spans = [(f.start, f.end, f) for f in findings] + [(a, b, None) for a, b in restore]
        out: list[Edit] = []
        for a, b, f in sorted(spans, key=lambda e: e[0]):
            if f is None:
                value = self.pseudonyms.by_placeholder[text[a:b]]
                out.append((a, b, json_escape(value) if json_safe else value))
            else:
                out.append((a, b, self.replacement(f, text[a:b], json_safe)))
        return out


def redact_all(text: str, findings: list[Finding]) -> str:
    out, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        out.append(text[pos : f.start])
        out.append(f"<{f.entity_type}>")
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def parse_json_container(text: str) -> Any:
    """The parsed value when ``text`` is a JSON object or array, else None."""
    s = text.lstrip()
    if not s or s[0] not in "[{":
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def map_json_strings(obj: Any, fn: Callable[[str], str], depth: int = 0, keys: bool = False) -> Any:
    """Apply ``fn`` to every string value of a parsed JSON value; to its keys too with ``keys`` (a JSON
    schema's property names are text the model reads; tool-call argument names are not rewritten)."""
    if depth > 200:
        raise ValueError("JSON nested too deeply")
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, list):
        return [map_json_strings(v, fn, depth + 1, keys) for v in obj]
    if isinstance(obj, dict):
        return {(fn(k) if keys else k): map_json_strings(v, fn, depth + 1, keys) for k, v in obj.items()}
    return obj


def json_escape(value: str) -> str:
    """``value`` as it must appear between the quotes of a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1]
