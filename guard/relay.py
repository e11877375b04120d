"""Relay: moves a streamed answer (SSE or NDJSON) to the client through per-channel stream screens.

Each piece of streamed text belongs to a channel (choice index + content or tool-call arguments). A channel
has its own chain of StreamScreens; what a chain holds back is released in later chunks or flushed, in a
synthetic chunk, before the choice's finish chunk or the end of the stream.

The client sees the upstream's chunking: a chunk whose text is all held back is not sent at all (rather
than as an empty delta) unless it carries something else the client needs (a role, a tool call's id or
name, a finish reason, usage, a block start or stop): each wire module's ``held_only`` says which, so the
relay never branches on the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from guard.apis import JSON_MARK, set_path, set_text
from guard.apis.wire import module
from guard.screens.base import StreamScreen, Verdict
from guard.screens.edits import StreamGroup


class UpstreamStreamError(Exception):
    """The upstream sent something that is not a valid stream chunk."""


class StreamEventTooLarge(UpstreamStreamError):
    """One stream event (SSE event or NDJSON line) grew past the relay's limit without ending."""


class UpstreamReportedError(UpstreamStreamError):
    """The upstream put an error object into the stream (``data: {"error": ...}``, Ollama's ``{"error": ...}``
    line). Its text is not relayed: it is unscreened model-server text (it may quote the prompt or a key)."""


EVENT_CAP = 1024 * 1024  # one event of a screened stream: a token chunk is a few hundred bytes


def _not_json() -> Verdict:
    return Verdict(
        "rewrite",
        "response",
        status="error",
        action="block",
        blocked=True,
        code="rewrite_failed",
        message="a screen's rewrite of tool-call arguments is no longer JSON; the answer was stopped",
    )


class _Chain:
    """One channel's stream screens. The leading screens that judge the text as written and report edits
    (the denylist, PII: ``judge``) run as one group (guard.screens.edits.StreamGroup): each reads the text
    as the model wrote it, their edits are merged, and the group releases the text every one of them has
    decided, so what it holds is what the screen holding most holds alone; tool-call arguments (JSON text)
    too, their screens reporting edits in offsets of the text as written. The other screens (Llama Guard)
    read the group's output in turn. A stop may still carry text judged safe before it (``release``):
    that text goes through the remaining screens and out before the stream ends."""

    def __init__(self, screens: list[StreamScreen]) -> None:
        self.screens = screens
        k = 0
        while k < len(screens) and _judges(screens[k]):
            k += 1
        self.group = StreamGroup(screens[:k]) if k else None
        self.rest = screens[k:]
        self.done = False

    async def feed(self, text: str) -> tuple[str, Verdict | None]:
        if self.group is not None:
            step = await self.group.feed(text)
            if step.stop is not None:
                return await self._drain(0, step.release), step.stop
            text = step.release
        for i, s in enumerate(self.rest):
            if not text:
                return "", None
            step = await s.feed(text)
            if step.stop is not None:
                return await self._drain(i + 1, step.release), step.stop
            text = step.release
        return text, None

    async def finish(self) -> tuple[str, Verdict | None]:
        self.done = True
        out = ""
        if self.group is not None:
            step = await self.group.finish()
            if step.stop is not None:
                return await self._drain(0, step.release), step.stop
            out = step.release
        for i, s in enumerate(self.rest):
            if out:
                step = await s.feed(out)
                if step.stop is not None:
                    return await self._drain(i + 1, step.release), step.stop
                out = step.release
            step = await s.finish()
            if step.stop is not None:
                return await self._drain(i + 1, out + step.release), step.stop
            out += step.release
        return out, None

    async def _drain(self, start: int, text: str) -> str:
        """Text released by a stopping screen, through the screens after it; whatever they stop at is lost."""
        self.done = True
        for s in self.rest[start:]:
            if not text:
                return ""
            step = await s.feed(text)
            if step.stop is not None:
                return step.release
            fin = await s.finish()
            text = step.release + (fin.release if fin.stop is None else "")
            if fin.stop is not None:
                return text
        return text


def _judges(screen: StreamScreen) -> bool:
    """Whether a stream screen (or its fail-mode wrapper) judges the text as written (``judge``)."""
    fn = getattr(screen, "judges", None)
    return bool(fn()) if callable(fn) else hasattr(screen, "judge")


