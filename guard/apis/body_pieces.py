"""A large body read in pieces, so that no single parse holds the serving process's GIL for long.

``orjson.loads`` of a megabyte of small messages takes several milliseconds in C code that never lets the GIL
go: every other client's request waits that long, whichever thread runs it. The body reader process
(guard.apis.bodies), which has already read the body strictly, also finds where each element of the top-level
object's long arrays (``messages``, ``tools``, ``input``, ...) begins and ends (``spans``); this process then
reads the rest of the body with those arrays empty, and their elements in runs of about ``BATCH_BYTES``
(``assemble``): many short parses, between which the event loop gets the GIL. The object is the one
``orjson.loads`` gives for the whole body: the strict reader refused everything on which the two could differ
(a key given twice among them), and the pieces are the body's own bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

LEAST_ITEMS = 64  # arrays with fewer elements are read with the rest of the body
BATCH_BYTES = 32_768  # elements are parsed in runs of about this size: tens of microseconds each

# a JSON string (unrolled: linear, no backtracking), a bracket, or a comma
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)

Spans = list[tuple[str, int, int, list[tuple[int, int]]]]  # key, the array's [start, end), its elements


def spans(raw: bytes, least: int = LEAST_ITEMS) -> Spans:
    """For a body the strict reader accepted: each array value of the top-level object with at least
    ``least`` elements, as (key, start, end, element spans), in body order."""
    out: Spans = []
    depth = 0
    key: str | None = None
    expect_key = False
    arr: tuple[str, int] | None = None  # the top-level array being read: its key and '[' offset
    elems: list[tuple[int, int]] = []
    last = 0  # offset of the array's last '[' or ',' at its own level
    for m in _TOKEN.finditer(raw):
        c = raw[m.start()]
        if c == 0x22:  # a string: at depth 1 in key position, the key of the next value
            if depth == 1 and expect_key:
                key, expect_key = json.loads(m.group()), False
        elif c in b"{[":
            depth += 1
            if depth == 1:
                expect_key = True
            elif depth == 2 and c == 0x5B and key is not None:
                arr, elems, last = (key, m.start()), [], m.start()
        elif c in b"}]":
            if depth == 2 and arr is not None:
                if raw[last + 1 : m.start()].strip():  # not an empty array
                    elems.append((last + 1, m.start()))
                if len(elems) >= least:
                    out.append((arr[0], arr[1], m.end(), elems))
                arr = None
            depth -= 1
        elif depth == 1:  # a comma between members
            expect_key = True
        elif depth == 2 and arr is not None:  # a comma between the array's elements
            elems.append((last + 1, m.start()))
            last = m.start()
    return out


def assemble(raw: bytes, found: Spans) -> Any:
    """The body ``raw`` as ``orjson.loads(raw)`` reads it, parsed in pieces (see the module doc)."""
    parts: list[bytes] = []
    pos = 0
    for _, start, end, _ in found:
        parts += [raw[pos:start], b"[]"]
        pos = end
    parts.append(raw[pos:])
    body = orjson.loads(b"".join(parts))
    for key, _, _, elems in found:
        items: list[Any] = []
        i = 0
        while i < len(elems):  # a run of neighbouring elements, about BATCH_BYTES, per parse: one call
            j = i + 1  # per element would cost more than the whole body in orjson's per-call overhead
            while j < len(elems) and elems[j][1] - elems[i][0] < BATCH_BYTES:
                j += 1
            items += orjson.loads(b"[" + raw[elems[i][0] : elems[j - 1][1]] + b"]")
            i = j
        body[key] = items
    return body
