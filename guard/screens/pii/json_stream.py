"""Streamed tool-call arguments: JSON text, screened string by string as it streams.

A model streams a tool call's arguments as pieces of JSON text (``{"to": "ann.le`` ... ``e@mailbox.org"}``).
A non-streamed answer rewrites each string of the parsed value (guard.screens.pii.scan.ScanPass.json_text);
here the text is read as it comes: each JSON string is decoded (escapes included, so ``\\u0040`` is an
``@``) and screened by a PIIStream of its own, which holds back only what could still become a value
(guard/screens/pii/stream.py); what it releases is written back JSON-escaped. The text between strings
(structure, numbers, ``true``/``false``/``null``) is screened too, as raw JSON text, so a value written as a
number or in text that is not JSON is not passed unread. Nothing is held whole: a long argument streams.

The splitting and decoding is guard.screens.json_text_stream's. Text that does not start as a JSON object
or array is screened as raw JSON text throughout (as the non-streamed path does); an invalid escape switches
to that for the rest of the text. Object keys are screened like values, as in the non-streamed path.
Parsed, the streamed arguments equal the non-streamed rewrite (tests/filters/test_stream_no_leak.py).
"""

from __future__ import annotations

import time

from guard.screens.base import Verdict
from guard.screens.json_text_stream import JsonTextStream
from guard.screens.pii.profile import PIIProfile
from guard.screens.pii.scan import ScanPass
from guard.screens.pii.stream import PIIStream
from guard.screens.pii.transform import Pseudonyms


class JsonArgsStream(JsonTextStream):
    """One tool call's streamed arguments, screened for personal data."""

    def __init__(self, profile: PIIProfile, pseudonyms: Pseudonyms, direction: str = "response") -> None:
        self.profile = profile
        self.scan = ScanPass(profile, direction, pseudonyms)
        self.started = time.perf_counter()
        super().__init__()

    def _part(self, raw: bool) -> PIIStream:
        kind = "tool_arguments" if raw else "content"  # raw JSON text keeps its escapes; a string's is decoded
        return PIIStream(self.profile, self.scan.pseudonyms, kind, self.scan.direction, scan=self.scan)

    def verdict(self) -> Verdict:
        return self.stopped or self.scan.verdict(self.started)
