"""Streamed JSON text read as a model reads it: each string decoded, escapes joined across chunks.

``JsonTextStream`` splits the text as it comes into the parts between strings (structure, numbers,
``true``/``false``/``null``: raw JSON text) and each string's decoded text, each fed to a part screen of its
own (``_part``), and writes what the string screens release back JSON-escaped. Used for tool-call arguments
by the PII screen (guard.screens.pii.json_stream) and the denylist (guard.screens.denylist.json_stream).
"""

from __future__ import annotations

import json
from typing import Any

from guard.screens.base import StreamStep, Verdict

_WS = " \t\r\n"


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
                j = text.find('"', i) if self.mode == "out" else -1
                if j == -1:
                    if not self._take(out, self.part.feed_now(text[i:])):
                        return self._stop(out)
                    break
                # a string opens: what came before it is screened to its end, then the string's own screen
                if not self._take(out, self.part.feed_now(text[i:j])) or not self._take(out, self.part.finish_now()):
                    return self._stop(out)
                out.append('"')
                self.mode, self.part, i = "str", self._part(raw=False), j + 1
            else:
                i = self._string(text, i, out)
                if i < 0:
                    return self._stop(out)
        return StreamStep(release="".join(out))

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
