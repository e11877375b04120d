"""Request smuggling family, with raw sockets, against both of uvicorn's HTTP/1.1 parsers (httptools and h11),
over TLS and over plain HTTP (a deployment behind a trusted proxy).

A body length that two parsers could read differently (Content-Length with Transfer-Encoding, an obfuscated
Transfer-Encoding, two Content-Lengths, a signed or padded Content-Length, a chunk size that overflows,
header continuation lines) is refused, never guessed: 400 in the OpenAI error shape with an
x-guard-request-id, ``connection: close``, the connection closed, and an ``exchange.denied`` audit record under
that request id (docs/threat-model.md). tests/hardening/test_http_abuse.py has the TLS/httptools basics.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any

import pytest

from tests.hardening.conftest import events, tls_socket

BODY = b'{"model":"demo-model","messages":[{"role":"user","content":"hi"}]}'
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
CHUNKED = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
N = str(len(BODY)).encode()

SMUGGLING = {
    "cl_and_te": HEAD + b"content-length: " + N + b"\r\ntransfer-encoding: chunked\r\n\r\n" + CHUNKED,
    "te_and_cl": HEAD + b"transfer-encoding: chunked\r\ncontent-length: " + N + b"\r\n\r\n" + CHUNKED,
    "cl_and_te_zero": HEAD + b"content-length: 0\r\ntransfer-encoding: chunked\r\n\r\n" + CHUNKED,
    "te_chunked_identity": HEAD + b"transfer-encoding: chunked, identity\r\n\r\n" + CHUNKED,
    "te_identity_chunked_cl": HEAD
    + b"transfer-encoding: identity, chunked\r\ncontent-length: "
    + N
    + b"\r\n\r\n"
    + CHUNKED,
    "te_leading_space_value_cl": HEAD + b"transfer-encoding:  chunked\r\ncontent-length: " + N + b"\r\n\r\n" + CHUNKED,
    "te_xchunked": HEAD + b"transfer-encoding: xchunked\r\n\r\n" + CHUNKED,
    "te_chunked_x": HEAD + b"transfer-encoding: chunkedx\r\n\r\n" + CHUNKED,
    "te_space_before_colon": HEAD + b"transfer-encoding : chunked\r\n\r\n" + CHUNKED,
    "te_tab_name": HEAD + b"transfer-encoding\t: chunked\r\n\r\n" + CHUNKED,
    "te_twice": HEAD + b"transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n" + CHUNKED,
    "te_folded": HEAD + b"transfer-encoding: identity\r\n chunked\r\n\r\n" + CHUNKED,
    "te_http10": HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"transfer-encoding: chunked\r\n\r\n" + CHUNKED,
    "two_cl_differ": HEAD + b"content-length: " + N + b"\r\ncontent-length: 5\r\n\r\n" + BODY,
    "cl_list": HEAD + b"content-length: " + N + b", " + N + b"\r\n\r\n" + BODY,
    "cl_plus_sign": HEAD + b"content-length: +" + N + b"\r\n\r\n" + BODY,
    "cl_minus_sign": HEAD + b"content-length: -" + N + b"\r\n\r\n" + BODY,
    "cl_inner_space": HEAD + b"content-length: " + N[:1] + b" " + N[1:] + b"\r\n\r\n" + BODY,
    "cl_hex": HEAD + b"content-length: 0x" + (b"%x" % len(BODY)) + b"\r\n\r\n" + BODY,
    "cl_overflow": HEAD + b"content-length: 99999999999999999999999999\r\n\r\n" + BODY,
    "chunk_size_overflow": HEAD
    + b"transfer-encoding: chunked\r\n\r\nffffffffffffffffffffffff42\r\n"
    + BODY
    + b"\r\n0\r\n\r\n",
    "chunk_size_negative": HEAD + b"transfer-encoding: chunked\r\n\r\n-42\r\n" + BODY + b"\r\n0\r\n\r\n",
    "chunk_size_not_hex": HEAD + b"transfer-encoding: chunked\r\n\r\n4g\r\n" + BODY + b"\r\n0\r\n\r\n",
    "obs_fold": HEAD + b"x-folded: a\r\n\tb\r\ncontent-length: " + N + b"\r\n\r\n" + BODY,
    "obs_fold_cl": HEAD + b"x-a: b\r\n content-length: 5\r\ncontent-length: " + N + b"\r\n\r\n" + BODY,
}


def _read_all(s: Any) -> bytes:
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    except (TimeoutError, ConnectionError, ssl.SSLError):
        return out


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp[:5] == b"HTTP/" else 0


def _rid(resp: bytes) -> str:
    head = resp.partition(b"\r\n\r\n")[0].decode("latin-1")
    return next(
        ln.split(":", 1)[1].strip() for ln in head.split("\r\n") if ln.lower().startswith("x-guard-request-id:")
    )


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_every_ambiguous_body_length_is_refused_with_an_answer_and_a_record(
    guard_factory: Any, http: str, tls: bool
) -> None:
    if tls:
        g = guard_factory(http=http)
        ctx = g.ssl_context("app")

        def connect() -> Any:
            return tls_socket(g.url, ctx)
    else:
        g = guard_factory(http=http, tls={"enabled": False, "trusted_proxies": ["127.0.0.1/32"]})
        port = int(g.url.rsplit(":", 1)[1])

        def connect() -> Any:
            return socket.create_connection(("127.0.0.1", port), timeout=5)

    seen: dict[str, str] = {}
    bad = {}
    for name, raw in SMUGGLING.items():
        with connect() as s:
            s.settimeout(5)
            s.sendall(raw)
            resp = _read_all(s)  # the server closes the connection: _read_all returns
        head, _, body = resp.partition(b"\r\n\r\n")
        if _status(resp) != 400 or b"connection: close" not in head.lower() or b"x-guard-request-id" not in head:
            bad[name] = resp[:160]
            continue
        assert json.loads(body)["error"]["code"] == "invalid_http_request", (name, body)
        assert resp.count(b"HTTP/1.") == 1, (name, resp)  # nothing smuggled behind it was answered
        seen[_rid(resp)] = name
    assert not bad, sorted(f"{k}: {_status(v)}" for k, v in bad.items())
    deadline = time.monotonic() + 5
    while True:
        denied = {e["request_id"] for e in events(g.config.audit.dir) if e.get("type") == "exchange.denied"}
        if set(seen) <= denied or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert set(seen) <= denied, {seen[r] for r in set(seen) - denied}
    with connect() as s:  # a well-formed request on the same server is served
        s.settimeout(5)
        s.sendall(HEAD + b"content-length: " + N + b"\r\nconnection: close\r\n" + _identity(tls) + b"\r\n" + BODY)
        assert _status(_read_all(s)) == 200


def _identity(tls: bool) -> bytes:
    """Plain HTTP: the client's identity as a trusted proxy forwards it (Envoy's XFCC)."""
    if tls:
        return b""
    return b'x-forwarded-client-cert: Subject="CN=billing-app,OU=apps,O=Example Corp"\r\n'
