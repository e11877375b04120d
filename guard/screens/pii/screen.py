"""The PII screen: finds personal data in prompts and answers and blocks, redacts, pseudonymizes (and
restores), masks or hashes it, per entity type and direction, as the chosen profile says.

Verdicts carry entity types and counts, never values. The pseudonym map lives in the request's ``ctx``
only. Answers are screened on the text as the model wrote it (placeholders left alone), then the
request's own placeholders are restored: a user's own values come back to them unredacted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import BrokenExecutor
from typing import Any

from guard import heavy
from guard.screens import budget
from guard.screens.base import Segment, Verdict
from guard.screens.pii.json_stream import JsonArgsStream
from guard.screens.pii.pool import POOL, scan_job
from guard.screens.pii.profile import PIIProfile
from guard.screens.pii.scan import ScanPass, error_verdict
from guard.screens.pii.stream import PIIStream
from guard.screens.pii.transform import pseudonyms_of

log = logging.getLogger("guard.screens.pii.screen")

__all__ = ["PIIScreen", "ScanPass", "error_verdict"]


class PIIScreen:
    """Prompt, response and stream screen for one profile. ``ctx`` holds the request's pseudonym map."""

    name = "pii"

    def __init__(self, profile: PIIProfile) -> None:
        self.profile = profile

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        return await self._screen(segments, "prompt", ctx)

    async def screen_response(
        self,
        segments: list[Segment],
        prompt: list[Segment],
        ctx: dict[str, Any],
    ) -> Verdict:
        return await self._screen(segments, "response", ctx)

    def open_stream(self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content") -> Any:
        """A stream screen for one channel; ``kind="tool_arguments"``: JSON text, screened string by string
        as it streams (guard.screens.pii.json_stream)."""
        if kind == "tool_arguments":
            return JsonArgsStream(self.profile, pseudonyms_of(ctx))
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
        except Exception as e:
            return error_verdict(self.profile, direction, started, e)
        verdict = scan.verdict(started)
        if not verdict.blocked:
            for seg, text in zip(segments, texts, strict=False):
                if text != seg.text:
                    seg.text = text
                    verdict.modified = True
        return verdict

    async def _offload(self, scan: ScanPass, segments: list[Segment]) -> list[str]:
        pool = POOL.get(self.profile.source) if self.profile.source is not None else None
        if pool is None:
            return await heavy.run(lambda: [scan.segment(s) for s in segments])
        source = self.profile.source
        job = await heavy.run(  # the job's arguments for many segments are built off the event loop
            lambda: pool.submit(
                scan_job,
                source,
                scan.direction,
                [(s.text, s.role, s.kind) for s in segments],
                scan.pseudonyms,
                budget.deadline(),  # to_thread copies the context: the request's deadline
            )
        )
        try:
            sent, counts, back = await asyncio.wrap_future(job)
        except budget.BudgetExceeded:
            raise
        except Exception as e:
            log.warning("PII worker process failed (%s); scanning in a thread", type(e).__name__)
            if isinstance(e, BrokenExecutor):
                POOL.broken()
            return await heavy.run(lambda: [scan.segment(s) for s in segments])
        texts = [s.text if t is None else t for s, t in zip(segments, sent, strict=True)]
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
