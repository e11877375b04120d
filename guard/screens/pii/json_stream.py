"""Streamed tool-call arguments: JSON text, screened part by part as it streams, as edits of the text as
written.

A model streams a tool call's arguments as pieces of JSON text (``{"to": "ann.le`` ... ``e@mailbox.org"}``).
The text is split as it comes (guard.screens.json_text_stream: the same parts as the whole-text rewrite,
guard.screens.pii.json_edits): each JSON string (keys included) is decoded (escapes included, so
``\\u0040`` is an ``@``, escapes cut across chunks joined) and read by a PIIStream of its own, which holds
back only what could still become a value (guard/screens/pii/stream.py); the text between strings
(structure, ``true``/``false``/``null``) and text that is not JSON is read as written; each number is read
whole. The findings are reported as edits of the text as written (``judge``), so the screen joins the
channel's group of rewriting screens (guard.screens.edits.StreamGroup) like any answer text, and what it
has decided is an offset of the text as written. Nothing is held whole: a long argument streams.
"""

from __future__ import annotations

import time

from guard.screens.base import StreamStep, Verdict
from guard.screens.edits import Edit, Judged, merge, release_upto
from guard.screens.json_text_stream import Event, JsonLexer, OffsetMap
from guard.screens.pii.json_edits import mapped, number_edit
from guard.screens.pii.profile import PIIProfile
from guard.screens.pii.scan import ScanPass
from guard.screens.pii.stream import PIIStream
from guard.screens.pii.transform import Pseudonyms


class JsonArgsStream:
    """One tool call's streamed arguments, screened for personal data."""

    def __init__(self, profile: PIIProfile, pseudonyms: Pseudonyms, direction: str = "response") -> None:
        self.profile = profile
        self.scan = ScanPass(profile, direction, pseudonyms)
        self.started = time.perf_counter()
        self.lexer = JsonLexer()
        self.decided = 0
        self.stopped: Verdict | None = None
        self.stop_at: int | None = None
        self._open(False, 0)
        self.buf, self.rel = "", 0  # on its own: the text not released yet, from ``rel``
        self.pending: list[Edit] = []

    def _part(self, string: bool) -> PIIStream:
        kind = "content" if string else "tool_arguments"  # a string's text is decoded; raw text keeps escapes
        return PIIStream(self.profile, self.scan.pseudonyms, kind, self.scan.direction, scan=self.scan)

    def _open(self, string: bool, at: int) -> None:
        self.part, self.map, self.in_string, self.size = self._part(string), OffsetMap(0, at), string, 0

    def verdict(self) -> Verdict:
        return self.stopped or self.scan.verdict(self.started)

    async def judge(self, text: str) -> Judged:
        return self.judge_now(text)

    async def judge_end(self) -> Judged:
        return self.judge_end_now()

    def judge_now(self, text: str) -> Judged:
        if self.stopped is not None:
            return Judged(self.decided, stop=self.stopped, stop_at=self.stop_at)
        return self._events(self.lexer.feed(text), final=False)

    def judge_end_now(self) -> Judged:
        if self.stopped is not None:
            return Judged(self.decided, stop=self.stopped, stop_at=self.stop_at)
        return self._events(self.lexer.finish(), final=True)

    def _events(self, events: list[Event], final: bool) -> Judged:
        edits: list[Edit] = []
        for e in events:
            kind = e[0]
            if kind in ("raw", "chars"):
                piece = e[2] if kind == "raw" else e[3]
                self.map.add(self.size, len(piece), e[1], len(e[2]) if kind == "raw" else e[2] - e[1])
                self.size += len(piece)
                self._take(self.part.judge_now(piece), edits)
            else:
                self._take(self.part.judge_end_now(), edits)
                if self.stopped is None and kind == "num":
                    self._number(e[1], e[2], edits)
                    self._open(False, e[1] + len(e[2]))
                elif self.stopped is None:
                    self._open(kind == "open", e[1] + (0 if kind == "abort" else 1))
            if self.stopped is not None:
                return Judged(self.decided, edits, stop=self.stopped, stop_at=self.stop_at)
        if final:
            self._take(self.part.judge_end_now(), edits)
            if self.stopped is not None:
                return Judged(self.decided, edits, stop=self.stopped, stop_at=self.stop_at)
            self.decided = self.lexer.pos
        else:
            self.decided = max(self.decided, min(self.map.start(self.part.base), self.lexer.undecided()))
        self.map.prune(self.part.base)
        return Judged(self.decided, edits)

    def _take(self, got: Judged, edits: list[Edit]) -> None:
        edits.extend(mapped(self.map, got.edits, self.in_string))
        if got.stop is not None:
            self.stopped = got.stop
            self.stop_at = None if got.stop_at is None else self.map.start(got.stop_at)

    def _number(self, at: int, number: str, edits: list[Edit]) -> None:
        """A whole number, read like a string's text; one that is rewritten becomes a JSON string."""
        part = self._part(True)
        first = part.judge_now(number)
        last = Judged(first.decided) if first.stop is not None else part.judge_end_now()
        stop = first.stop or last.stop
        if stop is not None:
            self.stopped, self.stop_at = stop, at
            return
        edits.extend(number_edit(at, number, merge([first.edits + last.edits])))

    # --- on its own (not in a group of screens): the text with its edits made --------------------------

    async def feed(self, text: str) -> StreamStep:
        self.buf += text
        return self._out(self.judge_now(text))

    async def finish(self) -> StreamStep:
        return self._out(self.judge_end_now())

    def _out(self, got: Judged) -> StreamStep:
        self.pending.extend(got.edits)
        upto = got.decided if got.stop is None else (self.rel if got.stop_at is None else got.stop_at)
        out, (self.pending,), self.buf, self.rel = release_upto([self.pending], self.buf, self.rel, upto)
        return StreamStep(release=out, stop=got.stop)
