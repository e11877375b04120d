"""Streamed JSON text read as a model reads it: each string decoded, escapes joined across chunks.

``JsonTextStream`` splits the text as it comes into the parts between values (structure, white space,
``true``/``false``/``null``: raw JSON text), each string's decoded text and each number (up to ``NUM_CAP``
characters), each fed to a part screen of its own (``_part``). What a string's screen releases is written
back JSON-escaped; a number the screen rewrites (a card number masked) becomes a JSON string, as in the
non-streamed path (guard.screens.json_text), so the text stays valid JSON. Used for tool-call arguments by
the PII screen (guard.screens.pii.json_stream) and the denylist (guard.screens.denylist.json_stream).
"""

from __future__ import annotations

import json
from typing import Any

from guard.screens.base import StreamStep, Verdict

_WS = " \t\r\n"
_NUM_START = "-0123456789"
_NUM = "+-.eE0123456789"
NUM_CAP = 64  # longest number screened as a value


def _escape(text: str) -> str:
    """``text`` as JSON string content; lone surrogates (one half of a ``\\ud83d\\ude00`` pair, decoded on
    its own) stay escapes, so the client's parser joins the pair again."""
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


class JsonTextStream:
    """Streamed JSON text, each string decoded for a part screen of its own (``_part``: one with
    ``feed_now``/``finish_now``). Modes: ``start`` (white space so far), ``out`` (between strings), ``str``
    (inside a string), ``raw`` (not JSON: screened as raw text to the end)."""

    def __init__(self) -> None:
        self.mode = "start"
        self.lead = ""  # white space before the first character
        self.esc = ""  # an escape sequence not complete yet (inside a string)
        self.high = ""  # the escape of a pair's first half (``\\ud83d``), decoded with the second
        self.num = ""  # a number not complete yet
        self.long_num = False  # inside a number too long to be a value (raw text to its end)
        self.stopped: Verdict | None = None
        self.part = self._part(raw=True)

    def _part(self, raw: bool) -> Any:
        """A fresh screen for the text between strings (``raw``) or for one string's decoded text."""
        raise NotImplementedError

    async def feed(self, text: str) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if self.mode == "start":
                j = i
                while j < n and text[j] in _WS:
                    j += 1
                if j == n:
                    self.lead += text[i:]
                    break
                self.mode = "out" if text[j] in "{[" else "raw"
                text, i, n = self.lead + text[i:], 0, len(self.lead) + n - i
                self.lead = ""
            elif self.mode in ("out", "raw"):
                j = self._next_value(text, i) if self.mode == "out" else n
                if j > i and not self._take(out, self.part.feed_now(text[i:j])):
                    return self._stop(out)
                if j == n:
                    break
                # a string or number opens: what came before it is screened to its end, then the value
                if not self._take(out, self.part.finish_now()):
                    return self._stop(out)
                if text[j] == '"':
                    out.append('"')
                    self.mode, self.part, i = "str", self._part(raw=False), j + 1
                else:
                    self.mode, self.num, i = "num", "", j
            elif self.mode == "num":
                j = i
                while j < n and text[j] in _NUM:
                    j += 1
                self.num += text[i:j]
                i = j
                if len(self.num) > NUM_CAP:  # no value is that long: the rest of it goes as raw text
                    self.part, self.long_num, self.mode = self._part(raw=True), True, "out"
                    if not self._take(out, self.part.feed_now(self.num)):
                        return self._stop(out)
                elif j < n and not self._number(out):
                    return self._stop(out)
            else:
                i = self._string(text, i, out)
                if i < 0:
                    return self._stop(out)
        return StreamStep(release="".join(out))

    def _next_value(self, text: str, i: int) -> int:
        """Where the next string or number starts from ``i`` (between values), or ``len(text)``."""
        n = len(text)
        while i < n:
            c = text[i]
            if self.long_num:
                if c in _NUM:
                    i += 1
                    continue
                self.long_num = False
            if c == '"' or c in _NUM_START:
                return i
            i += 1
        return n

    def _number(self, out: list[str]) -> bool:
        """A whole number, screened like a string's text (as the non-streamed path does: guard.screens.json_text);
        one the screen rewrites becomes a JSON string. False when the screen stopped."""
        num, self.num = self.num, ""
        part = self._part(raw=False)
        first = part.feed_now(num)
        last = StreamStep() if first.stop is not None else part.finish_now()
        got = first.release + last.release
        stop = first.stop or last.stop
        self.mode, self.part = "out", self._part(raw=True)
        if stop is not None:
            self.stopped = stop
            return False
        out.append(num if got == num else '"' + _escape(got) + '"')
        return True

    def _string(self, text: str, i: int, out: list[str]) -> int:
        """Consume string content from ``i``; the next index, or -1 when a screen stopped."""
        n = len(text)
        if self.esc:
            need = 6 if self.esc[1:2] == "u" or (len(self.esc) == 1 and text[i] == "u") else 2
            take = min(need - len(self.esc), n - i)
            self.esc += text[i : i + take]
            i += take
            if len(self.esc) < need:
                return i
            esc, self.esc = self.esc, ""
            value = _decode(self.high + esc)
            if value is None:  # not JSON after all: the rest is screened as raw text
                if not self._lone_high(out) or not self._escaped(out, self.part.finish_now()):
                    return -1
                self.mode, self.part = "raw", self._part(raw=True)
                return i if self._take(out, self.part.feed_now(esc)) else -1
            if "\ud800" <= value[-1] <= "\udbff":  # the first half of a pair: decoded with the second
                if self.high and not self._escaped(out, self.part.feed_now(value[:-1])):
                    return -1
                self.high = esc
                return i
            self.high = ""
            return i if self._escaped(out, self.part.feed_now(value)) else -1
        j = i
        while j < n and text[j] not in '"\\':
            j += 1
        if j > i and (not self._lone_high(out) or not self._escaped(out, self.part.feed_now(text[i:j]))):
            return -1
        if j == n:
            return n
        if text[j] == "\\":
            self.esc = "\\"
            return j + 1
        if not self._lone_high(out) or not self._escaped(out, self.part.finish_now()):  # the string ends
            return -1
        out.append('"')
        self.mode, self.part = "out", self._part(raw=True)
        return j + 1

    async def finish(self) -> StreamStep:
        if self.stopped is not None:
            return StreamStep(stop=self.stopped)
        out: list[str] = []
        if self.mode == "start":
            out.append(self.lead)
        elif self.mode == "num":
            if not self._number(out):
                return self._stop(out)
        elif self.mode == "str":  # an unterminated string: what it holds goes, screened; a cut escape as it is
            if not self._lone_high(out) or not self._escaped(out, self.part.finish_now()):
                return self._stop(out)
            out.append(self.esc)
        elif not self._take(out, self.part.finish_now()):
            return self._stop(out)
        return StreamStep(release="".join(out))

    # --- steps of the parts ------------------------------------------------------------------------------

    def _lone_high(self, out: list[str]) -> bool:
        """A pair's first half that no second half followed: screened on its own."""
        if not self.high:
            return True
        value, self.high = _decode(self.high) or "", ""
        return self._escaped(out, self.part.feed_now(value))

    def _take(self, out: list[str], step: StreamStep) -> bool:
        out.append(step.release)
        if step.stop is not None:
            self.stopped = step.stop
            return False
        return True

    def _escaped(self, out: list[str], step: StreamStep) -> bool:
        return self._take(out, StreamStep(release=_escape(step.release), stop=step.stop))

    def _stop(self, out: list[str]) -> StreamStep:
        return StreamStep(release="".join(out), stop=self.stopped)
