"""The core proxy through real mTLS with real clients: the openai SDK, httpx, raw sockets."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from guard.doubles import AllowAll


def test_sync_chat_reply_arrives_unchanged(guard, model_server):
    c = guard.openai()
    r = c.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content.startswith("Hello from llama-3-8b.")
    assert r.usage.completion_tokens > 0


def test_sync_stream_reassembles_the_reply(guard):
    c = guard.openai()
    chunks = list(
        c.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "[[reply: one two three four]]"}]
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "one two three four"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_async_client_stream_and_non_stream(guard):
    async def go() -> tuple[str, str]:
        c = guard.async_openai()
        whole = await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "[[reply: abc]]"}])
        s = await c.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "[[reply: x y z]]"}]
        )
        parts = [ch.choices[0].delta.content or "" async for ch in s if ch.choices]
        await c.close()
        return whole.choices[0].message.content, "".join(parts)

    assert asyncio.run(go()) == ("abc", "x y z")


def test_completions_and_embeddings(guard):
    c = guard.openai("prod-workload")  # the shipped policy lets prod workloads use any operation
    r = c.completions.create(model="m", prompt="[[reply: done]]")
    assert r.choices[0].text == "done"
    e = c.embeddings.create(model="emb", input=["a", "b"])
    assert len(e.data) == 2


def test_streamed_chunks_arrive_while_upstream_is_still_sending(guard_factory, tmp_path):
    """Upstream sends 5 chunks 300 ms apart; the first must reach the client long before the last is sent.
    No response screen is configured (empty filters/), so nothing may be held back."""
    (tmp_path / "nofilters").mkdir()
    c = guard_factory(filters={"dir": str(tmp_path / "nofilters")}).openai()
    t0 = time.monotonic()
    arrivals = []
    for ch in c.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "[[reply: a b c d e]] [[delay_ms=300]]"}]
    ):
        if ch.choices and ch.choices[0].delta.content:
            arrivals.append(time.monotonic() - t0)
    assert len(arrivals) == 5
    assert arrivals[0] < 0.25, arrivals  # not buffered until the end (~1.5 s)
    assert arrivals[-1] - arrivals[0] > 1.0


def test_ollama_chat_stream_with_plain_http(guard):
    with (
        guard.client() as c,
        c.stream(
            "POST",
            "/api/chat",
            json={"model": "llama3", "messages": [{"role": "user", "content": "[[reply: hi there friend]]"}]},
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    text = "".join(x["message"]["content"] for x in lines)
    assert text == "hi there friend"
    assert lines[-1]["done"] is True


def test_ollama_generate_embed_and_tags(guard):
    with guard.client("prod-workload") as c:
        r = c.post("/api/generate", json={"model": "llama3", "prompt": "[[reply: gen]]", "stream": False})
        assert r.json()["response"] == "gen"
        r = c.post("/api/embed", json={"model": "llama3", "input": "x"})
        assert r.json()["embeddings"]
        assert c.get("/api/tags").status_code == 200


def test_models_lists_routed_models(guard_factory):
    g = guard_factory(routes=[{"model": "llama-3-8b", "upstream": "local"}, {"model": "gpt-*", "upstream": "local"}])
    ids = [m.id for m in g.openai().models.list().data]
    assert ids == ["llama-3-8b", "gpt-4o-mini"]  # gpt-*: the upstream's own /v1/models names that match


def _last_model_request(model_server) -> dict:
    """The last request the model server got that was not a Llama Guard screening call."""
    return [q for q in model_server[0].requests if "guard" not in str(q["body"].get("model", "")).lower()][-1]


def _err(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers.get("x-guard-request-id")
    body = r.json()["error"]
    assert set(body) >= {"message", "type", "code"}
    if code:
        assert body["code"] == code
    return body


def test_error_statuses_have_openai_shape_and_request_id(guard_factory):
    g = guard_factory(routes=[{"model": "llama-*", "upstream": "local"}], limits={"max_body_bytes": 2048})
    with g.client() as c:
        h = {"content-type": "application/json"}
        _err(c.post("/v1/chat/completions", content=b"{not json", headers=h), 400, "invalid_json")
        _err(
            c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}), 400, "invalid_model"
        )
        _err(
            c.post("/v1/chat/completions", json={"model": "other", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model_not_found",
        )
        _err(
            c.post(
                "/v1/chat/completions", json={"model": "llama-1", "messages": [{"role": "user", "content": "x" * 5000}]}
            ),
            413,
            "body_too_large",
        )
        _err(c.post("/v1/chat/completions", content=b"model=x", headers={"content-type": "text/plain"}), 415)
        _err(c.get("/v1/nothing-here"), 404, "not_found")


def test_upstream_errors_are_passed_through(guard):
    with guard.client() as c:
        r = c.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "[[status=429]]"}]}
        )
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "demo"
    assert r.headers["x-guard-request-id"]


def test_upstream_down_is_502(guard_factory):
    from guard.demo.stack import free_port

    g = guard_factory(upstream_url=f"http://127.0.0.1:{free_port()}")
    with g.client() as c:
        _err(
            c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            502,
            "upstream_unreachable",
        )


def test_fallback_upstream_used_when_first_is_unreachable(guard_factory, model_server):
    from guard.demo.stack import free_port

    g = guard_factory(
        upstreams={"dead": {"url": f"http://127.0.0.1:{free_port()}"}, "local": {"url": model_server[1]}},
        routes=[{"model": "*", "upstream": "dead", "fallbacks": ["local"]}],
    )
    r = g.openai().chat.completions.create(model="m", messages=[{"role": "user", "content": "[[reply: ok]]"}])
    assert r.choices[0].message.content == "ok"


def test_hanging_upstream_is_504(guard_factory, model_server):
    g = guard_factory(upstreams={"local": {"url": model_server[1], "timeout_s": 0.5}})
    with g.client() as c:
        _err(
            c.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "[[first_byte_ms=3000]]"}]},
            ),
            504,
            "upstream_timeout",
        )


def test_client_disconnect_cancels_upstream_stream(guard, model_server):
    app = model_server[0]
    before = app.cancelled
    with (
        guard.client() as c,
        c.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "[[forever]]"}]},
        ) as r,
    ):
        it = r.iter_lines()
        for _ in range(3):
            next(it)
    deadline = time.monotonic() + 5
    while app.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.cancelled == before + 1


def test_client_credentials_never_forwarded_upstream_key_is(guard_factory, model_server, monkeypatch):
    monkeypatch.setenv("GUARD_TEST_UPSTREAM_KEY", "sk-upstream-123")
    g = guard_factory(
        upstreams={
            "local": {
                "url": model_server[1],
                "api_key_env": "GUARD_TEST_UPSTREAM_KEY",
                "forward_headers": ["X-Custom", "x-h"],
            }
        }
    )
    with g.client() as c:
        c.post(
            "/v1/chat/completions",
            headers={
                "authorization": "Bearer client-secret",
                "connection": "keep-alive, x-h",
                "x-h": "1",
                "cookie": "a=b",
                "x-custom": "kept",
            },
            json={"model": "m", "messages": [{"role": "user", "content": "[[reply: k]]"}]},
        )
    seen = _last_model_request(model_server)["headers"]
    assert seen["authorization"] == "Bearer sk-upstream-123"
    assert "cookie" not in seen and seen.get("x-custom") == "kept"  # listed in forward_headers
    assert "x-h" not in seen  # listed too, but the client's Connection header makes it hop-by-hop
    assert seen["traceparent"].startswith("00-")
    assert "client-secret" not in json.dumps(seen)


def test_cookies_an_upstream_sets_are_never_sent_back_for_anyone(guard_factory):
    """A model server (or the load balancer in front of it) that sets a cookie must not see it again: the
    pooled client is shared by every principal, so a kept cookie would carry one caller's session into
    another's requests. Nor does the client get the Set-Cookie header."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str | None] = []
    reply = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        }
    ).encode()

    class Upstream(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.headers.get("cookie"))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("set-cookie", f"session=secret-of-call-{len(seen)}; Path=/")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        # a host name, not an IP address: aiohttp keeps no cookies from IP-address hosts anyway
        g = guard_factory(upstream_url=f"http://localhost:{srv.server_address[1]}")
        for name in ("app", "staff", "app"):
            with g.client(name) as c:
                r = c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200 and "set-cookie" not in r.headers
    finally:
        srv.shutdown()
    assert seen == [None, None, None]


