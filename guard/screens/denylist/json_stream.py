"""JSON text (tool-call arguments, tool results) through the denylist: as written, and decoded.

A model may write ``{"token": "AKIA\\u0049OSFODNN7EXAMPLE"}``, and stream it with the escape cut anywhere
between two chunks (``...AKIA\\u00`` | ``49OSF...``). The denylist reads the text twice, both times as the
model wrote it: once as it is, once as its view (guard.screens.json_text_stream: every escape JSON does
not need decoded, ``\\u0049`` is ``I``, ``\\/`` is ``/``, escapes cut across chunks joined), so a pattern
that spans a key and its value (``"aws_secret_access_key": "..."``) is found decoded too. It reports
edits in offsets of the text as written (guard.screens.edits): its redactions (one found in the view
covers whole escape sequences as written; inside a string its replacement is JSON-escaped), and the
decoding of each escape JSON does not need (``\\u0067`` -> ``g``). A redaction that spans several values
(a key and its value) is made in each: the part of every string it covers is replaced, every number it
touches becomes the replacement as a string, and the JSON between them stays as written, so
``{"aws_secret_access_key": "..."}`` comes out as ``{"[REDACTED:...]": "[REDACTED:...]"}``. What comes
out is the decoded JSON text, redacted: valid JSON when the model's was. (Text that is not JSON, or JSON
with anything but white space, punctuation and literals between its values, is redacted as plain text.)
A finding seen both as written and decoded counts once (per rule, the larger of the two counts).

Whole (``scan_json``) and streamed (``JsonTextDenylist``) read the same events of the same text, so they
agree as any answer text does (the stream holds only what could still become a secret).
"""

from __future__ import annotations

import bisect
import re
import time
from typing import Any

from guard.screens.base import StreamStep, Verdict
from guard.screens.denylist.compiled import Scan
from guard.screens.denylist.stream import DenylistStream
from guard.screens.edits import Edit, Judged, apply, merge, release_upto
from guard.screens.json_text_stream import Event, JsonLexer, OffsetMap, escape, lex

_STRUCTURE = " \t\r\n{}[],:"
_FREE = re.compile(r"[^\s{}\[\],:truefalsn]+")  # what JSON has no room for between its values


def _covered(spans: list[tuple[int, int]], a: int, b: int) -> list[tuple[int, int]]:
    """The spans (disjoint, in order; end -1: still open) that overlap ``[a, b)``."""
    out = []
    k = bisect.bisect_left(spans, (b, b))
    while k > 0:
        k -= 1
        s, e = spans[k]
        if 0 <= e <= a:
            break
        if s < b:
            out.append((s, e))
    return out[::-1]


