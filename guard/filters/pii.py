"""The PII screen: finds personal data in prompts and answers and blocks, redacts, pseudonymizes (and
restores), masks or hashes it, per entity type and direction, as the chosen profile says.

Verdicts carry entity types and counts, never values. The pseudonym map lives in the request's ``ctx``
only. Answers are screened on the text as the model wrote it (placeholders left alone), then the
request's own placeholders are restored: a user's own values come back to them unredacted.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from concurrent.futures import BrokenExecutor
from typing import Any

from guard.filters import budget
from guard.filters.base import Segment, Verdict
from guard.filters.pii_pool import POOL, scan_job
from guard.filters.pii_profile import PIIProfile
from guard.filters.pii_transform import (
    Pseudonyms,
    map_json_strings,
    parse_json_container,
    pseudonyms_of,
)

log = logging.getLogger("guard.filters.pii")

JSON_KINDS = ("tool_arguments", "tool_result")
SCHEMA_KINDS = ("tool_definition", "response_schema")  # JSON schemas (guard.apis.fields), when JSON text
_PRECEDENCE = ("block", "redact", "hash", "mask", "pseudonymize", "allow")


class ScanPass:
    """One direction's pass over texts of one request: rewrites them and counts what it found."""

    def __init__(self, profile: PIIProfile, direction: str, pseudonyms: Pseudonyms) -> None:
        self.profile, self.direction, self.pseudonyms = profile, direction, pseudonyms
        self.rewriter = profile.rewriter(direction, pseudonyms)
        self.counts: Counter[str] = Counter()
        self.fields: set[str] = set()  # Segment kinds where something was found

    def text(self, text: str, json_safe: bool = False) -> str:
        restore = self.pseudonyms.known_spans(text) if self.direction == "response" else []
        found = self.profile.findings(text, restore)
        self.counts.update(f.entity_type for f in found)
        return self.rewriter.apply(text, found, restore, json_safe)

    def segment(self, seg: Segment) -> str:
        budget.check()
        schema = seg.path[-1:] == ("__json__",) and seg.kind in SCHEMA_KINDS  # keys are text the model reads
        n = sum(self.counts.values())
        out = self.json_text(seg.text, schema) if seg.kind in JSON_KINDS or schema else self.text(seg.text)
        if sum(self.counts.values()) != n:
            self.fields.add(seg.kind)
        return out

    def json_text(self, text: str, keys: bool = False) -> str:
        """Tool-call arguments and results: rewrite each string of the JSON value, so the result is
        still valid JSON; text that is not a JSON object or array is rewritten with JSON-safe output."""
        obj = parse_json_container(text)
        if obj is None:
            return self.text(text, json_safe=True)
        new = map_json_strings(obj, self.text, keys=keys)
        return text if new == obj else json.dumps(new, ensure_ascii=False)

    def blocked_types(self) -> list[str]:
        return sorted(t for t in self.counts if self.profile.action(t, self.direction) == "block")

    def verdict(self, started: float) -> Verdict:
        v = Verdict(screen="pii", direction=self.direction, entities=dict(sorted(self.counts.items())),
                    fields=sorted(self.fields))
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
    v = Verdict(screen="pii", direction=direction, status="error",
                latency_ms=(time.perf_counter() - started) * 1000)
    if profile.settings.on_error == "block":
        v.blocked, v.action, v.code = True, "block", "screen_error"
        v.message = "personal data screening failed; the request was refused"
    return v


class PIIScreen:
    """Prompt, response and stream screen for one profile. ``ctx`` holds the request's pseudonym map."""

    name = "pii"

    def __init__(self, profile: PIIProfile) -> None:
        self.profile = profile

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        return await self._screen(segments, "prompt", ctx)

    async def screen_response(self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any],
                              ) -> Verdict:
        return await self._screen(segments, "response", ctx)

    def open_stream(self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content") -> Any:
        """A stream screen for one channel; ``kind="tool_arguments"`` holds the arguments whole (up to
        ``max_scan_chars``) so they are rewritten as JSON, exactly as in a non-streamed answer."""
        from guard.filters.pii_stream import PIIStream

        return PIIStream(self.profile, pseudonyms_of(ctx), kind=kind)

    async def _screen(self, segments: list[Segment], direction: str, ctx: dict[str, Any]) -> Verdict:
        started = time.perf_counter()
        scan = ScanPass(self.profile, direction, pseudonyms_of(ctx))
        try:
            if budget.inline(segments):
                texts = [scan.segment(s) for s in segments]
            else:  # off the event loop (a worker process, else a thread); the screening budget goes along
                texts = await self._offload(scan, segments)
        except budget.BudgetExceeded:
            raise
        except Exception as e:  # noqa: BLE001 - any analyzer failure is decided by on_error
            return error_verdict(self.profile, direction, started, e)
        verdict = scan.verdict(started)
        if not verdict.blocked:
            for seg, text in zip(segments, texts):
                if text != seg.text:
                    seg.text = text
                    verdict.modified = True
        return verdict

    async def _offload(self, scan: ScanPass, segments: list[Segment]) -> list[str]:
        pool = POOL.get(self.profile.source) if self.profile.source is not None else None
        if pool is None:
            return await asyncio.to_thread(lambda: [scan.segment(s) for s in segments])
        job = pool.submit(scan_job, self.profile.source, scan.direction, [(s.text, s.role, s.kind) for s in segments],
                          scan.pseudonyms, budget.deadline())
        try:
            texts, counts, back = await asyncio.wrap_future(job)
        except budget.BudgetExceeded:
            raise
        except Exception as e:  # noqa: BLE001 - a worker that cannot scan (settings edited, died): scan here
            log.warning("PII worker process failed (%s); scanning in a thread", type(e).__name__)
            if isinstance(e, BrokenExecutor):
                POOL.broken()
            return await asyncio.to_thread(lambda: [scan.segment(s) for s in segments])
        scan.counts.update(counts)
        p = scan.pseudonyms  # the worker's map holds ours and what it added: take the additions
        p.by_value.update(back.by_value)
        p.by_placeholder.update(back.by_placeholder)
        p.counters.update(back.counters)
        return texts

    def scan_text(self, text: str, direction: str, ctx: dict[str, Any] | None = None) -> tuple[str, Verdict]:
        """Synchronous helper for tools (``guard scan``): the transformed text and the verdict."""
        started = time.perf_counter()
        scan = ScanPass(self.profile, direction, pseudonyms_of(ctx if ctx is not None else {}))
        out = scan.text(text)
        return out, scan.verdict(started)
