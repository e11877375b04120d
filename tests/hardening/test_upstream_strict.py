"""Upstream responses and headers handled strictly (issue 21, section 6), attacked through the running proxy
from both sides: a model server that writes HTTP by hand (tests/hardening/raw_upstream.py) and clients that
send every family of header.

- A response with bytes after its declared end (a smuggled second response, sent with it or while the
  connection idles in the pool), broken chunk framing, an oversized head, conflicting Content-Length /
  Transfer-Encoding: an error; the connection is closed and what it carried never reaches a later request.
- Whole bodies are capped (limits / upstreams.<name>.max_response_bytes): 502 upstream_response_too_large,
  audited; one event of a screened stream too.
- Only ``accept`` and what the operator lists per upstream go upstream from the client; credentials cannot
  even be listed.
- Upstream error bodies are size-capped and screened like answers.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.config import ConfigError, load_config
from guard.demo.stack import guard_config, write_config
from tests.hardening.conftest import events
from tests.hardening.raw_upstream import RawUpstream, chat_body, response

CHAT = "/v1/chat/completions"
SMUGGLED = "SMUGGLED-ANSWER"
CAP = 131072  # upstreams.raw.max_response_bytes in these tests
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"  # the shipped denylist redacts it in answers
IBAN = "DE89370400440532013000"  # the shipped PII default profile redacts it in answers


def _smuggle_same(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(response(chat_body("first")) + response(chat_body(SMUGGLED)))


def _smuggle_later(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(response(chat_body("first")))
    time.sleep(0.1)  # the connection is back in Guard's pool by now
    c.sendall(response(chat_body(SMUGGLED)))


def _smuggle_partial(c: socket.socket, req: dict[str, Any]) -> None:
    # the start of a second response: a parser that kept it would answer the next request with it
    whole = response(chat_body(SMUGGLED))
    c.sendall(response(chat_body("first")) + whole[:40])


def _bad(raw: bytes) -> Any:
    def h(c: socket.socket, req: dict[str, Any]) -> None:
        c.sendall(raw)

    return h


BODY = chat_body("x")
BAD_FRAMING = {
    "cl-and-te": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), len(BODY), BODY),
    "two-lengths": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), len(BODY) + 5, BODY),
    "chunk-size-lies": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY) - 3, BODY),
    "chunk-no-crlf": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    b"%x\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
    "te-gzip": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip\r\n\r\n" + BODY,
    "te-gzip-chunked": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked"
    b"\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
    "huge-head": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + b"x-pad: "
    + b"a" * 70000
    + b"\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "space-before-colon": b"HTTP/1.1 200 OK\r\ncontent-length : %d\r\n\r\n%s" % (len(BODY), BODY),
    "bytes-after-length": response(BODY) + b"garbage that is no response",
    "second-response": response(BODY) + response(chat_body(SMUGGLED)),
}


def _huge(c: socket.socket, req: dict[str, Any]) -> None:
    text = "word " * (CAP // 5 + 100)
    c.sendall(response(chat_body(text)))


def _huge_chunked(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    piece = b" " * 1024
    for _ in range(CAP // 1024 + 32):  # whitespace past the cap
        c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    c.sendall(b"0\r\n\r\n")


def _endless_event(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    piece = (
        b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"' + b"a" * 65536
    )
    c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    piece = b"a" * 65536
    try:
        for _ in range(40):  # 2.5 MiB of one event that never ends
            c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    except OSError:
        return


def _stream_error(c: socket.socket, req: dict[str, Any]) -> None:
    events = (
        b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,'
        b'"delta":{"content":"Hello "},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"quota exceeded for key %s","type":"server_error"}}\n\n'
        b"data: [DONE]\n\n" % AWS_KEY.encode()
    )
    c.sendall(response(events, ctype=b"text/event-stream"))


def _error_with_secrets(c: socket.socket, req: dict[str, Any]) -> None:
    body = json.dumps(
        {
            "error": {
                "message": f"invalid api key {AWS_KEY} for account {IBAN}",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }
    ).encode()
    c.sendall(response(body, "401 Unauthorized"))


def _error_text_with_secret(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(response(f"upstream says: key {AWS_KEY} refused".encode(), "500 Internal Server Error", b"text/plain"))


def _error_huge(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(response(json.dumps({"error": {"message": "x" * 100_000}}).encode(), "400 Bad Request"))


def _ok(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(response(chat_body("fine")))


HANDLERS = {
    "smuggle-same": _smuggle_same,
    "smuggle-later": _smuggle_later,
    "smuggle-partial": _smuggle_partial,
    "ok": _ok,
    "huge": _huge,
    "huge-chunked": _huge_chunked,
    "endless-event": _endless_event,
    "err-secrets": _error_with_secrets,
    "stream-error": _stream_error,
    "err-text": _error_text_with_secret,
    "err-huge": _error_huge,
    **{f"bad-{k}": _bad(v) for k, v in BAD_FRAMING.items()},
}


@pytest.fixture
def strict(guard_factory: Any) -> Iterator[tuple[Any, RawUpstream]]:
    raw = RawUpstream(HANDLERS)
    g = guard_factory(
        upstreams={
            "raw": {
                "url": raw.url,
                "api": "openai",
                "timeout_s": 3,
                "max_connections": 1,
                "max_response_bytes": CAP,
                "forward_headers": ["OpenAI-Organization", "X-Team"],
                "headers": {"OpenAI-Project": "proj_guard", "X-Team": "guard-team"},
            }
        },
        routes=[{"model": "*", "upstream": "raw"}],
    )
    yield g, raw
    raw.close()


def _chat(c: Any, model: str, **kw: Any) -> Any:
    return c.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, **kw)


def _record(g: Any, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        recs = {e["type"]: e for e in events(g.config.audit.dir) if e.get("request_id") == rid}
        if "exchange.completed" in recs or "exchange.denied" in recs or time.monotonic() > deadline:
            return recs


@pytest.mark.parametrize("model", ["smuggle-same", "smuggle-partial", "smuggle-later"])
def test_bytes_after_a_response_never_reach_the_next_request(strict: Any, model: str) -> None:
    g, raw = strict
    with g.client() as c:
        first = _chat(c, model)
        if model == "smuggle-later":
            time.sleep(0.4)  # the smuggled bytes arrive while the connection idles in the pool
        conns = raw.connections
        answers = [_chat(c, "ok") for _ in range(3)]
    print(model, first.status_code, first.text[:120], [a.status_code for a in answers])
    if model == "smuggle-later":  # the first answer was whole when it was relayed (or, on a slow machine, the
        # smuggled bytes came before it was taken: then it is refused too)
        assert (first.status_code == 200 and first.json()["choices"][0]["message"]["content"] == "first") or (
            first.status_code == 502 and first.json()["error"]["code"] == "upstream_error"
        ), first.text
    else:  # the response itself is not trusted: its framing was broken in the same read
        assert first.status_code == 502 and first.json()["error"]["code"] == "upstream_error", first.text
        assert SMUGGLED not in first.text
    for a in answers:
        assert a.status_code == 200 and a.json()["choices"][0]["message"]["content"] == "fine", a.text
        assert SMUGGLED not in a.text
    # the tainted connection was closed, never pooled: the next request opened a new one (pool of 1)
    assert raw.requests[-3]["conn"] > raw.requests[-4]["conn"] and raw.connections == conns + 1


@pytest.mark.parametrize("case", list(BAD_FRAMING))
def test_broken_framing_is_a_502_and_the_connection_is_never_reused(strict: Any, case: str) -> None:
    g, raw = strict
    with g.client() as c:
        r = _chat(c, f"bad-{case}")
        after = _chat(c, "ok")
    print(case, r.status_code, r.text[:160])
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error", r.text
    assert SMUGGLED not in r.text and "127.0.0.1" not in r.text and "raw" not in r.json()["error"]["message"]
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "fine"
    assert raw.requests[-1]["conn"] > raw.requests[-2]["conn"]  # a fresh connection after the broken one
    rec = _record(g, r.headers["x-guard-request-id"])
    assert rec["exchange.completed"]["outcome"]["error"] == "upstream_error"


@pytest.mark.parametrize("model", ["huge", "huge-chunked"])
def test_a_body_over_max_response_bytes_is_a_502_too_large_and_audited(strict: Any, model: str) -> None:
    g, _ = strict
    with g.client() as c:
        r = _chat(c, model)
        after = _chat(c, "ok")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_response_too_large", r.text
    assert "larger than this gateway allows" in r.json()["error"]["message"]
    assert after.status_code == 200
    rec = _record(g, r.headers["x-guard-request-id"])
    assert rec["exchange.completed"]["outcome"] == {"status": 502, "bytes": 0, "error": "upstream_response_too_large"}


def test_the_default_cap_applies_without_per_upstream_config(tmp_path: Path, pki_dir: Path) -> None:
    cfg = load_config(write_config(tmp_path / "g.yaml", guard_config(pki_dir, "http://127.0.0.1:9", 1, 2)))
    assert cfg.limits.max_response_bytes == 16 * 1024 * 1024
    assert cfg.upstreams["local"].max_response_bytes is None


def test_a_stream_event_that_never_ends_is_cut_with_too_large(strict: Any) -> None:
    g, _ = strict
    with (
        g.client(timeout=20) as c,
        c.stream(
            "POST",
            CHAT,
            json={"model": "endless-event", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as r,
    ):
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["code"] == "upstream_response_too_large"
    rec = _record(g, r.headers["x-guard-request-id"])
    assert rec["exchange.completed"]["outcome"]["error"] == "upstream_response_too_large"


# --- client headers -----------------------------------------------------------------------------------

HEADER_FAMILIES = {  # every family a client might send, and whether the upstream may see it
    "authorization": "Bearer sk-client-own-key",
    "proxy-authorization": "Basic Y2xpZW50OnB3",
    "api-key": "client-azure-key",
    "x-api-key": "client-anthropic-key",
    "x-goog-api-key": "client-goog-key",
    "x-amz-security-token": "client-session-token",
    "cookie": "session=abc",
    "openai-project": "proj_client",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "tools-2024",
    "x-stainless-lang": "python",
    "user-agent": "client-agent/1.0",
    "x-forwarded-for": "10.9.9.9",
    "forwarded": "for=10.9.9.9",
    "x-real-ip": "10.9.9.9",
    "x-request-id": "client-rid",
    "idempotency-key": "client-idem",
    "openai-beta": "assistants=v2",
    "x-custom-billing": "acct-9",
    "accept": "application/json",
    "openai-organization": "org-listed",
    "x-team": "listed-team",
    "x-guard-request-id": "forged",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "transfer-encoding": "chunked",
    "content-type": "application/json; charset=evil",
    "accept-encoding": "gzip, br",
    "x-forwarded-client-cert": "Hash=forged",
}


def test_only_accept_and_listed_headers_reach_the_upstream(strict: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    g, raw = strict
    with g.client() as c:
        headers = {k: v for k, v in HEADER_FAMILIES.items() if k != "transfer-encoding"}
        r = c.post(
            CHAT,
            headers=headers,
            content=json.dumps({"model": "ok", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        )
    assert r.status_code == 200, r.text
    seen = raw.requests[-1]["headers"]
    names = sorted(k.lower() for k, _ in seen)
    print(seen)
    assert names == sorted(
        [
            "host",
            "accept",
            "openai-organization",
            "openai-project",
            "x-team",
            "x-guard-request-id",
            "traceparent",
            "content-type",
            "accept-encoding",
            "content-length",
        ]
    ), names
    got = {k.lower(): v for k, v in seen}
    assert got["openai-organization"] == "org-listed"  # listed in forward_headers
    assert (
        got["openai-project"] == "proj_guard" and got["x-team"] == "guard-team"
    )  # set by Guard (upstreams.raw.headers)
    # x-team is both listed and set: Guard's value wins, the client's is not sent beside it
    assert got["accept"] == "application/json" and got["accept-encoding"] == "identity"
    assert got["content-type"] == "application/json"
    assert got["x-guard-request-id"] == r.headers["x-guard-request-id"]
    assert "0af7651916cd43dd8448eb211c80319c" in got["traceparent"] and "b7ad6b7169203331" not in got["traceparent"]
    wire = json.dumps(seen)
    for secret in (
        "sk-client-own-key",
        "client-azure-key",
        "client-anthropic-key",
        "client-goog-key",
        "client-session-token",
        "session=abc",
        "proj_client",
        "forged",
    ):
        assert secret not in wire


def test_the_upstream_key_is_guards_own(guard_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = RawUpstream({**HANDLERS, "ok-az": _ok})
    monkeypatch.setenv("GUARD_TEST_RAW_KEY", "sk-guard-upstream")
    try:
        g = guard_factory(
            upstreams={
                "raw": {"url": raw.url, "api_key_env": "GUARD_TEST_RAW_KEY"},
                "az": {"url": raw.url, "api": "azure-openai", "api_key_env": "GUARD_TEST_RAW_KEY"},
            },
            routes=[{"model": "ok", "upstream": "raw"}, {"model": "*", "upstream": "az"}],
        )
        with g.client() as c:
            for model in ("ok", "ok-az"):
                _chat(c, model, headers={"authorization": "Bearer sk-client", "api-key": "client-azure"})
        openai_req, azure_req = raw.requests[-2]["headers"], raw.requests[-1]["headers"]
    finally:
        raw.close()
    assert [v for k, v in openai_req if k.lower() == "authorization"] == ["Bearer sk-guard-upstream"]
    assert not [k for k, _ in openai_req if k.lower() == "api-key"]
    assert [v for k, v in azure_req if k.lower() == "api-key"] == ["sk-guard-upstream"]
    assert not [k for k, _ in azure_req if k.lower() == "authorization"]


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "api-key",
        "X-Api-Key",
        "cookie",
        "x-goog-api-key",
        "x-amz-security-token",
        "x-auth-user",
        "x-session-id",
        "host",
        "content-length",
        "transfer-encoding",
        "x-forwarded-client-cert",
        "x-guard-request-id",
        "bad name",
        "x-a:b",
    ],
)
def test_credentials_and_guard_headers_cannot_be_listed(tmp_path: Path, pki_dir: Path, name: str) -> None:
    for key, value, says in (
        ("forward_headers", ["x-team", name], "cannot be forwarded"),
        ("headers", {"x-team": "a", name: "v"}, "cannot be set here"),
    ):
        cfg = guard_config(pki_dir, "http://127.0.0.1:9", 1, 2)
        cfg["upstreams"]["local"][key] = value
        path = write_config(tmp_path / "g.yaml", cfg)
        with pytest.raises(ConfigError) as e:
            load_config(path)
        line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if f"{key}:" in ln)
        assert f"g.yaml:{line}: upstreams.local.{key}" in str(e.value) and says in str(e.value), str(e.value)


# --- upstream error bodies ------------------------------------------------------------------------------


def test_an_upstream_error_body_is_screened_like_an_answer(strict: Any) -> None:
    g, _ = strict
    with g.client() as c:
        r = _chat(c, "err-secrets")
        t = _chat(c, "err-text")
    assert r.status_code == 401, r.text
    msg = r.json()["error"]["message"]
    print(msg, "|", t.text)
    assert AWS_KEY not in msg and IBAN not in msg and "[REDACTED:aws_access_key_id]" in msg
    assert r.json()["error"]["code"] == "invalid_api_key"  # the rest of the upstream's error is relayed
    assert t.status_code == 500 and AWS_KEY not in t.text
    rec = _record(g, r.headers["x-guard-request-id"])["exchange.completed"]
    assert rec["outcome"]["error"] == "upstream_error_redacted"
    assert any(s["direction"] == "response" and s["name"] == "denylist" for s in rec["screens"])


def test_an_error_the_upstream_puts_into_a_stream_is_not_relayed(strict: Any) -> None:
    g, _ = strict
    with g.client() as c:
        r = c.post(
            CHAT, json={"model": "stream-error", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        )
    print(r.text)
    assert r.status_code == 200 and AWS_KEY not in r.text and "quota" not in r.text
    lines = [ln for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["error"]["code"] == "upstream_error"
    rec = _record(g, r.headers["x-guard-request-id"])["exchange.completed"]
    assert rec["outcome"]["error"] == "upstream_stream_error"


def test_an_oversized_upstream_error_body_is_replaced_by_a_note(strict: Any) -> None:
    g, _ = strict
    with g.client() as c:
        r = _chat(c, "err-huge")
    assert r.status_code == 400 and len(r.content) < 1000, r.text[:200]
    err = r.json()["error"]
    assert err["code"] == "upstream_error_too_large" and "was withheld" in err["message"]
    assert (
        _record(g, r.headers["x-guard-request-id"])["exchange.completed"]["outcome"]["error"]
        == "upstream_error_too_large"
    )
