"""A streamed answer through the denylist: only text that could still be the start of a secret is held
back (see screen.py's module doc for the hold rules)."""

from __future__ import annotations

import re
import time
from typing import Any

from guard.screens import linear_re
from guard.screens.base import StreamStep, Verdict
from guard.screens.denylist.compiled import Compiled, Scan
from guard.screens.stream_partial import Ahead


class DenylistStream:
    """Redacts (or stops on) secrets in a streamed answer, holding back only what could still be one."""

    def __init__(self, screen: Any, scans: list[Scan] | None = None) -> None:
        """``screen``: the DenylistScreen it runs for (its rules, partial patterns and scans). ``scans``: the
        list this stream adds its findings to (shared by the strings of one JSON text)."""
        self.screen = screen
        self.buf = ""
        self.left = ""  # the last released characters: lookbehind context for partial matching
        self.scans: list[Scan] = scans if scans is not None else []
        self.suppress: Compiled | None = None  # inside an over-long block: drop until its end marker
        self.drop_run = False  # after a capped single-line secret: drop until white space
        self.t0 = time.perf_counter()
        self.verdict = Verdict(screen=screen.name, direction="response")

    def pending(self) -> str:
        return "" if self.suppress or self.drop_run else self.buf

    def ahead(self) -> Ahead | None:
        """What this stream holds, for the screen after it in a chain to look ahead at (None: nothing, or
        text that will be dropped, so what comes next is unknown)."""
        if self.suppress or self.drop_run or not self.buf:
            return None
        return Ahead(self.buf, self.screen.replacements, self._replacement_starts, self._open_block)

    def _open_block(self) -> int | None:
        """Where the earliest multi-line block (``stream_start``) opens in the held text: redacted from there
        whatever follows (its end marker, the cap and the answer's end all close it as a match)."""
        lowered, first = self.buf.lower(), None
        for c in self.screen.active("response"):
            if c.start is not None and c.may_match(lowered):
                a = next(linear_re.spans(c.start, self.buf), None)
                if a is not None and (first is None or a[0] < first):
                    first = a[0]
        return first

    def _replacement_starts(self) -> list[int]:
        """Where in the held text a replacement may begin: where a match could still start (a rule whose
        ``hit`` group does not open its pattern may begin it anywhere after that), and its first character
        (a cap or a final scan reads the held text without the released text before it)."""
        ctx = self.left
        found = self.screen.partials.starts(ctx + self.buf, len(ctx))
        if found and not self.screen.hits_open_matches:
            return list(range(found[0], len(self.buf) + 1))
        return sorted({0, *found})

    async def feed(self, text: str) -> StreamStep:
        return self.feed_now(text)

    async def finish(self) -> StreamStep:
        return self.finish_now()

    def feed_now(self, text: str) -> StreamStep:
        """``feed`` without the coroutine (guard.screens.denylist.json_stream feeds many pieces per chunk)."""
        self.buf += text
        if self.drop_run and not self._leave_run():
            return StreamStep()
        if self.suppress and not self._leave_block():
            return StreamStep()
        return self._step(final=False)

    def finish_now(self) -> StreamStep:
        if self.drop_run and not self._leave_run():
            self.buf = ""
        if self.suppress and not self._leave_block():
            self.buf = ""
        step = self._step(final=True)
        self.verdict = self.screen.verdict("response", self.scans, self.t0)
        return step

    def _leave_run(self) -> bool:
        m = _SPACE.search(self.buf)
        if not m:
            self.buf = ""
            return False
        self.buf, self.drop_run = self.buf[m.start() :], False
        return True

    def _leave_block(self) -> bool:
        assert self.suppress is not None and self.suppress.end is not None
        end = next(linear_re.spans(self.suppress.end, self.buf), None)
        if end is None:
            self.buf = self.buf[-_END_MARKER_KEEP:]
            return False
        self.buf, self.suppress = self.buf[end[1] :], None
        return True

    def _step(self, final: bool) -> StreamStep:
        p = self.screen.profile
        if final:
            return self._apply(self.screen.scan(self.buf, "response", final=True), len(self.buf))
        cut = len(self.buf)
        lowered = self.buf.lower()
        for c in self.screen.active("response"):
            if c.start is not None and c.may_match(lowered):
                for a, _ in linear_re.spans(c.start, self.buf):
                    if len(self.buf) - a > p.max_hold_chars:
                        return self._overlong(c, a, min(cut, a))
                    cut = min(cut, a)
        block_open = cut < len(self.buf)
        ctx = self.left
        pend = self.screen.partials.pending(ctx + self.buf, len(ctx), len(ctx) + cut)
        cut = min(cut, pend.start - len(ctx))
        if not block_open and not pend.complete_before and len(self.buf) - cut <= p.hold_chars:
            return self._apply(Scan(self.buf[:cut]), cut)  # no match starts before the cut: nothing to redact
        spans = self.screen.matches(self.buf, "response", final=False)
        moved = True
        while moved:  # never cut through a complete match (an overlapping rule may take its place)
            moved = False
            for a, b, _ in spans:
                if a < cut < b:
                    cut, moved = a, True
        if not block_open and len(self.buf) - cut > p.hold_chars:
            return self._capped(cut)
        return self._apply(self.screen.apply(self.buf[:cut], [s for s in spans if s[1] <= cut], "response"), cut)

    def _apply(self, scan: Scan, cut: int) -> StreamStep:
        """Release ``scan`` (the rewrite of ``buf[:cut]``) unless it holds a block rule's match."""
        if scan.hits:
            self.scans.append(scan)
        if scan.block:
            self.verdict = self.screen.verdict("response", self.scans, self.t0)
            self.buf = ""
            return StreamStep(stop=self.verdict)
        self.buf = self.buf[cut:]
        if scan.text:
            self.left = (self.left + scan.text)[-_LEFT:]
        return StreamStep(release=scan.text)

    def _capped(self, cut: int) -> StreamStep:
        """A single-line match still open after hold_chars: screen it as it stands, drop the rest of its run."""
        step = self._apply(self.screen.scan(self.buf, "response", final=True), len(self.buf))
        self.drop_run = step.stop is None
        return step

    def _overlong(self, c: Compiled, start: int, cut: int) -> StreamStep:
        """A block that never ends within max_hold_chars: redact it (or stop) and drop the rest of it."""
        self.scans.append(Scan("", {c.rule.name: 1}, [c] if c.rule.response == "block" else [], True))
        if c.rule.response == "block":
            self.verdict = self.screen.verdict("response", self.scans, self.t0)
            return StreamStep(stop=self.verdict)
        rest = self.buf[start:]
        self.buf = self.buf[:start]
        before = self._apply(self.screen.scan(self.buf, "response", final=True), start)
        if before.stop is not None:
            return before
        out = before.release + c.replacement
        self.buf, self.suppress, self.left = rest, c, ""
        if not self._leave_block():
            return StreamStep(release=out)
        more = self._step(final=False)
        return StreamStep(release=out + more.release, stop=more.stop)


_LEFT = 64  # released characters kept as lookbehind context
_END_MARKER_KEEP = 128  # while suppressing a block, enough of its tail to find an end marker split in two
_SPACE = re.compile(r"\s")
