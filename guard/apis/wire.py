"""The wire API modules by name: what guard.stages and guard.relay ask instead of branching on the API.

Each module (guard.apis.openai, .ollama, .anthropic, .responses) offers the same functions: ``validate``,
``prompt_segments``, ``unscreened``, ``response_segments``, ``usage``, ``finish_reasons``, ``filter_whole``,
``error_body``, ``stream_error``, ``drop_unscreenable`` and, for streams, ``split``, ``payload``, ``is_end``,
``chunk_channels``, ``stream_strings``, ``held_only``, ``chunk_finished``, ``flush``, ``encode``,
``stop_bytes``, ``SEP``, ``END``, ``STREAM_MEDIA_TYPE``; for the audit recorder ``prompt_text``, and for
guard.upstream_errors ``upstream_error_body``, where the API lists models (guard.stages.models)
``model_list``. An upstream's API (``upstreams.<name>.api``) names how its
request target and credentials are written: ``upstream_target``. For quotas (guard.quota):
``completion_limit`` (the answer's token limit a request sets), ``ask_stream_usage`` (ask the upstream for a
stream's usage where the API needs asking) and ``usage_only`` (the chunk that answers that ask, taken out
again when the client did not ask itself).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from guard.apis import anthropic, ollama, openai, responses

WIRE: dict[str, ModuleType] = {"openai": openai, "ollama": ollama, "anthropic": anthropic, "responses": responses}


def module(api: str) -> ModuleType:
    """The module for a client's wire API; OpenAI's for a request not yet routed to one."""
    return WIRE.get(api, openai)


# upstreams.<name>.api -> (its URL's path, request path, model, api_version, key) -> (target, header lines)
UPSTREAM: dict[str, Callable[[str, str, str, str | None, str], tuple[str, list[bytes]]]] = {
    "openai": openai.upstream_target,
    "azure-openai": openai.azure_target,
    "ollama": ollama.upstream_target,
    "anthropic": anthropic.upstream_target,
}


def upstream_target(api: str) -> Callable[[str, str, str, str | None, str], tuple[str, list[bytes]]]:
    """How requests to an upstream speaking ``api`` are addressed and authenticated (OpenAI's by default)."""
    return UPSTREAM.get(api, openai.upstream_target)