class Relay:
    """Stateful transformer: ``feed(bytes)`` / ``finish()`` return bytes for the client and a stop verdict.
    ``api`` names the client's wire API; its module (guard.apis.wire) splits, reads and writes the events."""

    def __init__(
        self,
        api: str,
        operation: str,
        model: str,
        open_chain: Callable[[str], list[StreamScreen]],
        max_event_bytes: int = EVENT_CAP,
    ) -> None:
        self.api = api
        self.max_event_bytes = min(max_event_bytes, EVENT_CAP)
        self.wire = module(api)
        self.operation = operation
        self.model = model
        self._open_chain = open_chain
        self._chains: dict[tuple, _Chain] = {}
        self._whole: list[_Chain] = []  # the chains that screened one text carried whole (answer.stream_strings)
        self._buf = bytearray()
        self._like: dict[str, Any] | None = None
        self.usage: dict[str, int] | None = None
        self.finish_reasons: list[str] = []
        self.done_sent = False
        self.strip_usage = False  # drop the usage-only chunk Guard asked for (guard.quota) after noting it
        self._finalize = getattr(self.wire, "finalize", None)  # APIs whose events repeat whole texts
        self.released: dict[tuple, str] = {}  # per channel, the text sent to the client (for ``finalize``)

    def _chain(self, key: tuple) -> _Chain:
        c = self._chains.get(key)
        if c is None:
            c = self._chains[key] = _Chain(self._open_chain("tool_arguments" if key[1] == "tool" else "content"))
        return c

    def verdicts(self) -> list[Verdict]:
        """What every channel's stream screens found (for the audit record)."""
        out = []
        for chain in (*self._chains.values(), *self._whole):
            for s in chain.screens:
                v = getattr(s, "verdict", None)
                v = v() if callable(v) else v
                if isinstance(v, Verdict):
                    out.append(v)
        return out

    def stop_bytes(self) -> bytes:
        return self.wire.stop_bytes(self.operation, self._like, self.model)

    async def feed(self, data: bytes) -> tuple[bytes, Verdict | None]:
        self._buf += data
        out = bytearray()
        wire = self.wire
        for raw in wire.split(self._buf):
            payload = wire.payload(raw)
            if payload is None:
                continue  # SSE comment / keep-alive
            if wire.is_end(payload):
                flushed, stop = await self._flush_all()
                out += flushed
                if stop:
                    return bytes(out), stop
                out += wire.END
                self.done_sent = True
                continue
            try:
                chunk = json.loads(payload)
                if not isinstance(chunk, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than json can parse
                raise UpstreamStreamError(f"unparseable stream chunk: {e}") from None
            emitted, stop = await self._chunk(chunk)
            out += emitted
            if stop:
                return bytes(out), stop
        if len(self._buf) > self.max_event_bytes:  # an event that never ends: refuse before it fills memory
            raise StreamEventTooLarge(f"a stream event over {self.max_event_bytes} bytes")
        return bytes(out), None

    async def _chunk(self, chunk: dict[str, Any]) -> tuple[bytes, Verdict | None]:
        if "error" in chunk:  # no answer chunk has one
            raise UpstreamReportedError("the upstream sent an error in the stream")
        self._note(chunk)
        if self.strip_usage and not chunk.get("choices") and isinstance(chunk.get("usage"), dict):
            return b"", None
        self._like = chunk
        wire = self.wire
        held = False
        wire.drop_unscreenable(chunk)  # logprobs, token ids: cannot be judged
        channels = list(wire.chunk_channels(self.operation, chunk))
        # every other text of the chunk (guard.apis.answer): a channel of its own, or screened whole
        extra, whole = wire.stream_strings(self.operation, chunk, frozenset(p for _, p, _ in channels))
        for path, text in whole:
            parsed = path[-1:] == (JSON_MARK,)  # a JSON value (Ollama's tool-call arguments), as its JSON text
            chain = _Chain(self._open_chain("tool_arguments" if parsed else "content"))
            self._whole.append(chain)
            released, stop = await chain.feed(text)
            if stop is None:
                rest, stop = await chain.finish()
                released += rest
            if stop:
                return b"", stop
            try:
                set_text(chunk, path, released)
            except ValueError:  # the screens keep JSON text JSON; should one not, nothing unjudged goes out
                return b"", _not_json()
        for key, path, text in channels + extra:
            released, stop = await self._chain(key).feed(text)
            if stop:
                return (self._encode(self._flush_chunk(key, released)) if released else b""), stop
            set_path(chunk, path, released)
            held = held or (bool(text) and not released)
            if self._finalize is not None:
                self.released[key] = self.released.get(key, "") + released
        out = bytearray()
        for idx in wire.chunk_finished(chunk):
            for key, chain in list(self._chains.items()):
                if key[0] == idx and not chain.done:
                    text, stop = await chain.finish()
                    if stop:
                        return bytes(out) + (self._encode(self._flush_chunk(key, text)) if text else b""), stop
                    if text:
                        out += self._encode(self._flush_chunk(key, text))
        if self._finalize is not None:
            self._finalize(chunk, self.released)
        if not (held and wire.held_only(self.operation, chunk)):  # nothing but held text: not sent
            out += self._encode(chunk)
        return bytes(out), None

    async def _flush_all(self) -> tuple[bytes, Verdict | None]:
        out = bytearray()
        for key, chain in list(self._chains.items()):
            if chain.done:
                continue
            text, stop = await chain.finish()
            if text:
                out += self._encode(self._flush_chunk(key, text))
            if stop:
                return bytes(out), stop
        return bytes(out), None

    async def finish(self) -> tuple[bytes, Verdict | None]:
        """End of the upstream body: flush what is held back (a stream without [DONE] is ended as-is)."""
        if self._buf.strip():
            data, stop = await self.feed(self.wire.SEP)
            if stop:
                return data, stop
        flushed, stop = await self._flush_all()
        return flushed, stop

    def _flush_chunk(self, key: tuple, text: str) -> dict[str, Any]:
        if self._finalize is not None:
            self.released[key] = self.released.get(key, "") + text
        return self.wire.flush(self.operation, self._like, self.model, key, text)

    def _encode(self, chunk: dict[str, Any]) -> bytes:
        return self.wire.encode(chunk)

    def _note(self, chunk: dict[str, Any]) -> None:
        u = self.wire.usage(chunk)
        if u:
            self.usage = {**self.usage, **u} if self.usage else u
        self.finish_reasons += self.wire.finish_reasons(chunk)


def scan_tail(api: str, tail: bytes) -> tuple[dict[str, int] | None, list[str]]:
    """Usage and finish reasons from the last bytes of an unscreened stream (the fast path parses nothing
    else)."""
    usage, reasons = None, []
    mod = module(api)
    for raw in tail.split(mod.SEP)[-6:]:
        payload = mod.payload(raw.strip())
        if not payload or mod.is_end(payload):
            continue
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):
            continue
        if isinstance(chunk, dict):
            u = mod.usage(chunk)
            if u:
                usage = {**usage, **u} if usage else u
            reasons += mod.finish_reasons(chunk)
    return usage, reasons
