"""The stream relay: per-channel screen chains, hold-back released later, stops that still carry safe text."""

from __future__ import annotations

import asyncio
import json

from guard.relay import Relay
from guard.screens.base import StreamStep, Verdict


class Holder:
    """Holds everything until finish (a long hold-back); stops at 'BAD', releasing what came before."""

    def __init__(self) -> None:
        self.buf = ""

    async def feed(self, text: str) -> StreamStep:
        self.buf += text
        if "BAD" in self.buf:
            safe = self.buf.split("BAD")[0]
            self.buf = ""
            return StreamStep(release=safe, stop=Verdict("safety", "response", blocked=True, code="unsafe_content"))
        return StreamStep()

    async def finish(self) -> StreamStep:
        out, self.buf = self.buf, ""
        return StreamStep(release=out)


class Upper:
    async def feed(self, text: str) -> StreamStep:
        return StreamStep(release=text.upper())

    async def finish(self) -> StreamStep:
        return StreamStep()


def sse(*words: str, done: bool = True) -> bytes:
    out = b""
    for w in words:
        out += (
            b"data: "
            + json.dumps(
                {"id": "x", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
            ).encode()
            + b"\n\n"
        )
    if done:
        out += (
            b"data: "
            + json.dumps({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode()
            + b"\n\n"
        )
        out += b"data: [DONE]\n\n"
    return out


def text_of(data: bytes) -> str:
    out = ""
    for ev in data.split(b"\n\n"):
        if ev.startswith(b"data: {"):
            ch = json.loads(ev[6:])
            out += ch["choices"][0].get("delta", {}).get("content") or ""
    return out


def run(relay: Relay, data: bytes) -> tuple[bytes, Verdict | None]:
    async def go() -> tuple[bytes, Verdict | None]:
        out, stop = await relay.feed(data)
        if stop is None:
            more, stop = await relay.finish()
            out += more
        return out, stop

    return asyncio.run(go())


def test_held_back_text_is_flushed_before_the_finish_chunk():
    out, stop = run(Relay("openai", "chat", "m", lambda kind: [Holder(), Upper()]), sse("one ", "two ", "three"))
    assert stop is None and text_of(out) == "ONE TWO THREE"
    assert out.endswith(b"data: [DONE]\n\n")


def test_a_stop_still_sends_the_safe_text_judged_with_it_through_later_screens():
    relay = Relay("openai", "chat", "m", lambda kind: [Holder(), Upper()])
    out, stop = run(relay, sse("fine ", "words ", "BAD", "hidden", done=False))
    assert stop is not None and stop.code == "unsafe_content"
    assert text_of(out) == "FINE WORDS "  # released, and transformed by the screen after the stopping one
    assert "hidden" not in out.decode() and "BAD" not in out.decode()
    end = relay.stop_bytes()
    assert b'"finish_reason":"content_filter"' in end and end.endswith(b"data: [DONE]\n\n")


def test_ollama_ndjson_channels_and_stop_line():
    relay = Relay("ollama", "chat", "m", lambda kind: [Upper()])
    lines = b"".join(
        json.dumps({"model": "m", "message": {"role": "assistant", "content": w}, "done": False}).encode() + b"\n"
        for w in ("a", "b")
    )
    out, stop = run(
        relay, lines + json.dumps({"model": "m", "message": {"content": ""}, "done": True}).encode() + b"\n"
    )
    assert stop is None
    assert "".join(json.loads(x)["message"]["content"] for x in out.splitlines()) == "AB"
    assert json.loads(relay.stop_bytes())["done_reason"] == "content_filter"


class LastWordHolder:
    """Holds the unfinished last word, as the partial-match screens do for prose."""

    def __init__(self) -> None:
        self.buf = ""

    async def feed(self, text: str) -> StreamStep:
        self.buf += text
        cut = self.buf.rfind(" ") + 1
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return StreamStep(release=out)

    async def finish(self) -> StreamStep:
        out, self.buf = self.buf, ""
        return StreamStep(release=out)


def events(data: bytes) -> list[dict]:
    return [json.loads(ev[6:]) for ev in data.split(b"\n\n") if ev.startswith(b"data: {")]


def test_held_chunks_are_not_sent_as_empty_deltas_and_chunking_follows_the_upstream():
    role = (
        b"data: "
        + json.dumps(
            {
                "id": "x",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}],
            }
        ).encode()
        + b"\n\n"
    )
    relay = Relay("openai", "chat", "m", lambda kind: [LastWordHolder()])
    out, stop = run(relay, role + sse("lo ", "wor", "ld", " and", " more"))
    evs = events(out)
    deltas = [e["choices"][0]["delta"] for e in evs]
    assert stop is None and text_of(out) == "Hello world and more"
    assert deltas[0] == {"role": "assistant", "content": ""}  # the role chunk still goes out
    contents = [d.get("content") for d in deltas[1:]]
    assert "" not in contents and None not in contents[:-1]  # no empty content deltas while text is held
    assert contents[:-1] == ["Hello ", "world ", "and ", "more"]  # one out chunk per chunk that released text
    assert evs[-1]["choices"][0]["finish_reason"] == "stop"


def test_held_ollama_lines_are_not_sent_empty():
    relay = Relay("ollama", "chat", "m", lambda kind: [LastWordHolder()])
    lines = b"".join(
        json.dumps({"model": "m", "message": {"role": "assistant", "content": w}, "done": False}).encode() + b"\n"
        for w in ("He", "llo ", "wo", "rld")
    )
    out, stop = run(
        relay, lines + json.dumps({"model": "m", "message": {"content": ""}, "done": True}).encode() + b"\n"
    )
    got = [json.loads(x) for x in out.splitlines()]
    assert stop is None and [g["message"]["content"] for g in got] == ["Hello ", "world", ""]
    assert got[-1]["done"] is True


def test_tool_call_argument_deltas_follow_the_same_rule():
    def tc(args: str, first: bool = False) -> bytes:
        call: dict = {"index": 0, "function": {"arguments": args}}
        if first:
            call.update(id="call_1", type="function")
            call["function"]["name"] = "f"
        return (
            b"data: "
            + json.dumps(
                {"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
            ).encode()
            + b"\n\n"
        )

    relay = Relay("openai", "chat", "m", lambda kind: [LastWordHolder()])
    out, stop = run(relay, tc('{"a', True) + tc('": "x ') + tc("y") + tc('z"}') + sse())
    assert stop is None
    evs = events(out)
    args = [
        e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for e in evs
        if e["choices"][0]["delta"].get("tool_calls")
    ]
    assert "".join(args) == '{"a": "x yz"}'
    assert args[0] == "" and evs[0]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_1"  # id/name kept
    assert "" not in args[1:]
