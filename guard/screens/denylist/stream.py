"""A streamed answer through the denylist: only text that could still be the start of a secret is held
back (see screen.py's module doc for the hold rules). The stream reads the text as the model wrote it and
decides it as edits (guard.screens.edits): redactions, and text dropped (the rest of an over-long block
or of a capped run); on its own (``feed``) it releases the text with them made."""

from __future__ import annotations

import re
import time
from typing import Any

from guard.screens import linear_re
from guard.screens.base import StreamStep, Verdict
from guard.screens.denylist.compiled import Compiled, Scan
from guard.screens.edits import Edit, Judged, apply, merge

_LEFT = 64  # released characters kept as lookbehind context
_END_MARKER_KEEP = 128  # while suppressing a block, enough of its tail to find an end marker split in two
_SPACE = re.compile(r"\s")


class DenylistStream:
    """Redacts (or stops on) secrets in a streamed answer, holding back only what could still be one."""

    def __init__(self, screen: Any, scans: list[Scan] | None = None) -> None:
        """``screen``: the DenylistScreen it runs for (its rules, partial patterns and scans). ``scans``: the
        list this stream adds its findings to (shared by the strings of one JSON text)."""
        self.screen = screen
        self.buf = ""  # the text as written not yet decided
        self.base = 0  # its offset in the channel's text
        self.left = ""  # the last released characters: lookbehind context for partial matching
        self.scans: list[Scan] = scans if scans is not None else []
        self.suppress: Compiled | None = None  # inside an over-long block: drop until its end marker
        self.drop_run = False  # after a capped single-line secret: drop until white space
        self.t0 = time.perf_counter()
        self.verdict = Verdict(screen=screen.name, direction="response")

    def pending(self) -> str:
        return "" if self.suppress or self.drop_run else self.buf

    async def feed(self, text: str) -> StreamStep:
        return self.feed_now(text)

    async def finish(self) -> StreamStep:
        return self.finish_now()

    async def judge(self, text: str) -> Judged:
        """``feed`` for a group of screens reading the same text (guard.screens.edits.StreamGroup): how far
        the text is decided, and the redactions for it as edits, in offsets of the text as written."""
        return self.judge_now(text)

    async def judge_end(self) -> Judged:
        return self.judge_end_now()

    def feed_now(self, text: str) -> StreamStep:
        """``feed`` without the coroutine (guard.screens.denylist.json_stream feeds many pieces per chunk)."""
        start, held = self.base, self.buf + text
        return _released(start, held, self.judge_now(text))

    def finish_now(self) -> StreamStep:
        start, held = self.base, self.buf
        return _released(start, held, self.judge_end_now())

    def judge_now(self, text: str) -> Judged:
        self.buf += text
        dropped: list[Edit] = []
        if self.drop_run and not self._leave_run(dropped):
            return Judged(self.base, dropped)
        if self.suppress and not self._leave_block(dropped):
            return Judged(self.base, dropped)
        got = self._judge(final=False)
        got.edits[:0] = dropped
        return got

    def judge_end_now(self) -> Judged:
        dropped: list[Edit] = []
        if self.drop_run:
            self._leave_run(dropped)
        if self.suppress and not self._leave_block(dropped):
            self._drop(len(self.buf), dropped)
        got = self._judge(final=True)
        got.edits[:0] = dropped
        self.verdict = self.screen.verdict("response", self.scans, self.t0)
        return got

    def _drop(self, n: int, dropped: list[Edit], replacement: str = "") -> None:
        """The next ``n`` characters are dropped (an edit replacing them with ``replacement``)."""
        if n > 0:
            dropped.append((self.base, self.base + n, replacement))
        self.buf, self.base = self.buf[n:], self.base + n

    def _leave_run(self, dropped: list[Edit]) -> bool:
        m = _SPACE.search(self.buf)
        self._drop(m.start() if m else len(self.buf), dropped)
        if not m:
            return False
        self.drop_run = False
        return True

    def _leave_block(self, dropped: list[Edit], keep: int = _END_MARKER_KEEP) -> bool:
        assert self.suppress is not None and self.suppress.end is not None
        end = next(linear_re.spans(self.suppress.end, self.buf), None)
        if end is None:
            self._drop(len(self.buf) - min(keep, len(self.buf)), dropped)
            return False
        self._drop(end[1], dropped)
        self.suppress = None
        return True

    def _judge(self, final: bool) -> Judged:
        p = self.screen.profile
        if final:
            return self._decide(self.screen.scan(self.buf, "response", final=True), len(self.buf))
        cut = len(self.buf)
        lowered = self.buf.lower()
        for c in self.screen.active("response"):
            if c.start is not None and c.may_match(lowered):
                for a, _ in linear_re.spans(c.start, self.buf):
                    if len(self.buf) - a > p.max_hold_chars:
                        return self._overlong(c, a)
                    cut = min(cut, a)
        block_open = cut < len(self.buf)
        ctx = self.left
        pend = self.screen.partials.pending(ctx + self.buf, len(ctx), len(ctx) + cut)
        cut = min(cut, pend.start - len(ctx))
        if not block_open and not pend.complete_before and len(self.buf) - cut <= p.hold_chars:
            return self._decide(Scan(self.buf[:cut]), cut)  # no match starts before the cut: nothing to redact
        spans = self.screen.matches(self.buf, "response", final=False)
        moved = True
        while moved:  # never cut through a complete match (an overlapping rule may take its place)
            moved = False
            for a, b, _ in spans:
                if a < cut < b:
                    cut, moved = a, True
        if not block_open and len(self.buf) - cut > p.hold_chars:
            return self._capped()
        return self._decide(self.screen.apply(self.buf[:cut], [s for s in spans if s[1] <= cut], "response"), cut)

    def _decide(self, scan: Scan, cut: int) -> Judged:
        """``buf[:cut]`` decided with ``scan`` (its redactions), unless it holds a block rule's match: then
        the stream stops and none of it goes out."""
        if scan.hits:
            self.scans.append(scan)
        if scan.block:
            self.verdict = self.screen.verdict("response", self.scans, self.t0)
            self.buf = ""
            return Judged(self.base, stop=self.verdict)
        edits = [(a + self.base, b + self.base, r) for a, b, r in scan.edits]
        self.buf, self.base = self.buf[cut:], self.base + cut
        if scan.text:
            self.left = (self.left + scan.text)[-_LEFT:]
        return Judged(self.base, edits)

    def _capped(self) -> Judged:
        """A single-line match still open after hold_chars: screen it as it stands, drop the rest of its run."""
        got = self._decide(self.screen.scan(self.buf, "response", final=True), len(self.buf))
        self.drop_run = got.stop is None
        return got

    def _overlong(self, c: Compiled, start: int) -> Judged:
        """A block that never ends within max_hold_chars: redact it (or stop) and drop the rest of it."""
        self.scans.append(Scan("", {c.rule.name: 1}, [c] if c.rule.response == "block" else [], True))
        if c.rule.response == "block":
            self.verdict = self.screen.verdict("response", self.scans, self.t0)
            return Judged(self.base, stop=self.verdict)
        rest = self.buf[start:]
        self.buf = self.buf[:start]
        before = self._decide(self.screen.scan(self.buf, "response", final=True), start)
        if before.stop is not None:
            return before
        self.buf, self.suppress, self.left = rest, c, ""
        dropped: list[Edit] = []
        ended = self._leave_block(dropped, keep=min(_END_MARKER_KEEP, len(rest) - 1))
        if dropped:  # the block's first characters: replaced by the rule's replacement, the rest dropped
            dropped[0] = (dropped[0][0], dropped[0][1], c.replacement)
        if not ended:
            return Judged(self.base, before.edits + dropped)
        more = self._judge(final=False)
        return Judged(more.decided, before.edits + dropped + more.edits, more.stop, more.stop_at)


def _released(start: int, held: str, got: Judged) -> StreamStep:
    """What a screen on its own releases: ``held`` (from offset ``start``) up to what it decided (or its stop
    point), with its edits made."""
    upto = got.decided if got.stop is None else (start if got.stop_at is None else got.stop_at)
    done = [e for e in merge([got.edits]) if e[1] <= upto]
    return StreamStep(release=apply(held[: upto - start], done, start), stop=got.stop)