def test_azure_openai_upstream_uses_deployment_path_and_api_key(guard_factory, model_server, monkeypatch):
    monkeypatch.setenv("AZ_KEY", "az-key-1")
    g = guard_factory(
        upstreams={
            "local": {
                "url": model_server[1],
                "api": "azure-openai",
                "api_key_env": "AZ_KEY",
                "api_version": "2024-10-21",
            }
        },
        routes=[{"model": "gpt-4o", "upstream": "local", "upstream_model": "prod-gpt4o"}],
    )
    g.openai().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[reply: a]]"}])
    seen = _last_model_request(model_server)
    assert seen["path"] == "/openai/deployments/prod-gpt4o/chat/completions"
    assert seen["headers"]["api-key"] == "az-key-1" and "authorization" not in seen["headers"]


class _Recording(AllowAll):
    def __init__(self) -> None:
        self.subs: list[dict] = []

    def decide_access(self, sub, obj, act, env):
        self.subs.append(sub)
        return super().decide_access(sub, obj, act, env)


XFCC = (
    'By=spiffe://example.org/guard;Hash=abc123;Subject="CN=mesh-app,OU=apps,O=Example";'
    "URI=spiffe://example.org/ns/prod/sa/mesh-app"
)


def test_xfcc_from_untrusted_peer_is_ignored(guard_factory):
    pol = _Recording()
    g = guard_factory(runtime_kw={"policy": pol})
    with g.client() as c:
        c.post(
            "/v1/chat/completions",
            headers={"x-forwarded-client-cert": XFCC},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    assert pol.subs[-1]["cn"] == "billing-app" and pol.subs[-1]["source"] == "tls"


def test_xfcc_from_trusted_peer_sets_principal(guard_factory):
    pol = _Recording()
    g = guard_factory(runtime_kw={"policy": pol}, tls={"trusted_proxies": ["127.0.0.0/8"]})
    with g.client() as c:
        c.post(
            "/v1/chat/completions",
            headers={"x-forwarded-client-cert": XFCC},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    sub = pol.subs[-1]
    assert sub["cn"] == "mesh-app" and sub["ou"] == ["apps"] and sub["source"] == "xfcc"
    assert sub["spiffe_id"] == "spiffe://example.org/ns/prod/sa/mesh-app"


def test_principal_attributes_from_certificate(guard_factory):
    pol = _Recording()
    g = guard_factory(runtime_kw={"policy": pol})
    with g.client("prod-workload") as c:
        c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    sub = pol.subs[-1]
    assert sub["spiffe_id"] == "spiffe://example.org/ns/prod/sa/batch"
    assert len(sub["fingerprint"]) == 64 and sub["serial"] and sub["not_after"].endswith("Z")
    assert sub["subject"] == "CN=batch-job"


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_tls_extension_reaches_app_with_both_http_implementations(guard_factory, http):
    pol = _Recording()
    g = guard_factory(runtime_kw={"policy": pol}, http=http)
    with g.client("staff") as c:
        assert (
            c.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
            ).status_code
            == 200
        )
    assert pol.subs[-1]["cn"] == "alice" and pol.subs[-1]["ou"] == ["staff"]


def test_x_forwarded_for_does_not_change_the_client_address(guard_factory):
    from guard.audit.layout import iter_events

    g = guard_factory()
    with g.client() as c:
        r = c.post(
            "/v1/chat/completions",
            headers={"x-forwarded-for": "203.0.113.9"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    rid = r.headers["x-guard-request-id"]
    events = [e for _, _, e in iter_events(g.config.audit.dir) if e.get("request_id") == rid]
    assert events and all(e["client_ip"] == "127.0.0.1" for e in events)
