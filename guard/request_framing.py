"""Request heads whose body length two HTTP parsers could read differently: refused, never guessed.

RFC 9112 lets a server read ``Transfer-Encoding: chunked`` and ignore a ``Content-Length`` beside it, unfold
obsolete line folding, and merge ``Content-Length: 5, 5``. A proxy or load balancer in front of Guard may
read the same bytes otherwise, and the difference is where one request ends and a smuggled one begins. h11
accepts all of these; httptools most, not all. ``framing_problem`` reads a request head as sent and names
the first such ambiguity; guard.server refuses the request with 400 (audited) and closes the connection.
"""

from __future__ import annotations

import re

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_DIGITS = re.compile(rb"[0-9]{1,18}")


def head_of(buffered: bytes) -> bytes | None:
    """The request head at the start of ``buffered`` (blank lines before it skipped, as parsers do), or
    None while it is incomplete."""
    data = buffered.lstrip(b"\r\n")
    m = _HEAD_END.search(data)
    return data[: m.start()] if m else None


def framing_problem(head: bytes) -> str | None:
    """Why the body length of the request with this head (as sent) is ambiguous, or None."""
    lines = re.split(rb"\r?\n", head)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return "obsolete header line folding"
        name, _, value = line.partition(b":")
        headers.append((name, value.strip(b" \t")))
    return headers_problem(lines[0].rsplit(b" ", 1)[-1], headers)


def headers_problem(version: bytes | str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """``framing_problem`` for a head a parser has split: its HTTP version and (name, value) pairs."""
    te = [v.strip(b" \t") for k, v in headers if k.lower() == b"transfer-encoding"]
    cl = [v.strip(b" \t") for k, v in headers if k.lower() == b"content-length"]
    if te:
        if cl:
            return "both Content-Length and Transfer-Encoding"
        if len(te) > 1 or te[0].lower() != b"chunked":
            return "a Transfer-Encoding other than one 'chunked'"
        if version not in (b"HTTP/1.1", "1.1"):
            return "Transfer-Encoding in an HTTP/1.0 request"
    if len(cl) > 1:
        return "more than one Content-Length"
    if cl and not _DIGITS.fullmatch(cl[0]):
        return "a Content-Length that is not a plain decimal number"
    return None
