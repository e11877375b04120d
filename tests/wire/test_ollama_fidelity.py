"""The Ollama API through the running proxy with the official ``ollama`` client (host + client certificate):
every refusal in Ollama's error shape ``{"error": "text"}`` (the client raises ResponseError with that text and
the status), and the catalogue (/api/tags, /api/show, /api/ps, /api/version) showing exactly the models the
caller may use, wildcard routes resolved against the upstream's own list (the built-in model server speaks
Ollama's catalogue paths)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ollama
import pytest

from guard.demo.stack import free_port
from tests.hardening.conftest import events

AWS = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Routes: internal-* and llama3* (wildcards) and phi3 (exact) to the Ollama upstream, down-* to an Ollama
    upstream nobody listens on, everything else to the OpenAI upstream. The shipped policy: apps may not use
    internal-* models, staff may."""
    from tests.conftest import start_guard

    down = {"url": f"http://127.0.0.1:{free_port()}", "api": "ollama", "timeout_s": 5}
    h = start_guard(
        pki_dir,
        model_server[1],
        tmp_path_factory.mktemp("ollama-fidelity"),
        upstreams={"down": down},
        limits={"max_body_bytes": 8192},
        routes=[
            {"model": "internal-*", "upstream": "ollama"},
            {"model": "llama3*", "upstream": "ollama"},
            {"model": "phi3", "upstream": "ollama"},
            {"model": "down-*", "upstream": "down"},
            {"model": "*", "upstream": "local"},
        ],
    )
    yield h
    h.stop()


def oc(g: Any, name: str = "app") -> ollama.Client:
    return ollama.Client(host=g.url, verify=g.ssl_context(name), timeout=10)


