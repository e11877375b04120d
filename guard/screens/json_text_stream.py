"""JSON text (tool-call arguments, tool results) read as a model reads it, in offsets of the text as written.

``JsonLexer`` splits the text as it comes (or whole, ``lex``) into events, each with its offsets in the
text as written, so a screen that reads the decoded text can report its edits in those offsets
(guard.screens.edits):

- ``("raw", start, text)``: text between values (structure, white space, ``true``/``false``/``null``), text
  that is not JSON (it does not start as an object or array, or an invalid escape made it stop being
  JSON), or a number too long to be a value (over ``NUM_CAP`` characters); read as written;
- ``("open", at)`` / ``("close", at)``: a string's quotes; ``("abort", at)``: a string cut by an invalid
  escape (what follows is raw text);
- ``("chars", start, end, decoded, view, written)``: a string's content: a run of plain characters, or one
  escape sequence (a surrogate pair's two joined): ``decoded`` is what a reader of the string sees,
  ``view`` the same character as JSON string content with only the escapes JSON needs (``\\u0067`` is
  ``g``, ``\\/`` is ``/``, ``\\u0022`` is ``\\"``), ``written`` the text as written;
- ``("num", start, text)``: a whole number.

Escapes split across chunks are joined; a surrogate pair's first half waits for its second. The events do
not depend on the chunking: a stream and the whole text give the same ones. ``OffsetMap`` maps offsets of
a decoded text (a string's, or the whole view) back to the text as written, whole escapes included.
"""

from __future__ import annotations

import bisect
import json
from typing import Any

_WS = " \t\r\n"
_NUM_START = "-0123456789"
_NUM = "+-.eE0123456789"
NUM_CAP = 64  # longest number screened as a value

Event = tuple[Any, ...]


def escape(text: str) -> str:
    """``text`` as JSON string content; lone surrogates (one half of a ``\\ud83d\\ude00`` pair, decoded on
    its own) stay escapes, so a parser joins the pair again."""
    out = json.dumps(text, ensure_ascii=False)[1:-1]
    if any("\ud800" <= c <= "\udfff" for c in out):
        out = "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in out)
    return out


