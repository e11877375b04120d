"""Chat Completions stream chunks read for an API that translates them (guard.apis.translate and
translate_responses): the one SSE loop both share."""

from __future__ import annotations

import json
from typing import Any

from guard.apis.openai import event_data, split_events


def feed_chat_chunks(stream: Any, data: bytes) -> bytes:
    """Chat Completions SSE bytes from the upstream, through ``stream`` (a ChatStream of a translating API):
    each complete chunk object goes to ``stream._chunk``, ``[DONE]`` to ``stream.end()``; what they return, in
    order. Raises guard.relay.UpstreamStreamError for an event that is not a JSON object."""
    from guard.relay import UpstreamStreamError

    stream._buf += data
    out = bytearray()
    for raw in split_events(stream._buf):
        payload = event_data(raw)
        if payload is None or stream._ended:
            continue
        if payload.strip() == b"[DONE]":
            out += stream.end()
            continue
        try:
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError) as e:
            raise UpstreamStreamError(f"unparseable stream chunk: {e}") from None
        out += stream._chunk(chunk)
    return bytes(out)
