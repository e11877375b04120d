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
    ("GET", "/api/tags"): ("ollama", "models"),
    ("POST", "/v1/messages"): ("anthropic", "chat"),
    ("POST", "/v1/responses"): ("responses", "chat"),  # OpenAI Responses: its own wire API, the chat action
}


def set_path(body: object, path: tuple, value: str) -> None:
    """Write ``value`` at ``path`` (keys and indexes) inside a parsed JSON body."""
    target = body
    for p in path[:-1]:
        target = target[p]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
