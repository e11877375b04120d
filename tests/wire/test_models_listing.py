"""``GET /v1/models`` through the running proxy with the official SDKs (``openai``'s ``client.models.list()``,
``anthropic``'s likewise): exactly the models the caller may use through that API, as ``/api/tags`` does for
Ollama clients (guard.stages.catalog): exact routes by name, wildcard routes resolved against the upstream's
own ``/v1/models`` when it speaks OpenAI (left out otherwise), each name kept only if the policy lets this
principal use it. Two principals of the shipped policy see different lists: OU=apps may not use internal-*,
OU=staff may."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from guard.demo.answers import OPENAI_MODELS
from guard.demo.stack import free_port

ROUTES = [
    {"model": "llama-3-8b", "upstream": "local"},  # exact
    {"model": "internal-finance", "upstream": "local"},  # exact, staff only
    {"model": "claude-3-haiku", "upstream": "anthropic"},  # exact, Chat Completions translated to Messages
    {"model": "claude-*", "upstream": "anthropic"},  # wildcard on an upstream without an OpenAI list
    {"model": "llama3*", "upstream": "ollama"},  # an Ollama upstream: not usable through the OpenAI API
    {"model": "down-*", "upstream": "down"},  # an OpenAI upstream nobody listens on
    {"model": "*", "upstream": "local"},  # wildcard: resolved against the model server's /v1/models
]
APP = ["llama-3-8b", "claude-3-haiku", *(m for m in OPENAI_MODELS if not m.startswith("internal-"))]
STAFF = ["llama-3-8b", "internal-finance", "claude-3-haiku", *OPENAI_MODELS]


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import start_guard

    down = {"url": f"http://127.0.0.1:{free_port()}", "api": "openai", "timeout_s": 5}
    h = start_guard(
        pki_dir, model_server[1], tmp_path_factory.mktemp("models"), upstreams={"down": down}, routes=ROUTES
    )
    yield h
    h.stop()


def _anthropic(g: Any, name: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=g.url,
        api_key="client-secret-key",
        http_client=httpx2.Client(verify=g.ssl_context(name)),
        max_retries=0,
    )


@pytest.mark.parametrize(("who", "expected"), [("app", APP), ("staff", STAFF)])
def test_openai_sdk_lists_exactly_the_models_the_principal_may_use(g: Any, who: str, expected: list[str]) -> None:
    listing = g.openai(who).models.list()
    assert [m.id for m in listing.data] == expected
    assert all(m.object == "model" for m in listing.data)


def test_each_listed_model_answers_and_an_unlisted_one_is_refused(g: Any) -> None:
    client = g.openai("app")
    listed = [m.id for m in client.models.list().data]
    for model in listed:  # every name the listing gives can be used by this principal
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content is not None
    for model in ("internal-finance", "internal-gpt-4o"):  # staff's extra names: not usable by apps
        assert model not in listed
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_anthropic_sdk_lists_the_models_usable_through_messages(g: Any) -> None:
    """Same path, ``anthropic-version`` sent: Anthropic's page shape; OpenAI-compatible upstreams count
    (Messages is translated to Chat Completions), the Ollama upstream does not."""
    for who, expected in (("app", APP), ("staff", STAFF)):
        page = _anthropic(g, who).models.list()
        assert [m.id for m in page.data] == expected
        assert all(m.type == "model" for m in page.data)
        assert page.has_more is False


def test_a_wildcard_route_whose_upstream_list_cannot_be_read_lists_none_of_its_models(g: Any) -> None:
    """``down-*`` goes to an upstream nobody listens on: the listing still answers, without its models."""
    with g.client("staff") as c:
        r = c.get("/v1/models")
    assert r.status_code == 200 and r.headers["x-guard-request-id"]
    assert not any(m["id"].startswith("down-") for m in r.json()["data"])


def test_the_listing_request_upstream_carries_guards_credentials_not_the_clients(g: Any, model_server: Any) -> None:
    server = model_server[0]
    g.openai("app").models.list()
    asked = [q for q in server.requests if q["path"] == "/v1/models"]
    assert asked, "the wildcard route was not resolved against the upstream's list"
    assert "client-secret-key" not in str(asked[-1]["headers"])
