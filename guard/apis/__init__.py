"""Wire APIs: which (method, path) is which API and operation. One module per API does the parsing."""

from __future__ import annotations

import json
from typing import Any

# (method, path) -> (api, operation)
ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/v1/chat/completions"): ("openai", "chat"),
    ("POST", "/v1/completions"): ("openai", "completion"),
    ("POST", "/v1/embeddings"): ("openai", "embeddings"),
    ("GET", "/v1/models"): ("openai", "models"),
    ("POST", "/api/chat"): ("ollama", "chat"),
    ("POST", "/api/generate"): ("ollama", "completion"),
    ("POST", "/api/embed"): ("ollama", "embeddings"),
    ("GET", "/api/tags"): ("ollama", "models"),  # the catalogue paths: guard.stages.catalog
    ("POST", "/api/show"): ("ollama", "models"),
    ("GET", "/api/ps"): ("ollama", "models"),
    ("GET", "/api/version"): ("ollama", "models"),
    ("POST", "/v1/messages"): ("anthropic", "chat"),
    ("POST", "/v1/responses"): ("responses", "chat"),  # OpenAI Responses: its own wire API, the chat action
}


def listing_api(api: str, headers: list[tuple[bytes, bytes]]) -> str:
    """``GET /v1/models`` is both OpenAI's and Anthropic's: a client that sends ``anthropic-version`` (the
    ``anthropic`` SDK's ``models.list()``) gets Anthropic's listing and error shape."""
    if api == "openai" and any(k == b"anthropic-version" for k, _ in headers):
        return "anthropic"
    return api


def api_of_path(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> str:
    """The API whose error shape a request Guard does not serve gets: Ollama's under /api/, Anthropic's for a
    client that sends ``anthropic-version``, else OpenAI's ("")."""
    if path.startswith("/api/"):
        return "ollama"
    return "anthropic" if headers and any(k == b"anthropic-version" for k, _ in headers) else ""


JSON_MARK = "__json__"  # a path's last element: its text stands for a JSON value (a schema, tool input)


def set_text(body: object, path: tuple, text: str) -> None:
    """Write a screened ``text`` back at ``path``; at a path ending ``JSON_MARK`` the value it stands for,
    parsed (ValueError: a rewrite left it no JSON, and it must not go out unjudged)."""
    if path[-1:] == (JSON_MARK,):
        set_path(body, path[:-1], json.loads(text))
    else:
        set_path(body, path, text)


def set_path(body: object, path: tuple, value: Any) -> None:
    """Write ``value`` at ``path`` (keys and indexes) inside a parsed JSON body."""
    target = body
    for p in path[:-1]:
        target = target[p]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
