"""Clients of one wire API on an upstream that speaks another: which pairs work (``mode``), and the request,
answer and stream translation each pair uses. Anthropic Messages clients on OpenAI-compatible upstreams:
guard.apis.translate_messages; Responses clients on Chat-Completions-only upstreams:
guard.apis.translate_responses; Chat Completions clients on Messages upstreams: guard.apis.translate_anthropic;
Ollama chat clients on Messages upstreams: guard.apis.translate_ollama.

What maps and what is refused is listed in docs/wire-apis.md; ``check`` refuses (400 ``untranslatable``)
before any screen runs, so a request is never sent with part of it silently lost, except the parts listed as
dropped there (prompt-cache hints; earlier turns' thinking, which an OpenAI-compatible model cannot take).
"""

from __future__ import annotations

import json
from typing import Any

from guard.apis import translate_anthropic, translate_anthropic_stream, translate_ollama
from guard.apis.openai import _dict
from guard.apis.translate_messages import ChatStream, check, error_from_chat, from_chat, to_chat
from guard.errors import GuardError, bad_request

# Client API -> upstream APIs that take it as it is.
SERVES = {
    "openai": ("openai", "azure-openai"),
    "ollama": ("ollama",),
    "anthropic": ("anthropic",),
    "responses": ("openai",),
}
CHAT_UPSTREAMS = ("openai", "azure-openai")

TO_MESSAGES = "chat-messages"  # Chat Completions clients on a Messages upstream (guard.apis.translate_anthropic)
OLLAMA_TO_MESSAGES = "ollama-messages"  # Ollama /api/chat clients on a Messages upstream (.translate_ollama)


def mode(client_api: str, up: Any, operation: str = "chat") -> str | None:
    """How a client's API reaches upstream ``up`` (a config Upstream): "" as it is, "messages" / "responses"
    translated to Chat Completions, "chat-messages" Chat Completions translated to Messages, None not at all."""
    if operation == "chat" and up.api == "anthropic" and client_api in ("openai", "ollama"):
        return TO_MESSAGES if client_api == "openai" else OLLAMA_TO_MESSAGES
    if client_api in ("anthropic", "responses") and up.api in CHAT_UPSTREAMS:
        if client_api == "responses" and up.api == "openai" and up.responses == "native":
            return ""
        return "messages" if client_api == "anthropic" else "responses"
    return "" if up.api in SERVES.get(client_api, ()) else None


def mismatch(client_api: str, up: Any, model: str, operation: str = "chat") -> GuardError | None:
    """The error for a route whose upstream neither speaks the client's API nor has a translation."""
    if mode(client_api, up, operation) is not None:
        return None
    hint = {"ollama": "the Ollama API", "anthropic": "the Anthropic Messages API (/v1/messages)"}.get(
        up.api, "the OpenAI API"
    )
    return bad_request(
        f"model {model!r} is served by an upstream that speaks {hint}; use that API for it", "api_mismatch"
    )


def check_for(kind: str, body: dict[str, Any]) -> None:
    """Refuse what cannot be translated (``kind`` from ``mode``), before any screen runs."""
    if kind == "messages":
        check(body)
    elif kind == TO_MESSAGES:
        translate_anthropic.check(body)
    elif kind == OLLAMA_TO_MESSAGES:
        translate_ollama.check(body)
    else:
        from guard.apis import translate_responses

        translate_responses.check(body)


def request(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The judged request in the upstream's API (Chat Completions; Messages for ``chat-messages``)."""
    if kind == "messages":
        return to_chat(body)
    if kind == TO_MESSAGES:
        return translate_anthropic.to_messages(body)
    if kind == OLLAMA_TO_MESSAGES:
        return translate_ollama.to_messages(body)
    from guard.apis import translate_responses

    return translate_responses.to_chat(body)


def whole(kind: str, status: int, data: bytes, model: str) -> bytes:
    """A Chat Completions upstream's whole answer or error as the client's API has it (a body that is not a
    JSON object is left for the caller to refuse)."""
    if kind == TO_MESSAGES:
        return translate_anthropic.whole(status, data, model)
    if kind == OLLAMA_TO_MESSAGES:
        return translate_ollama.whole(status, data, model)
    if status != 200:
        return error_from_chat(status, data) if kind == "messages" else data
    try:
        chat = json.loads(data)
        if not isinstance(chat, dict):
            return data
    except (ValueError, RecursionError):
        return data
    if kind == "messages":
        return json.dumps(from_chat(chat, model)).encode()
    from guard.apis import translate_responses

    return json.dumps(translate_responses.from_chat(chat, model)).encode()


def upstream_path(kind: str, client_path: str) -> str:
    """The upstream path for a translated request (the client's own path when ``kind`` is "")."""
    if kind in (TO_MESSAGES, OLLAMA_TO_MESSAGES):
        return translate_anthropic.PATH
    return "/v1/chat/completions" if kind else client_path


class Stream:
    """An upstream response whose Chat Completions stream is read as the client's API's events."""

    def __init__(self, kind: str, resp: Any, model: str, body: dict[str, Any] | None = None) -> None:
        from guard.apis import translate_responses

        self._resp = resp
        self._tr: Any
        if kind == TO_MESSAGES:  # the client's stream_options.include_usage decides the usage chunk
            usage = _dict(_dict(body).get("stream_options")).get("include_usage") is True
            self._tr = translate_anthropic_stream.MessagesStream(model, usage)
        elif kind == OLLAMA_TO_MESSAGES:
            self._tr = translate_ollama.OllamaStream(model)
        else:
            self._tr = ChatStream(model) if kind == "messages" else translate_responses.ChatStream(model)
        self._done = False
        self.headers = resp.headers

    async def next_chunk(self) -> bytes | None:
        while not self._done:
            data = await self._resp.next_chunk()
            if data is None:
                self._done = True
                return self._tr.end() or None
            out = self._tr.feed(data)
            if out:
                return out
        return None