def _decode(esc: str) -> str | None:
    """One complete escape sequence decoded, or None if it is not a JSON escape."""
    try:
        value = json.loads(f'"{esc}"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _high(c: str) -> bool:
    return "\ud800" <= c <= "\udbff"


def _surrogate(c: str) -> bool:
    return "\ud800" <= c <= "\udfff"


class JsonLexer:
    """Streamed JSON text as events (see the module doc). Modes: ``start`` (white space so far), ``out``
    (between strings), ``str`` (inside a string), ``num`` (inside a number), ``raw`` (not JSON: raw text
    to the end)."""

    def __init__(self) -> None:
        self.mode = "start"
        self.buf = ""  # text received and not yet in an event (lead white space, a number, a cut escape)
        self.pos = 0  # offset of ``buf`` in the text as written
        self.high: tuple[int, str] | None = None  # a pair's first half (offset, escape) waiting for its second
        self.long_num = False  # inside a number too long to be a value (raw text to its end)

    def undecided(self) -> int:
        """The offset from which the text is not in an event yet."""
        return self.high[0] if self.high is not None else self.pos

    def feed(self, text: str) -> list[Event]:
        self.buf += text
        return self._run(final=False)

    def finish(self) -> list[Event]:
        return self._run(final=True)

    def _lone(self, ev: list[Event]) -> None:
        """A pair's first half that no second half followed: a character of its own, kept as written."""
        if self.high is not None:
            at, esc = self.high
            self.high = None
            ev.append(("chars", at, at + len(esc), _decode(esc) or "", esc, esc))

    def _run(self, final: bool) -> list[Event]:
        ev: list[Event] = []
        buf, i, n, p0 = self.buf, 0, len(self.buf), self.pos
        while i < n:
            mode = self.mode
            if mode == "start":
                j = i
                while j < n and buf[j] in _WS:
                    j += 1
                if j == n:
                    if final:
                        ev.append(("raw", p0 + i, buf[i:]))
                        i = n
                    break
                self.mode = "out" if buf[j] in "{[" else "raw"
            elif mode == "raw":
                ev.append(("raw", p0 + i, buf[i:]))
                i = n
            elif mode == "out":
                j = i
                while j < n:
                    c = buf[j]
                    if self.long_num and c in _NUM:
                        j += 1
                        continue
                    self.long_num = False
                    if c == '"' or c in _NUM_START:
                        break
                    j += 1
                if j > i:
                    ev.append(("raw", p0 + i, buf[i:j]))
                i = j
                if j < n:
                    if buf[j] == '"':
                        ev.append(("open", p0 + j))
                        self.mode, i = "str", j + 1
                    else:
                        self.mode = "num"
            elif mode == "num":
                j = i
                while j < n and buf[j] in _NUM:
                    j += 1
                if j - i > NUM_CAP:  # no value is that long: the rest of it goes as raw text
                    ev.append(("raw", p0 + i, buf[i:j]))
                    self.long_num, self.mode, i = True, "out", j
                elif j < n or final:
                    ev.append(("num", p0 + i, buf[i:j]))
                    self.mode, i = "out", j
                else:
                    break
            else:
                i = self._string(buf, i, p0, final, ev)
                if i < 0:
                    i = -i - 1
                    break
        if final and self.mode == "str":
            self._lone(ev)
        self.buf, self.pos = buf[i:], p0 + i
        return ev

    def _string(self, buf: str, i: int, p0: int, final: bool, ev: list[Event]) -> int:
        """String content from ``i``: the next index, or ``-(index + 1)`` when more text is needed."""
        n = len(buf)
        j = i
        while j < n and buf[j] not in '"\\':
            j += 1
        if j > i:
            self._lone(ev)
            ev.append(("chars", p0 + i, p0 + j, buf[i:j], buf[i:j], buf[i:j]))
        if j == n:
            return n
        if buf[j] == '"':
            self._lone(ev)
            ev.append(("close", p0 + j))
            self.mode = "out"
            return j + 1
        need = 6 if buf[j + 1 : j + 2] == "u" else 2
        if n - j < need and not final:
            return -(j + 1)  # an escape cut off: joined with the next chunk
        esc = buf[j : j + need]
        value = _decode(esc) if len(esc) == need else None
        if value is None:  # not JSON after all: the rest is raw text
            self._lone(ev)
            ev.append(("abort", p0 + j))
            self.mode = "raw"
            return j
        if _high(value):
            self._lone(ev)
            self.high = (p0 + j, esc)
            return j + need
        if self.high is not None and _surrogate(value):
            at, first = self.high
            self.high = None
            pair = _decode(first + esc) or ""
            ev.append(("chars", at, p0 + j + need, pair, escape(pair), first + esc))
            return j + need
        self._lone(ev)
        view = esc if _surrogate(value) else escape(value)
        ev.append(("chars", p0 + j, p0 + j + need, value, view, esc))
        return j + need


def lex(text: str) -> list[Event]:
    """The events of a whole text (the same as any chunking of it gives)."""
    lexer = JsonLexer()
    return lexer.feed(text) + lexer.finish()


class OffsetMap:
    """Offsets of a text read from JSON text (a string's decoded content, or the view of the whole text)
    mapped back to the text as written. Between the units added (escapes, whose length differs from what
    they read as) both move together."""

    def __init__(self, x0: int = 0, raw0: int = 0) -> None:
        self.anchor = (x0, raw0)  # a point before every unit
        self.starts: list[int] = []
        self.units: list[tuple[int, int, int, int]] = []  # x start, x end, raw start, raw end

    def add(self, x: int, x_len: int, raw: int, raw_len: int, keep: bool = False) -> None:
        """A piece read at ``x`` (``x_len`` long) from ``raw`` (``raw_len`` long); ``keep``: one unit even
        where it reads as long as it is written (a span that cuts into it covers it whole)."""
        if x_len == raw_len and raw - x == self._delta() and not (keep and x_len > 1):
            return
        self.starts.append(x)
        self.units.append((x, x + x_len, raw, raw + raw_len))

    def _delta(self) -> int:
        x, raw = (self.units[-1][1], self.units[-1][3]) if self.units else self.anchor
        return raw - x

    def start(self, x: int) -> int:
        """Where a span starting at ``x`` starts as written (a unit cut in two: its start)."""
        k = bisect.bisect_right(self.starts, x) - 1
        if k < 0:
            return self.anchor[1] + x - self.anchor[0]
        _, xe, rs, re_ = self.units[k]
        return rs if x < xe else re_ + x - xe

    def end(self, x: int) -> int:
        """Where a span ending at ``x`` ends as written (a unit cut in two: its end)."""
        k = bisect.bisect_left(self.starts, x) - 1
        if k < 0:
            return self.anchor[1] + x - self.anchor[0]
        _, xe, _, re_ = self.units[k]
        return re_ if x <= xe else re_ + x - xe

    def prune(self, x: int) -> None:
        """Forget the units that end at or before ``x`` (no offset before it is asked for again)."""
        k = 0
        while k < len(self.units) and self.units[k][1] <= x:
            k += 1
        if k:
            self.anchor = (self.units[k - 1][1], self.units[k - 1][3])
            del self.units[:k], self.starts[:k]
