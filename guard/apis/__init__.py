"""Wire APIs: which (method, path) is which API and operation. One module per API does the parsing."""

from __future__ import annotations

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


def set_path(body: object, path: tuple, value: str) -> None:
    """Write ``value`` at ``path`` (keys and indexes) inside a parsed JSON body."""
    target = body
    for p in path[:-1]:
        target = target[p]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
