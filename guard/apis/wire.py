"""The wire API modules by name: what guard.pipeline and guard.relay ask instead of branching on the API.

Each module (guard.apis.openai, .ollama, .anthropic, .responses) offers the same functions: ``validate``,
``prompt_segments``, ``unscreened``, ``response_segments``, ``usage``, ``finish_reasons``, ``filter_whole``,
``error_body``, ``stream_error``, ``drop_unscreenable`` and, for streams, ``split``, ``payload``, ``is_end``,
``chunk_channels``, ``stream_strings``, ``held_only``, ``chunk_finished``, ``flush``, ``encode``,
``stop_bytes``, ``SEP``, ``END``, ``STREAM_MEDIA_TYPE``.
"""

from __future__ import annotations

from types import ModuleType

from guard.apis import anthropic, ollama, openai, responses

WIRE: dict[str, ModuleType] = {"openai": openai, "ollama": ollama, "anthropic": anthropic, "responses": responses}


def module(api: str) -> ModuleType:
    """The module for a client's wire API; OpenAI's for a request not yet routed to one."""
    return WIRE.get(api, openai)
