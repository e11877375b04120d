"""Requests the HTTP layer refuses before the pipeline (guard.server: malformed, header limits, a broken body,
slow headers, a certificate revoked since the connection opened) are answered in the client API's own error
shape, chosen by the request's path: an Ollama client on /api/... gets Ollama's ``{"error": "text"}`` (which
the ``ollama`` client raises as ResponseError), an OpenAI client on /v1/... OpenAI's ``{"error": {...}}``;
each with its request id and an ``exchange.denied`` record under it, with both of uvicorn's HTTP
implementations. Attacked on the running proxy over mTLS."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import ollama
import pytest

from guard import pki, server
from tests.hardening.conftest import events, tls_socket
from tests.hardening.test_http_abuse import _read_all, _rid, _status
from tests.hardening.test_revocation import connect, read_response, reload

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'


def _head(path: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n" % path


def _cases(path: bytes, http: str) -> dict[str, tuple[bytes, int, str]]:
    head = _head(path)
    out = {
        "duplicate_content_length": (
            head + b"content-length: 66\r\ncontent-length: 71\r\n\r\n" + BODY,
            400,
            "invalid_http_request",
        ),
        "nul_in_header": (head + b"x-nul: a\x00b\r\ncontent-length: 66\r\n\r\n" + BODY, 400, "invalid_http_request"),
    }
    if http == "httptools":  # h11 has its own size limit (a 400), no header-count limit, and closes without an
        # answer on a chunked body it cannot frame
        out["smuggling_cl_te"] = (
            head + b"content-length: 66\r\ntransfer-encoding: chunked\r\n\r\n" + BODY,
            400,
            "invalid_http_request",
        )
        # the headers pass; the body's chunk framing breaks while the body is being read
        out["bad_chunk_size"] = (
            head + b"transfer-encoding: chunked\r\n\r\nzz\r\n" + BODY + b"\r\n0\r\n\r\n",
            400,
            "invalid_http_request",
        )
        out["too_many_headers"] = (
            head + b"".join(b"x-h%d: v\r\n" % i for i in range(200)) + b"content-length: 66\r\n\r\n" + BODY,
            431,
            "headers_too_large",
        )
        out["huge_header"] = (
            head + b"x-big: " + b"a" * 70_000 + b"\r\ncontent-length: 66\r\n\r\n" + BODY,
            431,
            "headers_too_large",
        )
    return out


def _denied(g: Any, rids: set[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        denied = {e["request_id"]: e for e in events(g.config.audit.dir) if e.get("type") == "exchange.denied"}
        if rids <= set(denied) or time.monotonic() > deadline:
            return denied
        time.sleep(0.05)


def _shape(resp: bytes, status: int, code: str, ollama_shape: bool) -> str:
    """Asserts the answer's status and error shape; returns its request id."""
    assert _status(resp) == status, resp[:300]
    head, _, body = resp.partition(b"\r\n\r\n")
    assert b"x-guard-request-id: " in head and b"connection: close" in head, head
    err = json.loads(body)
    if ollama_shape:  # Ollama's own shape: the text itself under "error" (Guard's code beside it)
        assert isinstance(err["error"], str) and err["error"], err
        assert err["code"] == code, err
    else:
        assert isinstance(err["error"], dict) and err["error"]["code"] == code, err
    return _rid(resp)


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_refusals_before_the_pipeline_answer_in_the_path_s_api_shape(guard_factory: Any, http: str) -> None:
    g = guard_factory(http=http)
    ctx = g.ssl_context("app")
    seen: dict[str, tuple[int, str]] = {}
    for path, ollama_shape in (
        (b"/api/chat", True),
        (b"/api/generate", True),
        (b"/api/embed?x=1", True),
        (b"/v1/chat/completions", False),
    ):
        for name, (raw, status, code) in _cases(path, http).items():
            with tls_socket(g.url, ctx) as s:
                with contextlib.suppress(ConnectionError, ssl.SSLError):  # refused before all was sent
                    s.sendall(raw)
                resp = _read_all(s)
            print(http, path.decode(), name, resp[: resp.find(b"\r\n")])
            seen[_shape(resp, status, code, ollama_shape)] = (status, code)
    denied = _denied(g, set(seen))
    for rid, (status, code) in seen.items():
        e = denied[rid]
        assert e["outcome"]["status"] == status and e["denial"] == {"stage": "request", "code": code}, e
        assert e["principal"]["cn"] == "billing-app"


def test_the_ollama_client_reads_a_header_refusal(guard_factory: Any) -> None:
    """The official ``ollama`` client, sending more request headers than Guard takes: ResponseError with
    Guard's text and status 431, not a JSON decoding failure."""
    g = guard_factory()
    c = ollama.Client(host=g.url, verify=g.ssl_context("app"), timeout=10, headers={f"x-h{i}": "v" for i in range(200)})
    with pytest.raises(ollama.ResponseError) as ei:
        c.chat(model="m", messages=[{"role": "user", "content": "hello"}])
    assert ei.value.status_code == 431 and "request headers" in ei.value.error, ei.value.error


def test_slow_headers_on_an_ollama_path_get_ollama_s_408(guard_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server._TLSHttpTools, "header_timeout_s", 1.0)
    g = guard_factory()
    with tls_socket(g.url, g.ssl_context("app")) as s:
        s.sendall(_head(b"/api/chat"))
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            while time.monotonic() - t0 < 6:
                s.sendall(b"x")
                time.sleep(0.1)
        resp = _read_all(s)
    rid = _shape(resp, 408, "request_timeout", True)
    assert _denied(g, {rid})[rid]["denial"] == {"stage": "request", "code": "request_timeout"}


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_revoked_certificate_on_an_ollama_path_gets_ollama_s_403(
    pki_dir: Path, guard_factory: Any, tmp_path: Path, http: str
) -> None:
    d = tmp_path / "ca"
    d.mkdir()
    for f in ("ca.pem", "ca-key.pem"):
        shutil.copy(pki_dir / f, d / f)
    cert, key = pki.issue(d, "victim", client=True, cn="billing-app", ou=["apps"])
    pki.revoke(d, [])
    g = guard_factory(http=http, tls={"crl": str(d / "crl.pem")})
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    ctx.load_cert_chain(str(cert), str(key))
    with connect(g, ctx) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: localhost\r\n\r\n")
        assert read_response(s)[0] == 200
        pki.revoke(d, [cert])
        reload(g)
        s.sendall(_head(b"/api/chat") + b"content-length: 66\r\n\r\n" + BODY)
        status, headers, body = read_response(s)
    assert status == 403 and headers.get("connection") == "close", body
    err = json.loads(body)
    assert isinstance(err["error"], str) and err["code"] == "certificate_revoked", err
    rid = headers["x-guard-request-id"]
    e = _denied(g, {rid})[rid]
    assert e["outcome"]["status"] == 403 and e["denial"]["code"] == "certificate_revoked"
