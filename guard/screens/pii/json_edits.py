"""JSON text (tool-call arguments, tool results) read by the PII screen, as edits of the text as written.

The text is split as guard.screens.json_text_stream splits it (the same events whole or streamed): each
JSON string (keys included) is read decoded, so ``\\u0040`` is an ``@``; each number is read as it is
written; the text between them (and text that is not JSON) is read as written, with JSON-safe rewrites.
A finding in a decoded string is mapped back to the text as written (whole escape sequences), its
replacement (a placeholder, a mask, a restored value) written as JSON string content; a number that is
rewritten (a card number masked) becomes a JSON string. Used whole here (``json_edits``) and streamed by
guard.screens.pii.json_stream, part by part alike.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from guard.screens.edits import Edit, apply
from guard.screens.json_text_stream import Event, OffsetMap, escape, lex

STRUCTURE = re.compile(r"[\s{}\[\]:,]*(?:(?:true|false|null)[\s{}\[\]:,]*)*")  # nothing to read in it


def number_edit(at: int, number: str, edits: list[Edit]) -> list[Edit]:
    """The edits of a number as one edit: the rewritten number as a JSON string (none if unchanged)."""
    new = apply(number, edits)
    return [] if new == number else [(at, at + len(number), '"' + escape(new) + '"')]


def mapped(m: OffsetMap, edits: list[Edit], in_string: bool) -> list[Edit]:
    """Edits of a part's decoded text as edits of the text as written."""
    return [(m.start(a), m.end(b), escape(r) if in_string else r) for a, b, r in edits]


def json_edits(scan: Any, text: str) -> list[Edit]:
    """A ScanPass's rewrite of JSON text as edits of the text as written (the keys of a list of records
    repeat: each distinct string is scanned once, its findings counted each time)."""
    seen: dict[str, tuple[list[Edit], Counter[str]]] = {}

    def once(s: str, json_safe: bool) -> list[Edit]:
        if json_safe:
            return list(scan.edits(s, json_safe=True))
        hit = seen.get(s)
        if hit is None:
            before = scan.counts.copy()
            hit = seen[s] = (scan.edits(s), scan.counts - before)
        else:
            scan.counts.update(hit[1])
        return hit[0]

    out: list[Edit] = []
    part: list[str] = []
    size = 0  # characters in ``part``
    m = OffsetMap()
    in_string = False

    def end() -> None:
        body = "".join(part)
        if body and (in_string or not STRUCTURE.fullmatch(body)):
            out.extend(mapped(m, once(body, not in_string), in_string))
        part.clear()

    e: Event
    for e in lex(text):
        kind = e[0]
        if kind in ("raw", "chars"):
            piece = e[2] if kind == "raw" else e[3]
            m.add(size, len(piece), e[1], len(e[2]) if kind == "raw" else e[2] - e[1])
            part.append(piece)
            size += len(piece)
            continue
        end()
        size = 0
        if kind == "num":
            in_string, m = False, OffsetMap(0, e[1] + len(e[2]))
            out.extend(number_edit(e[1], e[2], once(e[2], False)))
        else:  # open, close, abort
            in_string = kind == "open"
            m = OffsetMap(0, e[1] + (0 if kind == "abort" else 1))
    end()
    return out
