"""JSON text (tool-call arguments, tool results) through the denylist: as written, then decoded.

Whole (``scan_json_text``): the text is scanned as written, then, when it has escapes JSON does not need,
its decoded view (guard.screens.json_text.decoded_view: the same JSON value, ``\\u0067`` written ``g``);
a finding there blocks, or is redacted in each key and string on its own so the JSON stays valid, then
the whole value once more (a pattern that spans a key and its value).

Streamed (``JsonTextDenylist``): a model may stream ``{"token": "AKIA\\u0049OSFODNN7EXAMPLE"}`` with the
escape cut anywhere between two chunks (``...AKIA\\u00`` | ``49OSF...``). The text goes through two denylist
streams: the first reads it as written; then every escape JSON does not need is decoded, escape sequences
joined across chunks (guard.screens.json_text_stream: ``\\u0049`` becomes ``I``, ``\\/`` becomes ``/``),
and the second reads that text, with the same partial matching and hold-back as any answer text
(guard.screens.denylist.stream.DenylistStream), so a pattern that spans a key and its value
(``"aws_secret_access_key": "..."``) is found decoded too. What goes to the client is that decoded JSON
text, redacted: the same value as the model's, still valid JSON unless a redaction spans a quote.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from guard.screens import json_text
from guard.screens.base import StreamStep, Verdict
from guard.screens.json_text_stream import JsonTextStream

Verdicts = Callable[[str, list[Any], float], Verdict]  # DenylistScreen.verdict: (direction, scans, start)


class _Pass:
    """A part that releases what it is fed: the canonical stream only decodes."""

    def feed_now(self, text: str) -> StreamStep:
        return StreamStep(release=text)

    def finish_now(self) -> StreamStep:
        return StreamStep()


class _Canonical(JsonTextStream):
    """The JSON text with every escape JSON does not need decoded (``\\u0067`` is ``g``, ``\\/`` is ``/``)."""

    def _part(self, raw: bool) -> _Pass:
        return _Pass()


class JsonTextDenylist:
    """The stream screen of one tool call's arguments: ``raw`` reads the text as written, ``decoded`` (both
    DenylistStreams) reads it with its escapes decoded."""

    def __init__(self, raw: Any, decoded: Any, verdicts: Verdicts) -> None:
        self.raw, self.canonical, self.decoded = raw, _Canonical(), decoded
        self.verdicts = verdicts
        self.t0 = time.perf_counter()

    @property
    def verdict(self) -> Verdict:
        return self.verdicts("response", [*self.raw.scans, *self.decoded.scans], self.t0)

    async def feed(self, text: str) -> StreamStep:
        first = self.raw.feed_now(text)
        if first.stop is not None:
            return StreamStep(stop=first.stop)
        plain = await self.canonical.feed(first.release)
        return self.decoded.feed_now(plain.release)

    async def finish(self) -> StreamStep:
        first = self.raw.finish_now()
        if first.stop is not None:
            return StreamStep(stop=first.stop)
        plain = await self.canonical.feed(first.release)
        rest = await self.canonical.finish()
        step = self.decoded.feed_now(plain.release + rest.release)
        if step.stop is not None:
            return step
        last = self.decoded.finish_now()
        return StreamStep(release=step.release + last.release, stop=last.stop)


def scan_json_text(scan: Callable[[str], Any], res: Any) -> Any:
    """The denylist scan ``res`` of JSON text as written (a ``_Scan``), completed by its decoded view;
    ``scan``: the screen's scan of a text in the same direction."""
    view = json_text.decoded_view(res.text)
    if view == res.text:
        return res
    whole = scan(view)
    if not whole.hits or whole.block:
        _merge(res, whole)
        return res
    obj = json_text.parse(res.text)
    if obj is None:  # not JSON after all: the decoded text, redacted
        _merge(res, whole)
        res.text = whole.text
        return res

    def one(s: str) -> str:
        got = scan(s)
        _merge(res, got)
        return str(got.text)

    new = json_text.map_json(obj, one)
    rest = scan(json_text.dump(new))  # what spans a key and its value
    _merge(res, rest)
    if not res.block:
        res.text = rest.text  # valid JSON unless a redaction spans a key and its value
    return res


def _merge(into: Any, got: Any) -> None:
    for k, n in got.hits.items():
        into.hits[k] = into.hits.get(k, 0) + n
    into.block.extend(c for c in got.block if c not in into.block)
    into.redacted = into.redacted or got.redacted