def _record(g: Any, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        for e in events(g.config.audit.dir):
            if e.get("request_id") == rid and e.get("type") in ("exchange.completed", "exchange.denied"):
                return e
        assert time.monotonic() < deadline, f"no final audit record for {rid}"
        time.sleep(0.05)


REFUSALS = {  # name -> (model, content, status, Guard's code, a word of the message)
    "policy": ("internal-llama3:latest", "hi", 403, "access_denied", "denied"),
    "screen": ("llama3", f"my key {AWS}", 400, "secret_blocked", "credential"),
    "upstream down": ("down-x", "hi", 502, "upstream_unreachable", "could not be reached"),
    "body too large": ("llama3", "x" * 9000, 413, "body_too_large", "exceeds"),
    "api mismatch": ("mistral:7b", "hi", 400, "api_mismatch", "OpenAI API"),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_ollama_errors_with_their_record(g: Any, case: str, stream: bool) -> None:
    model, content, status, code, word = REFUSALS[case]
    with pytest.raises(ollama.ResponseError) as e:
        out = oc(g).chat(model=model, messages=[{"role": "user", "content": content}], stream=stream)
        if stream:
            list(out)  # type: ignore[arg-type]
    assert e.value.status_code == status and isinstance(e.value.error, str) and word in e.value.error, e.value
    assert AWS not in e.value.error
    with g.client() as c:  # the same request, to read the body and its record
        r = c.post(
            "/api/chat", json={"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}
        )
    body = r.json()
    assert r.status_code == status and isinstance(body["error"], str) and body["code"] == code, body
    assert set(body) <= {"error", "code", "param"}
    rec = _record(g, r.headers["x-guard-request-id"])
    assert rec["type"] == "exchange.denied" or rec["outcome"]["status"] == status
    assert rec["api"] == "ollama"


def test_unknown_field_and_unserved_paths(g: Any) -> None:
    with g.client() as c:
        r = c.post("/api/generate", json={"model": "llama3", "prompt": "hi", "bogus": 1})
        pull = c.post("/api/pull", json={"model": "llama3"})
    e = ollama.ResponseError(r.text, r.status_code)  # how the client reads it
    assert r.status_code == 400 and "bogus" in e.error and r.json()["code"] == "unknown_field"
    assert r.json()["param"] == "$.bogus"
    # model management (pull, push, create, copy, delete) is not served through Guard
    with pytest.raises(ollama.ResponseError) as e2:
        oc(g).pull("llama3")
    assert e2.value.status_code == 404 and "no such endpoint" in e2.value.error
    assert pull.status_code == 404 and pull.json()["code"] == "not_found"
    _record(g, pull.headers["x-guard-request-id"])


def test_quota_refusal_is_an_ollama_error(guard_factory: Any) -> None:
    g2 = guard_factory(quotas={"tiers": {"default": {"requests_per_minute": 1}}})
    c = oc(g2)
    c.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ollama.ResponseError) as e:
        c.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429 and isinstance(e.value.error, str) and "requests_per_minute" in e.value.error


def test_generate_is_granted_where_chat_is(g: Any) -> None:
    """The shipped policy grants completion (Ollama's /api/generate) wherever it grants chat."""
    r = oc(g).generate(model="llama3", prompt="[[reply: done]]")
    assert r.response == "done"
    with pytest.raises(ollama.ResponseError) as e:
        oc(g).generate(model="internal-llama3:latest", prompt="hi")
    assert e.value.status_code == 403


def test_tags_lists_exactly_the_usable_models(g: Any, model_server: Any) -> None:
    app = {m.model for m in oc(g).list().models}
    staff = {m.model for m in oc(g, "staff").list().models}
    # llama3* resolved against the upstream's own list; phi3 routed by name; demo-model and mistral:7b are
    # listed by the upstream but routed to the OpenAI upstream, so an Ollama client cannot use them here
    assert app == {"llama3:latest", "llama3.1:8b", "phi3"}
    assert staff == app | {"internal-llama3:latest"}
    entry = next(m for m in oc(g).list().models if m.model == "llama3:latest")
    assert entry.size and entry.digest and entry.details.family == "llama"
    tags = [q for q in model_server[0].requests if q["path"] == "/api/tags"]
    assert tags and all("client-secret" not in json.dumps(q["headers"]) for q in tags)


def test_show_is_policy_checked_and_proxied(g: Any, model_server: Any) -> None:
    s = oc(g).show("llama3:latest")
    assert s.modelfile and s.details.family == "llama" and "tools" in (s.capabilities or [])
    for name in ("internal-llama3:latest", "mistral:7b", "no-such-model"):
        with pytest.raises(ollama.ResponseError) as e:
            oc(g).show(name)
        assert e.value.status_code == 404 and name in e.value.error  # nothing told about models it may not use
    assert oc(g, "staff").show("internal-llama3:latest").modelfile
    with g.client() as c:
        r = c.post("/api/show", json={"model": "llama3:latest", "verbose": True})
        rid = r.headers["x-guard-request-id"]
        bad = c.post("/api/show", json={"model": "llama3:latest", "system": "x"})
    assert r.status_code == 200 and bad.status_code == 400 and bad.json()["code"] == "unknown_field"
    rec = _record(g, rid)
    assert rec["type"] == "exchange.completed" and rec["operation"] == "models" and rec["model"] == "llama3:latest"


def test_ps_and_version(g: Any) -> None:
    assert {m.model for m in oc(g).ps().models} == {"llama3:latest"}
    assert {m.model for m in oc(g, "staff").ps().models} == {"llama3:latest", "internal-llama3:latest"}
    with g.client() as c:
        v = c.get("/api/version")
    assert v.status_code == 200 and v.json() == {"version": "0.12.3"}
    _record(g, v.headers["x-guard-request-id"])


def test_catalogue_needs_the_models_action(guard_factory: Any, tmp_path: Any) -> None:
    from guard.demo.stack import ROOT

    rules = tmp_path / "policy.csv"
    rules.write_text((ROOT / "policies/policy.csv").read_text() + "\np, access, deny, models, -, 'apps' in r.sub.ou\n")
    g2 = guard_factory(policy={"model": str(ROOT / "policies/model.conf"), "rules": [str(rules)]})
    for call in (lambda c: c.list(), lambda c: c.ps(), lambda c: c.show("llama3:latest")):
        with pytest.raises(ollama.ResponseError) as e:
            call(oc(g2))
        assert e.value.status_code == 403 and isinstance(e.value.error, str)
