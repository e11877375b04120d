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
from guard.screens.edits import Edit
from guard.screens.json_text import JSON_KINDS
from guard.screens.packed import pack
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
        return (await self._screen(segments, "prompt", ctx))[0]

    async def screen_response(
        self,
        segments: list[Segment],
        prompt: list[Segment],
        ctx: dict[str, Any],
    ) -> Verdict:
        return (await self._screen(segments, "response", ctx))[0]

    def open_stream(self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content") -> Any:
        """A stream screen for one channel; ``kind="tool_arguments"``: JSON text, screened string by string
        as it streams (guard.screens.pii.json_stream)."""
        if kind in JSON_KINDS:
            return JsonArgsStream(self.profile, pseudonyms_of(ctx))
        return PIIStream(self.profile, pseudonyms_of(ctx), kind=kind)

    async def screen_edits(
        self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]
    ) -> tuple[Verdict, list[list[Edit]] | None]:
        """``screen_response`` as edits of each segment as written (guard.screens.edits); JSON-text
        segments' strings are read decoded, their edits mapped back (guard.screens.pii.json_edits)."""
        return await self._screen(segments, "response", ctx, edits=True)

    async def _screen(
        self, segments: list[Segment], direction: str, ctx: dict[str, Any], edits: bool = False
    ) -> tuple[Verdict, list[list[Edit]] | None]:
        started = time.perf_counter()
        scan = ScanPass(self.profile, direction, pseudonyms_of(ctx))
        one = scan.segment_edits if edits else scan.segment
        inline = budget.inline(segments)
        try:
            if inline:
                got: list[Any] = [one(s) for s in segments]
            else:  # off the event loop (a worker process, else a thread); the screening budget goes along
                got = await self._offload(scan, segments, one, edits)
        except budget.BudgetExceeded:
            raise
        except Exception as e:
            return error_verdict(self.profile, direction, started, e), None
        verdict = scan.verdict(started)
        if verdict.blocked:
            return verdict, []
        if inline:
            return verdict, _write(segments, got, verdict)
        return verdict, await heavy.run(_write, segments, got, verdict)  # a megabyte of messages: a loop turn each

    async def _offload(self, scan: ScanPass, segments: list[Segment], one: Any, edits: bool) -> list[Any]:
        pool = POOL.get(self.profile.source) if self.profile.source is not None else None
        if pool is None:
            return await heavy.run(lambda: [one(s) for s in segments])
        source = self.profile.source
        job = await heavy.run(  # the job's arguments for many segments are built off the event loop
            lambda: pool.submit(
                scan_job,
                source,
                scan.direction,
                pack([s.text for s in segments]),
                [s.role for s in segments],
                [s.kind for s in segments],
                scan.pseudonyms,
                budget.deadline(),  # to_thread copies the context: the request's deadline
                edits,
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
            return await heavy.run(lambda: [one(s) for s in segments])
        scan.counts.update(counts)
        p = scan.pseudonyms  # the worker's map holds ours and what it added: take the additions
        p.by_value.update(back.by_value)
        p.by_placeholder.update(back.by_placeholder)
        p.counters.update(back.counters)
        return sent  # None for a segment the worker left unchanged (guard.screens.pii.pool.scan_job)

    def scan_text(self, text: str, direction: str, ctx: dict[str, Any] | None = None) -> tuple[str, Verdict]:
        """Synchronous helper for tools (``guard scan``): the transformed text and the verdict."""
        started = time.perf_counter()
        scan = ScanPass(self.profile, direction, pseudonyms_of(ctx if ctx is not None else {}))
        out = scan.text(text)
        return out, scan.verdict(started)


def _write(segments: list[Segment], got: list[Any], verdict: Verdict) -> list[list[Edit]]:
    """The scans' results written back: edits returned per segment (``screen_edits``), or texts rewritten in
    place (None: a screening process left the segment unchanged); ``verdict.modified`` set when anything
    changed."""
    found: list[list[Edit]] = []
    for seg, out in zip(segments, got, strict=True):
        if isinstance(out, list):
            found.append(out)
            verdict.modified = verdict.modified or bool(out)
            continue
        found.append([])
        if out is not None and out != seg.text:
            seg.text = out
            verdict.modified = True
    return found
