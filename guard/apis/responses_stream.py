"""OpenAI Responses streams as guard.relay reads them: which events carry model text, and how the events that
repeat it are made to carry what the screens released.

Text that streams as deltas is a channel of its own, with the same hold-back as any answer text: output
text and refusals (per content part), reasoning summaries (per summary part), reasoning text, function-call
arguments, and a ``*.delta`` event of a kind no reference lists yet (``response.audio.delta`` is sound, not
text). The ``*.done`` events, ``response.output_item.done`` and ``response.completed`` repeat whole texts:
``finalize`` puts there what was released on that channel (nothing, for text no delta carried), after the
channel is flushed (every ``*.done`` event flushes its output item's channels first). Every other string of
an event (an annotation, an output item of another type, a ``*.done`` of a kind no reference lists) is
screened whole (``stream_strings``). Opaque fields the client sends back and the upstream checks
(``encrypted_content``, ``signature``...) pass unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from guard.apis import set_path
from guard.apis.answer import OPAQUE, STRUCTURAL, other_strings
from guard.apis.values import _dict, _list

# delta event -> (channel kind, the event's part index field)
_CHANNELS = {
    "response.output_text.delta": ("content", "content_index"),
    "response.refusal.delta": ("refusal", "content_index"),
    "response.reasoning_summary_text.delta": ("summary", "summary_index"),
    "response.reasoning_text.delta": ("reasoning", "content_index"),
}
_KIND_DELTA = {kind: t for t, (kind, _) in _CHANNELS.items()}
_REPEATS = {  # .done event -> (channel kind, index field (none: one per item), the field repeating the text)
    "response.output_text.done": ("content", "content_index", "text"),
    "response.refusal.done": ("refusal", "content_index", "refusal"),
    "response.reasoning_summary_text.done": ("summary", "summary_index", "text"),
    "response.reasoning_text.done": ("reasoning", "content_index", "text"),
    "response.function_call_arguments.done": ("tool", None, "arguments"),
}
_PARTS = {  # events whose ``part`` repeats a channel's text: the part's text field by part type
    "response.content_part.added": "content_index",
    "response.content_part.done": "content_index",
    "response.reasoning_summary_part.added": "summary_index",
    "response.reasoning_summary_part.done": "summary_index",
}
_NOT_TEXT = frozenset({"response.audio.delta"})  # base64 sound
_DELTA_KEYS = frozenset(
    {
        "type",
        "delta",
        "item_id",
        "output_index",
        "content_index",
        "summary_index",
        "sequence_number",
        "logprobs",
        "obfuscation",
    }
)
# and the ids and states of Responses events and items
SKIP = STRUCTURAL | OPAQUE | {"item_id", "status", "call_id"}


def _index(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _part_key(oi: int, part: dict[str, Any], idx: int, summary: bool) -> tuple[tuple, str] | None:
    """The channel a content or summary part's text came through, and the part's field that holds it."""
    if summary:
        return (oi, "summary", idx), "text"
    if part.get("type") == "refusal" or "refusal" in part:
        return (oi, "refusal", idx), "refusal"
    if "text" in part:
        return (oi, "content", idx), "text"
    return None


def chunk_channels(operation: str, chunk: dict[str, Any]) -> Iterator[tuple[tuple, tuple, str]]:
    t = chunk.get("type")
    delta = chunk.get("delta")
    if not isinstance(delta, str) or not isinstance(t, str):
        return
    oi = _index(chunk.get("output_index"))
    if t == "response.function_call_arguments.delta":
        yield (oi, "tool"), ("delta",), delta
    elif t in _CHANNELS:
        kind, field = _CHANNELS[t]
        yield (oi, kind, _index(chunk.get(field))), ("delta",), delta
    elif t.endswith(".delta") and t not in _NOT_TEXT:  # a text delta of a kind no reference lists yet
        yield (oi, "other", t, _index(chunk.get("content_index"))), ("delta",), delta


def chunk_finished(chunk: dict[str, Any]) -> list[Any]:
    """Output items whose text is complete: held-back text is flushed before this event."""
    t = chunk.get("type")
    if t in ("response.completed", "response.incomplete", "response.failed"):
        return list(range(len(_list(_dict(chunk.get("response")).get("output")))))
    if isinstance(t, str) and t.endswith(".done"):
        return [_index(chunk.get("output_index"))]
    return []


def _item_texts(item: dict[str, Any], oi: int, base: tuple) -> Iterator[tuple[tuple, tuple]]:
    """(path, channel key) of each text an output item repeats."""
    t = item.get("type")
    if t == "message":
        for ci, p in enumerate(_list(item.get("content"))):
            got = _part_key(oi, p, ci, False) if isinstance(p, dict) else None
            if got is not None:
                yield (*base, "content", ci, got[1]), got[0]
    elif t == "function_call" and "arguments" in item:
        yield (*base, "arguments"), (oi, "tool")
    elif t == "reasoning":
        for field, kind in (("summary", "summary"), ("content", "reasoning")):
            for i, p in enumerate(_list(item.get(field))):
                if isinstance(p, dict) and "text" in p:
                    yield (*base, field, i, "text"), (oi, kind, i)


def _repeated(chunk: dict[str, Any]) -> Iterator[tuple[tuple, tuple]]:
    """(path, channel key) of each text an event repeats whole: ``finalize`` fills them from the channels."""
    t = chunk.get("type")
    oi = _index(chunk.get("output_index"))
    if t in _REPEATS:
        kind, field, text = _REPEATS[t]
        yield (text,), ((oi, kind) if field is None else (oi, kind, _index(chunk.get(field))))
    elif t in _PARTS and isinstance(chunk.get("part"), dict):
        got = _part_key(oi, chunk["part"], _index(chunk.get(_PARTS[t])), t.startswith("response.reasoning_summary"))
        if got is not None:
            yield ("part", got[1]), got[0]
    elif t in ("response.output_item.done", "response.output_item.added") and isinstance(chunk.get("item"), dict):
        yield from _item_texts(chunk["item"], oi, ("item",))
    elif str(t).startswith("response.") and isinstance(chunk.get("response"), dict):
        for i, item in enumerate(_list(chunk["response"].get("output"))):
            if isinstance(item, dict):
                yield from _item_texts(item, i, ("response", "output", i))


def finalize(chunk: dict[str, Any], released: dict[tuple, str]) -> None:
    """Events that repeat a whole text carry what the stream screens released on that channel (the client
    never gets text that no screen saw)."""
    for path, key in list(_repeated(chunk)):
        set_path(chunk, path, released.get(key, ""))


def stream_strings(
    operation: str, chunk: dict[str, Any], known: frozenset[tuple]
) -> tuple[list[tuple[tuple, tuple, str]], list[tuple[tuple, str]]]:
    """Every string of an event that neither a channel carries nor ``finalize`` fills: screened whole."""
    filled = frozenset(known | {path for path, _ in _repeated(chunk)})
    whole: list[tuple[tuple, str]] = []
    for key, value in chunk.items():
        if key in ("delta", "sequence_number") or key in SKIP:
            continue
        if key == "response" and isinstance(value, dict):  # only the output: the rest echoes the request
            whole += other_strings(value.get("output"), ("response", "output"), filled, SKIP)
        else:
            whole += other_strings(value, (key,), filled, SKIP)
    return [], whole


def held_only(operation: str, chunk: dict[str, Any]) -> bool:
    """A delta event whose text the screens hold back entirely is not sent (its sequence number is skipped;
    the SDK orders by arrival); every other event always is."""
    t = chunk.get("type")
    return (
        isinstance(t, str)
        and t.endswith(".delta")
        and t not in _NOT_TEXT
        and chunk.get("delta") == ""
        and not set(chunk) - _DELTA_KEYS
        and not chunk.get("logprobs")
    )


def flush(operation: str, like: dict[str, Any] | None, model: str, key: tuple, text: str) -> dict[str, Any]:
    """The delta event that carries held-back text of channel ``key`` out."""
    like = like or {}
    base = {
        "item_id": like.get("item_id", ""),
        "output_index": key[0],
        "sequence_number": like.get("sequence_number", 0),
        "delta": text,
    }
    if key[1] == "tool":
        return {"type": "response.function_call_arguments.delta", **base}
    if key[1] == "other":
        return {"type": key[2], "content_index": key[3], **base}
    field = "summary_index" if key[1] == "summary" else "content_index"
    return {"type": _KIND_DELTA[key[1]], field: key[2], **base}


def drop_unscreenable(obj: dict[str, Any]) -> bool:
    """Token log probabilities (``include: ["message.output_text.logprobs"]``) spell the answer token by token,
    past the screens: emptied in delta and done events, content parts, output items and whole responses.
    True if any held something."""
    dropped = False

    def clear(o: dict[str, Any]) -> None:
        nonlocal dropped
        if o.get("logprobs"):
            dropped = True
        if "logprobs" in o:
            o["logprobs"] = []

    def item(it: Any) -> None:
        for part in _list(_dict(it).get("content")):
            if isinstance(part, dict):
                clear(part)

    clear(obj)
    if isinstance(obj.get("part"), dict):
        clear(obj["part"])
    if isinstance(obj.get("item"), dict):
        item(obj["item"])
    for it in _list(obj.get("output")):
        item(it)
    if isinstance(obj.get("response"), dict):
        for it in _list(obj["response"].get("output")):
            item(it)
    return dropped
