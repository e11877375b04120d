"""The wire API modules by name: what guard.pipeline and guard.relay ask instead of branching on the API.

Each module (guard.apis.openai, .ollama, .anthropic, .responses) offers the same functions: ``validate``,
``prompt_segments``, ``unscreened``, ``response_segments``, ``usage``, ``finish_reasons``, ``filter_whole``,
``error_body``, ``stream_error`` and, for streams, ``split``, ``payload``, ``is_end``, ``chunk_channels``,
``chunk_finished``, ``flush``, ``encode``, ``stop_bytes``, ``SEP``, ``END``, ``STREAM_MEDIA_TYPE``; for
quotas (guard.quota): ``completion_limit`` (the answer's token limit a request sets), ``ask_stream_usage``
(ask the upstream for a stream's usage where the API needs asking) and ``usage_only`` (the chunk that answers
that ask, taken out again when the client did not ask itself).
"""

from __future__ import annotations

from types import ModuleType

from guard.apis import anthropic, ollama, openai, responses

WIRE: dict[str, ModuleType] = {"openai": openai, "ollama": ollama, "anthropic": anthropic, "responses": responses}


def module(api: str) -> ModuleType:
    """The module for a client's wire API; OpenAI's for a request not yet routed to one."""
    return WIRE.get(api, openai)
