"""Streamed JSON text (tool-call arguments) through the denylist: as written, then decoded.

A model may stream ``{"token": "AKIA\\u0049OSFODNN7EXAMPLE"}`` with the escape cut anywhere between two
chunks (``...AKIA\\u00`` | ``49OSF...``). The text goes through two stream screens in a row: the first reads
it as written (a pattern that spans a key and its value, ``"aws_secret_access_key": "..."``), the second
reads each JSON string decoded, escape sequences joined across chunks (guard.screens.json_text_stream), with
the same partial matching and hold-back as any answer text (guard.screens.denylist.screen.DenylistStream).
What it releases is written back JSON-escaped, so the arguments stay valid JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from guard.screens.base import StreamStep, Verdict
from guard.screens.json_text_stream import JsonTextStream

Verdicts = Callable[[str, list[Any], float], Verdict]  # DenylistScreen.verdict: (direction, scans, start)


class _Decoded(JsonTextStream):
    """Each JSON string's decoded text through a denylist stream of its own; their findings in one list."""

    def __init__(self, open_part: Callable[[list[Any]], Any]) -> None:
        self.open_part = open_part
        self.scans: list[Any] = []
        super().__init__()

    def _part(self, raw: bool) -> Any:
        return self.open_part(self.scans)


class JsonTextDenylist:
    """The stream screen of one tool call's arguments: ``raw`` (a DenylistStream), then the decoded strings."""

    def __init__(self, raw: Any, open_part: Callable[[list[Any]], Any], verdicts: Verdicts) -> None:
        self.raw = raw
        self.decoded = _Decoded(open_part)
        self.verdicts = verdicts
        self.t0 = time.perf_counter()

    @property
    def verdict(self) -> Verdict:
        stop = self.decoded.stopped
        if stop is not None:
            return stop
        return self.verdicts("response", [*self.raw.scans, *self.decoded.scans], self.t0)

    async def feed(self, text: str) -> StreamStep:
        first = self.raw.feed_now(text)
        if first.stop is not None:
            return StreamStep(stop=first.stop)
        return await self.decoded.feed(first.release)

    async def finish(self) -> StreamStep:
        first = self.raw.finish_now()
        if first.stop is not None:
            return StreamStep(stop=first.stop)
        step = await self.decoded.feed(first.release)
        if step.stop is not None:
            return step
        last = await self.decoded.finish()
        return StreamStep(release=step.release + last.release, stop=last.stop)
