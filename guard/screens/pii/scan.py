"""One direction's PII scan over the texts of one request (ScanPass), and the verdict of a failed scan.

Used by the whole-text screen (guard.screens.pii.screen), the stream screen (guard.screens.pii.stream) and the
screening processes (guard.screens.pii.pool).
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from guard.screens import budget, json_text
from guard.screens.base import Segment, Verdict
from guard.screens.edits import Edit
from guard.screens.edits import apply as apply_edits
from guard.screens.pii.json_edits import json_edits
from guard.screens.pii.profile import PIIProfile
from guard.screens.pii.transform import Pseudonyms

log = logging.getLogger("guard.screens.pii.screen")

JSON_KINDS = json_text.JSON_KINDS
SCHEMA_KINDS = json_text.SCHEMA_KINDS
_PRECEDENCE = ("block", "redact", "hash", "mask", "pseudonymize", "allow")


class ScanPass:
    """One direction's pass over texts of one request: rewrites them and counts what it found."""

    def __init__(self, profile: PIIProfile, direction: str, pseudonyms: Pseudonyms) -> None:
        self.profile, self.direction, self.pseudonyms = profile, direction, pseudonyms
        self.rewriter = profile.rewriter(direction, pseudonyms)
        self.counts: Counter[str] = Counter()
        self.fields: set[str] = set()  # Segment kinds where something was found

    def text(self, text: str, json_safe: bool = False) -> str:
        return apply_edits(text, self.edits(text, json_safe))

    def edits(self, text: str, json_safe: bool = False) -> list[Edit]:
        """What ``text`` rewrites, as edits (guard.screens.edits)."""
        restore = self.pseudonyms.known_spans(text) if self.direction == "response" else []
        found = self.profile.findings(text, restore)
        self.counts.update(f.entity_type for f in found)
        return self.rewriter.edits(text, found, restore, json_safe)

    def segment_edits(self, seg: Segment) -> list[Edit] | str:
        """``segment`` as edits of its text as written (JSON text: its strings read decoded, the edits
        mapped back, guard.screens.pii.json_edits); a JSON schema is rewritten instead (the new text is
        returned)."""
        if seg.path[-1:] == ("__json__",) and seg.kind in SCHEMA_KINDS:
            return self.segment(seg)
        budget.check()
        n = sum(self.counts.values())
        out = json_edits(self, seg.text) if seg.kind in JSON_KINDS else self.edits(seg.text)
        if sum(self.counts.values()) != n:
            self.fields.add(seg.kind)
        return out

    def segment(self, seg: Segment) -> str:
        budget.check()
        schema = seg.path[-1:] == ("__json__",) and seg.kind in SCHEMA_KINDS  # a JSON schema, parsed
        n = sum(self.counts.values())
        out = self.json_text(seg.text) if seg.kind in JSON_KINDS or schema else self.text(seg.text)
        if sum(self.counts.values()) != n:
            self.fields.add(seg.kind)
        return out

    def json_text(self, text: str, keys: bool = True) -> str:
        """Tool-call arguments and results: rewrite each string, each key and each number of the JSON
        value, decoded (guard.screens.json_text), so the result is still valid JSON (a rewritten number
        becomes a string); text that is not JSON is rewritten with JSON-safe output."""
        obj = json_text.parse(text)
        if obj is None:
            return self.text(text, json_safe=True)
        seen: dict[str, tuple[str, Counter[str]]] = {}  # the keys of a list of records repeat: scanned once

        def once(s: str) -> str:
            hit = seen.get(s)
            if hit is None:
                before = self.counts.copy()
                hit = seen[s] = (self.text(s), self.counts - before)
            else:
                self.counts.update(hit[1])
            return hit[0]

        new = json_text.map_json(obj, once, keys=keys, numbers=True)
        return text if new == obj else json_text.dump(new)

    def blocked_types(self) -> list[str]:
        return sorted(t for t in self.counts if self.profile.action(t, self.direction) == "block")

    def verdict(self, started: float) -> Verdict:
        v = Verdict(
            screen="pii",
            direction=self.direction,
            entities=dict(sorted(self.counts.items())),
            fields=sorted(self.fields),
        )
        blocked = self.blocked_types()
        if blocked:
            v.blocked, v.action, v.code = True, "block", "pii_blocked"
            v.message = f"personal data not allowed in the {self.direction}: {', '.join(blocked)}"
        elif self.counts:
            used = {self.profile.action(t, self.direction) for t in self.counts}
            v.action = next(a for a in _PRECEDENCE if a in used)
        v.latency_ms = (time.perf_counter() - started) * 1000
        return v


def error_verdict(profile: PIIProfile, direction: str, started: float, exc: BaseException) -> Verdict:
    # The exception text may quote the scanned text: log its type only.
    log.error("pii screen failed (%s profile, %s): %s", profile.name, direction, type(exc).__name__)
    v = Verdict(screen="pii", direction=direction, status="error", latency_ms=(time.perf_counter() - started) * 1000)
    if profile.settings.on_error == "block":
        v.blocked, v.action, v.code = True, "block", "screen_error"
        v.message = "personal data screening failed; the request was refused"
    return v