class _View:
    """The view of JSON text read from its events, mapped back to the text as written: the decoding edits,
    and where its string contents, numbers and anything else between values are (a redaction is made in
    the values it covers, see ``edit``)."""

    def __init__(self) -> None:
        self.map = OffsetMap()
        self.length = 0  # characters of the view so far
        self.decodes: list[Edit] = []  # escapes written otherwise than JSON needs, decoded
        self.strings: list[tuple[int, int]] = []  # each string's content as written (start, end; end -1: open)
        self.numbers: list[tuple[int, int]] = []  # each number as written
        self.free: list[tuple[int, int]] = []  # text between values that is not white space, punctuation, literals
        self.begun = False  # whether the text's first character (not white space) was read
        self.plain_from: int | None = None  # where the text stops being JSON (it never was: its first character)
        self.escapes: list[tuple[int, int]] = []  # each escape sequence as written (start, end)

    def read(self, events: list[Event]) -> str:
        out: list[str] = []
        for e in events:
            kind = e[0]
            if kind == "chars":
                _, a, b, _, view, written = e
                escaped = written[:1] == "\\"
                if escaped:
                    self.escapes.append((a, b))  # a redaction that cuts into it covers it whole
                if view != written:
                    self.decodes.append((a, b, view))
                self._piece(out, view, a, b - a, keep=escaped)
            elif kind == "raw":
                self._between(e[1], e[2])
                self._piece(out, e[2], e[1], len(e[2]))
            elif kind == "num":
                self.numbers.append((e[1], e[1] + len(e[2])))
                self._piece(out, e[2], e[1], len(e[2]))
            elif kind == "open":
                self._piece(out, '"', e[1], 1)
                self.strings.append((e[1] + 1, -1))
            elif kind == "close":
                self._piece(out, '"', e[1], 1)
                self._close(e[1])
            else:  # abort: the rest is not JSON
                self._close(e[1])
                if self.plain_from is None:
                    self.plain_from = e[1]
        return "".join(out)

    def _between(self, at: int, text: str) -> None:
        """Text outside strings and numbers: where the text is JSON, note what cannot be its structure."""
        if self.plain_from is not None:
            return
        if not self.begun:
            lead = text.lstrip()
            if not lead:
                return
            self.begun = True
            if lead[0] not in "{[":
                self.plain_from = at + len(text) - len(lead)
                return
        core = text.strip(_STRUCTURE)
        if core and _FREE.search(core):
            self.free.extend((at + m.start(), at + m.end()) for m in _FREE.finditer(text))

    def _piece(self, out: list[str], text: str, raw: int, raw_len: int, keep: bool = False) -> None:
        self.map.add(self.length, len(text), raw, raw_len, keep)
        self.length += len(text)
        out.append(text)

    def _close(self, at: int) -> None:
        if self.strings and self.strings[-1][1] < 0:
            self.strings[-1] = (self.strings[-1][0], at)

    def escape_at(self, x: int) -> tuple[int, int]:
        """The escape sequence offset ``x`` cuts into, as written; ``(x, x)`` when it cuts into none."""
        k = bisect.bisect_left(self.escapes, (x, x)) - 1
        return self.escapes[k] if k >= 0 and self.escapes[k][1] > x else (x, x)

    def edit(self, a: int, b: int, replacement: str) -> list[Edit]:
        """A redaction of ``[a, b)`` as written, widened to cover every escape sequence it cuts into (``\\t``
        read as ``t`` followed by a key's rest). Inside one string: its replacement as JSON string content.
        Across values: made in each value it covers (the part of each string, every number whole, as a
        string), the JSON between them kept, so the text stays JSON. Where the text is not JSON (or has
        something between values that JSON has no room for): one plain replacement."""
        a = self.escape_at(a)[0]
        b = self.escape_at(b)[1]
        if (self.plain_from is not None and b > self.plain_from) or _covered(self.free, a, b):
            return [(a, b, replacement)]
        inner = escape(replacement)
        pieces = [(max(a, s), b if e < 0 else min(b, e), inner) for s, e in _covered(self.strings, a, b)]
        pieces += [(s, e, f'"{inner}"') for s, e in _covered(self.numbers, a, b)]
        pieces = sorted(p for p in pieces if p[0] < p[1])
        return pieces or [(a, b, replacement)]

    def mapped(self, edits: list[Edit]) -> list[Edit]:
        """Edits of the view as edits of the text as written."""
        return [x for a, b, r in edits for x in self.edit(self.map.start(a), self.map.end(b), r)]

    def forget(self, before: int, view_before: int) -> None:
        """Nothing before ``before`` (as written; ``view_before`` in the view) is asked about again."""
        self.map.prune(view_before)
        for spans in (self.strings, self.numbers, self.free):
            k = 0
            while k < len(spans) and 0 <= spans[k][1] <= before:
                k += 1
            if k:
                del spans[:k]
        k = bisect.bisect_left(self.escapes, (before, before))
        if k > 64:
            del self.escapes[: k - 1]


def counted_once(raw: list[Scan], view: list[Scan]) -> list[Scan]:
    """The findings of both readings as one scan: per rule the larger count (a secret found as written is
    found in the view too), blocking rules and redaction of either."""
    hits: dict[str, int] = {}
    for scans in (raw, view):
        mine: dict[str, int] = {}
        for s in scans:
            for k, n in s.hits.items():
                mine[k] = mine.get(k, 0) + n
        for k, n in mine.items():
            hits[k] = max(hits.get(k, 0), n)
    block: list[Any] = []
    for s in (*raw, *view):
        block.extend(c for c in s.block if c not in block)
    return [Scan("", hits, block, any(s.redacted for s in (*raw, *view)))]


