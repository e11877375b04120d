"""Attack: learn the name of a model the policy denies from Guard's model listings, against the running proxy.

The names exist (a staff principal sees them in the same listings: the control that lets each test fail):
``internal-finance`` (an exact route), ``internal-gpt-4o`` (named by the OpenAI upstream's own /v1/models, which
the ``*`` route resolves against) and ``internal-llama3:latest`` (named by the Ollama upstream's /api/tags). An
OU=apps principal, which the shipped policy denies internal-*, tries every listing Guard serves and its variants:
OpenAI's and Anthropic's shape of ``/v1/models``, query parameters, path spellings and methods Guard does not
serve, ``/v1/models/{id}`` (not served: its answer must be the same for a denied, an allowed and an unknown
id, in the client API's error shape), and Ollama's ``/api/tags``, ``/api/ps`` and ``/api/show``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hardening.conftest import events

DENIED = ("internal-finance", "internal-gpt-4o", "internal-llama3:latest")
ANTHROPIC = {"anthropic-version": "2023-06-01", "x-api-key": "client-secret-key"}


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import start_guard

    h = start_guard(
        pki_dir,
        model_server[1],
        tmp_path_factory.mktemp("listing-leak"),
        routes=[
            {"model": "internal-finance", "upstream": "local"},
            {"model": "internal-llama3*", "upstream": "ollama"},
            {"model": "llama3*", "upstream": "ollama"},
            {"model": "*", "upstream": "local"},
        ],
    )
    yield h
    h.stop()


LISTINGS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/v1/models", {}),
    ("GET", "/v1/models", ANTHROPIC),
    ("GET", "/v1/models?limit=1000", {}),
    ("GET", "/v1/models?after_id=internal&limit=1000", ANTHROPIC),
    ("GET", "/v1/models?model=internal-*&owned_by=guard", {}),
    ("GET", "/v1/models/", {}),
    ("GET", "//v1/models", {}),
    ("GET", "/V1/models", {}),
    ("GET", "/v1/models/.", {}),
    ("HEAD", "/v1/models", {}),
    ("POST", "/v1/models", {}),
    ("GET", "/api/tags", {}),
    ("GET", "/api/ps", {}),
    ("GET", "/api/tags?all=true", {}),
]


def _ask(g: Any, who: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    with g.client(who) as c:
        return c.request(method, path, headers=headers)


def test_the_denied_names_exist_and_staff_sees_them(g: Any) -> None:
    seen = " ".join(_ask(g, "staff", m, p, h).text for m, p, h in LISTINGS[:2] + LISTINGS[-3:-1])
    for name in DENIED:
        assert name in seen, f"the control failed: {name} is not listed even for staff"


@pytest.mark.parametrize(("method", "path", "headers"), LISTINGS, ids=[f"{m} {p} {bool(h)}" for m, p, h in LISTINGS])
def test_no_listing_names_a_denied_model(g: Any, method: str, path: str, headers: dict[str, str]) -> None:
    r = _ask(g, "app", method, path, headers)
    assert r.headers.get("x-guard-request-id"), "every answer carries its request id"
    for name in DENIED:
        assert name not in r.text
    assert "internal-" not in r.text
    if r.status_code == 200 and path.startswith("/v1/models") and method == "GET":
        ids = [m["id"] for m in r.json()["data"]]
        assert "gpt-4o-mini" in ids and "internal-finance" not in ids  # the listing itself still works


@pytest.mark.parametrize("headers", [{}, ANTHROPIC], ids=["openai", "anthropic"])
def test_v1_models_by_id_answers_alike_for_denied_allowed_and_unknown_ids(g: Any, headers: dict[str, str]) -> None:
    """No oracle: whatever the id, the same status and error, in the client API's own error shape."""
    answers = []
    for model in (*DENIED, "gpt-4o-mini", "no-such-model-anywhere"):
        r = _ask(g, "app", "GET", f"/v1/models/{model}", headers)
        assert r.headers.get("x-guard-request-id")
        body = r.json()
        if headers:  # Anthropic's shape: {"type": "error", "error": {"type", "message"}}
            assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}
        else:  # OpenAI's: {"error": {"message", "type", "code"}}
            assert set(body["error"]) >= {"message", "type", "code"}
        answers.append((r.status_code, r.text.replace(model, "ID")))
    assert len(set(answers)) == 1, answers
    assert answers[0][0] == 404


def test_api_show_answers_alike_for_a_denied_and_an_unknown_model(g: Any) -> None:
    answers = []
    for model in ("internal-llama3:latest", "internal-nothing:latest"):
        with g.client("app") as c:
            r = c.post("/api/show", json={"model": model})
        answers.append((r.status_code, r.text.replace(model, "ID")))
    assert len(set(answers)) == 1 and answers[0][0] == 404, answers
    with g.client("staff") as c:  # the control: staff is shown the model
        assert c.post("/api/show", json={"model": "internal-llama3:latest"}).status_code == 200


def test_every_listing_request_is_audited(g: Any) -> None:
    rids = [_ask(g, "app", "GET", "/v1/models", h).headers["x-guard-request-id"] for h in ({}, ANTHROPIC)]
    deadline = time.monotonic() + 5
    while True:
        done = {e.get("request_id") for e in events(g.config.audit.dir) if e.get("type") == "exchange.completed"}
        if set(rids) <= done:
            break
        assert time.monotonic() < deadline, f"no audit record for {set(rids) - done}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def no_catch_all(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import start_guard

    h = start_guard(
        pki_dir,
        model_server[1],
        tmp_path_factory.mktemp("probe"),
        routes=[{"model": "internal-finance", "upstream": "local"}, {"model": "gpt-4o-mini", "upstream": "local"}],
    )
    yield h
    h.stop()


CHAT_PATHS = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 16}),
    ("/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
]


@pytest.mark.parametrize(("path", "body"), CHAT_PATHS, ids=[p for p, _ in CHAT_PATHS])
def test_a_request_does_not_tell_a_denied_routed_model_from_an_unrouted_name(
    no_catch_all: Any, path: str, body: dict[str, Any]
) -> None:
    """Probing by asking: without a catch-all route, a routed model the policy denies and a name no route
    knows (both ``internal-*``, which the shipped policy denies OU=apps) get the same answer, so the routing
    table cannot be enumerated by a client the policy keeps out. Controls: staff is served the routed model
    and told the unrouted name is not routed (404), so each half of the comparison can fail (on ``/api/chat``
    the routed model's OpenAI upstream takes no Ollama chat: staff is told so, 400 ``api_mismatch``, an answer
    that would name a routed model if a denied client got it)."""
    headers = ANTHROPIC if path == "/v1/messages" else {}
    answers = []
    for model in ("internal-finance", "internal-no-such-model"):
        with no_catch_all.client("app") as c:
            r = c.post(path, json={"model": model, **body}, headers=headers)
        assert r.headers.get("x-guard-request-id")
        answers.append((r.status_code, r.text.replace(model, "ID")))
    assert len(set(answers)) == 1 and answers[0][0] == 403, answers
    with no_catch_all.client("staff") as c:
        routed = c.post(path, json={"model": "internal-finance", **body}, headers=headers)
        assert routed.status_code == (400 if path == "/api/chat" else 200), routed.text
        assert c.post(path, json={"model": "internal-no-such-model", **body}, headers=headers).status_code == 404
