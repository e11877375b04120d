"""Anthropic Messages answers as the response screens read them: every text of the content blocks, whole and
streamed.

Text, thinking and tool input stream as deltas, one channel per content block (``text_delta``,
``thinking_delta``, ``input_json_delta``), with the hold-back of any answer text; a block's start may carry
text or thinking too (screened as the start of its channel). Every other text is screened whole: a
tool's input given as an object (a ``tool_use`` or ``server_tool_use`` block, whole, in its
``content_block_start`` or in ``message_start``) as one JSON text of kind ``tool_arguments``, written back
as the object; any other string (citations' ``cited_text`` and titles, blocks of a type no reference lists
yet) on its own. Opaque values the client sends back and the upstream checks (thinking ``signature``,
``redacted_thinking`` data, encrypted search results) pass unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from guard.apis import JSON_MARK
from guard.apis.answer import OPAQUE, STRUCTURAL, json_text, other_strings
from guard.apis.openai import json_segment
from guard.apis.values import _dict, _list
from guard.screens.base import Segment

_Text = tuple[tuple, str]  # (path, text)
SKIP = STRUCTURAL | OPAQUE | {"tool_use_id", "file_id", "media_type", "stop_reason", "stop_sequence"}
_CHANNEL_TEXT = {"text": "text", "thinking": "thinking"}  # block type -> its field that streams
_DELTA_TEXT = ("text", "thinking", "partial_json")


def _index(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _block_texts(
    b: dict[str, Any], base: tuple, named: bool
) -> tuple[list[tuple[tuple, Any]], list[tuple[tuple, str]]]:
    """A block's tool input given as an object (path, value), and its other strings (path, text); ``named``:
    its text or thinking field is read elsewhere (whole answers: as a segment; streams: as a channel)."""
    inputs, known = [], set()
    if isinstance(b.get("input"), (dict, list)):
        inputs.append(((*base, "input"), b["input"]))
        known.add((*base, "input"))
    field = _CHANNEL_TEXT.get(b.get("type"))  # type: ignore[arg-type]
    if named and field is not None:
        known.add((*base, field))
    return inputs, list(other_strings(b, base, frozenset(known), SKIP))


def block_segments(blocks: Any, base: tuple) -> list[Segment]:
    """Every text of a whole answer's content blocks: text and thinking as content, tool input (an object)
    as one JSON text of kind ``tool_arguments`` (written back parsed), every other string as content."""
    segs: list[Segment] = []
    for j, b in enumerate(_list(blocks)):
        b = _dict(b)
        field = _CHANNEL_TEXT.get(b.get("type"))  # type: ignore[arg-type]
        if field is not None and isinstance(b.get(field), str):
            segs.append(Segment(b[field], "assistant", "content", (*base, j, field)))
        inputs, others = _block_texts(b, (*base, j), True)
        segs += [json_segment(v, "assistant", "tool_arguments", p) for p, v in inputs]
        segs += [Segment(t, "assistant", "content", p) for p, t in others]
    return segs


def chunk_channels(operation: str, chunk: dict[str, Any]) -> Iterator[tuple[tuple, tuple, str]]:
    """(channel key, path, text): text_delta, thinking_delta and input_json_delta, one channel per content
    block, and the text or thinking a block's start carries (signature and citation deltas carry no model
    text of a channel: their strings are screened whole)."""
    t = chunk.get("type")
    idx = _index(chunk.get("index"))
    if t == "content_block_start":  # a start block normally carries no text; if it does, it is screened too
        b = _dict(chunk.get("content_block"))
        field = _CHANNEL_TEXT.get(b.get("type"))  # type: ignore[arg-type]
        if field is not None and isinstance(b.get(field), str) and b[field]:
            yield (idx, "content" if field == "text" else "thinking"), ("content_block", field), b[field]
        return
    if t != "content_block_delta":
        return
    d = _dict(chunk.get("delta"))
    if d.get("type") == "text_delta" and isinstance(d.get("text"), str):
        yield (idx, "content"), ("delta", "text"), d["text"]
    elif d.get("type") == "thinking_delta" and isinstance(d.get("thinking"), str):
        yield (idx, "thinking"), ("delta", "thinking"), d["thinking"]
    elif d.get("type") == "input_json_delta" and isinstance(d.get("partial_json"), str):
        yield (idx, "tool"), ("delta", "partial_json"), d["partial_json"]


def stream_strings(
    operation: str, chunk: dict[str, Any], known: frozenset[tuple]
) -> tuple[list[tuple[tuple, tuple, str]], list[tuple[tuple, str]]]:
    """What an event carries whole: a block's start (beside the text of its channel), the content of a
    ``message_start`` (normally empty), a delta that is no channel's (a citation)."""
    t = chunk.get("type")
    whole: list[tuple[tuple, str]] = []
    blocks: list[tuple[tuple, dict[str, Any], bool]] = []
    if t == "content_block_start" and isinstance(chunk.get("content_block"), dict):
        blocks.append((("content_block",), chunk["content_block"], True))
    elif t == "message_start" and isinstance(chunk.get("message"), dict):
        content = _list(chunk["message"].get("content"))
        blocks += [(("message", "content", j), b, False) for j, b in enumerate(content) if isinstance(b, dict)]
    elif t == "content_block_delta" and isinstance(chunk.get("delta"), dict):
        whole += other_strings(chunk["delta"], ("delta",), known | {("delta", k) for k in _DELTA_TEXT}, SKIP)
    for base, b, named in blocks:
        inputs, others = _block_texts(b, base, named)
        whole += [((*p, JSON_MARK), json_text(v)) for p, v in inputs if v]
        whole += others
    return [], whole


def held_only(operation: str, chunk: dict[str, Any]) -> bool:
    """A ``content_block_delta`` whose text (text, thinking or tool input JSON) the screens hold back entirely
    and that carries nothing else is not sent; every other event (block starts and stops, message deltas,
    signatures) always is, so the SDK's event sequence stays whole."""
    if chunk.get("type") != "content_block_delta" or set(chunk) - {"type", "index", "delta"}:
        return False
    d = chunk.get("delta")
    if not isinstance(d, dict) or set(d) - {"type", *_DELTA_TEXT}:
        return False
    return all(d.get(k) in ("", None) for k in _DELTA_TEXT)


def chunk_finished(chunk: dict[str, Any]) -> list[Any]:
    """Block indexes this event closes (held-back text is flushed before it)."""
    if chunk.get("type") == "content_block_stop":
        return [chunk.get("index", 0)]
    return []


def drop_unscreenable(obj: dict[str, Any]) -> bool:
    """Messages events carry no token-level detail: nothing to remove."""
    return False


def flush_chunk(operation: str, like: dict[str, Any] | None, model: str, key: tuple, text: str) -> dict[str, Any]:
    delta = (
        {"type": "input_json_delta", "partial_json": text}
        if key[1] == "tool"
        else {"type": "thinking_delta", "thinking": text}
        if key[1] == "thinking"
        else {"type": "text_delta", "text": text}
    )
    return {"type": "content_block_delta", "index": key[0], "delta": delta}