def scan_json(screen: Any, text: str, direction: str, raw: Scan | None = None) -> Scan:
    """The whole-text scan of JSON text: the findings as written (``raw``, when already made) and in the
    view, as edits of the text as written (decoding edits included when anything is redacted), and the text
    with them made."""
    raw = raw or screen.scan(text, direction)
    if raw.block:
        return raw
    view = _View()
    seen = view.read(lex(text))
    dec = screen.scan(seen, direction) if seen != text else Scan(seen)
    res = counted_once([raw], [dec])[0]
    res.text = text
    if res.block:
        return res
    res.edits = [x for e in raw.edits for x in view.edit(*e)] + view.mapped(dec.edits)
    if res.edits:
        res.edits += view.decodes
        res.text, res.redacted = apply(text, merge([res.edits])), True
    return res


class JsonTextDenylist:
    """The stream screen of one tool call's arguments: ``raw`` reads the text as written, ``view`` (both
    DenylistStreams) its view; edits and the decided offset are in offsets of the text as written."""

    def __init__(self, screen: Any) -> None:
        self.screen = screen
        self.raw, self.view = DenylistStream(screen), DenylistStream(screen)
        self.lexer = JsonLexer()
        self.reader = _View()
        self.sent = 0  # decoding edits reported so far
        self.decided = 0
        self.stopped: Verdict | None = None
        self.t0 = time.perf_counter()
        self.buf, self.rel = "", 0  # on its own: the text not released, from ``rel``
        self.pending: list[Edit] = []
        self.later: list[Edit] = []  # findings as written, to be made once the lexer has placed their text

    @property
    def verdict(self) -> Verdict:
        return self.stopped or self.screen.verdict("response", counted_once(self.raw.scans, self.view.scans), self.t0)

    async def judge(self, text: str) -> Judged:
        return self.judge_now(text)

    async def judge_end(self) -> Judged:
        return self.judge_end_now()

    def judge_now(self, text: str) -> Judged:
        if self.stopped is not None:
            return Judged(self.decided, stop=self.stopped)
        first = self.raw.judge_now(text)
        if first.stop is not None:
            return self._stop(first.stop)
        second = self.view.judge_now(self.reader.read(self.lexer.feed(text)))
        return self._judged(first, second, self.lexer.undecided())

    def judge_end_now(self) -> Judged:
        if self.stopped is not None:
            return Judged(self.decided, stop=self.stopped)
        first = self.raw.judge_end_now()
        if first.stop is not None:
            return self._stop(first.stop)
        second = self.view.judge_now(self.reader.read(self.lexer.finish()))
        if second.stop is None:
            last = self.view.judge_end_now()
            second = Judged(last.decided, second.edits + last.edits, last.stop)
        return self._judged(first, second, self.lexer.undecided())

    def _judged(self, first: Judged, second: Judged, lexed: int) -> Judged:
        if second.stop is not None:
            return self._stop(second.stop)
        r = self.reader
        # A finding as written may end in text the lexer has not placed yet (a number or an escape cut at
        # the chunk's end): it is made once that text is placed, and nothing from its start goes out before.
        self.later += first.edits
        ready = [e for e in self.later if e[1] <= lexed]
        self.later = [e for e in self.later if e[1] > lexed]
        decided = max(
            self.decided, min(first.decided, r.map.start(second.decided), lexed, *(a for a, _, _ in self.later))
        )
        decided = r.escape_at(decided)[0]  # never inside an escape: a redaction cutting into it covers it whole
        edits = [x for e in ready for x in r.edit(*e)] + r.mapped(second.edits)
        decoded = [e for e in r.decodes[self.sent :] if e[1] <= decided]
        self.sent += len(decoded)
        edits += decoded
        if self.sent > 256:
            del r.decodes[: self.sent]
            self.sent = 0
        self.decided = decided
        r.forget(decided, self.view.base)
        return Judged(decided, edits)

    def _stop(self, v: Verdict) -> Judged:
        self.stopped = v
        return Judged(self.decided, stop=v)

    # --- on its own (not in a group of screens): the text with its edits made --------------------------

    async def feed(self, text: str) -> StreamStep:
        self.buf += text
        return self._out(self.judge_now(text))

    async def finish(self) -> StreamStep:
        return self._out(self.judge_end_now())

    def _out(self, got: Judged) -> StreamStep:
        self.pending.extend(got.edits)
        upto = got.decided if got.stop is None else self.rel  # a stop: nothing more goes out
        out, (self.pending,), self.buf, self.rel = release_upto([self.pending], self.buf, self.rel, upto)
        return StreamStep(release=out, stop=got.stop)
