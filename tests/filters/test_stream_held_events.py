"""While the screens hold text back, every wire API's client gets nothing rather than empty text events, and
the events it gets follow the model's chunking: OpenAI Chat Completions, Anthropic Messages (native and
translated from a Chat Completions upstream) and OpenAI Responses (native and translated), through the
running proxy (mTLS), read both as raw SSE events and with each API's official SDK (which must still
accept the event sequence and rebuild the same answer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.filters.test_stream_proxy import REPLY, shipped_filters_answers_only

CHUNKS = 60
DIRECTIVE = f"[[reply: {REPLY}]] [[chunks={CHUNKS}]]"
SECRETS = ("5500", "DE89", "536-90", "AKIA")

# per API: path, request body, the events that carry streamed text and where
APIS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": DIRECTIVE}]}),
    "messages": (
        "/v1/messages",
        {"model": "claude-demo", "max_tokens": 500, "messages": [{"role": "user", "content": DIRECTIVE}]},
    ),
    "responses": ("/v1/responses", {"model": "m", "input": DIRECTIVE}),
}


def sse(g: Any, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's events, parsed from the raw bytes (the ``[DONE]`` sentinel left out)."""
    out = []
    with (
        httpx.Client(base_url=g.url, verify=g.ssl_context("app"), timeout=20) as c,
        c.stream("POST", path, json={**body, "stream": True}) as r,
    ):
        assert r.status_code == 200
        data = r.read().decode()
    for ev in data.split("\n\n"):
        payload = "\n".join(ln[5:].lstrip() for ln in ev.split("\n") if ln.startswith("data:"))
        if payload and payload != "[DONE]":
            out.append(json.loads(payload))
    return out


def text_events(api: str, events: list[dict[str, Any]]) -> list[str]:
    """The text of each event that carries streamed answer text (empty strings included)."""
    if api == "chat":
        return [
            ch["delta"]["content"]
            for e in events
            for ch in e.get("choices", [])
            if isinstance(ch.get("delta", {}).get("content"), str) and not ch["delta"].get("role")
        ]
    if api == "messages":
        return [e["delta"]["text"] for e in events if e.get("type") == "content_block_delta"]
    return [e["delta"] for e in events if e.get("type") == "response.output_text.delta"]


def whole_text(g: Any, api: str) -> str:
    path, body = APIS[api]
    with httpx.Client(base_url=g.url, verify=g.ssl_context("app"), timeout=20) as c:
        r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    b = r.json()
    if api == "chat":
        return b["choices"][0]["message"]["content"]
    if api == "messages":
        return "".join(x["text"] for x in b["content"] if x["type"] == "text")
    return "".join(p["text"] for it in b["output"] for p in it.get("content", []) if p.get("type") == "output_text")


def sdk_text(g: Any, api: str) -> str:
    """The answer as each API's official SDK rebuilds it from the stream."""
    _, body = APIS[api]
    if api == "messages":
        import anthropic
        import httpx2

        with (
            anthropic.Anthropic(
                base_url=g.url, api_key="k", max_retries=0, http_client=httpx2.Client(verify=g.ssl_context("app"))
            ) as c,
            c.messages.stream(**body) as s,
        ):
            kinds = [e.type for e in s]
            final = s.get_final_message()
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and final.stop_reason == "end_turn"
        return "".join(b.text for b in final.content if b.type == "text")
    with g.openai() as c:
        if api == "chat":
            return "".join(
                ch.choices[0].delta.content or "" for ch in c.chat.completions.create(stream=True, **body) if ch.choices
            )
        evs = list(c.responses.create(stream=True, **body))
    assert evs[-1].type == "response.completed"
    done = next(e for e in evs if e.type == "response.output_text.done")
    assert done.text == evs[-1].response.output_text
    return evs[-1].response.output_text


@pytest.fixture(params=["native", "translated"])
def upstreams(request: Any, model_server: Any) -> dict[str, Any]:
    """Anthropic and Responses clients against an upstream that speaks their API, or against a Chat
    Completions upstream (Guard translates the stream, then screens the translated events)."""
    url = model_server[1]
    if request.param == "native":
        return {"local": {"url": url, "api": "openai", "timeout_s": 10, "responses": "native"}}
    return {"anthropic": {"url": url, "api": "openai", "timeout_s": 10}}


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_held_text_sends_no_empty_events_and_keeps_the_models_chunking(
    guard_factory: Any, model_server: Any, tmp_path: Path, upstreams: dict[str, Any], api: str
) -> None:
    """Monitor mode, so only the PII and secret screens hold text (the card, IBAN, SSN and key while they
    may still be completing): no text event is empty, the text arrives in many events (no more than the
    model's chunks plus one flush per text block), the raw events join to the whole answer screened at once,
    and the SDK rebuilds the same answer."""
    if api == "chat" and "anthropic" in upstreams:
        pytest.skip("Chat Completions has no translated variant")
    g = guard_factory(
        filters={"dir": str(shipped_filters_answers_only(tmp_path, model_server[1]))}, upstreams=upstreams
    )
    expected = whole_text(g, api)
    assert "5500 0000 0000 0004" not in expected and "AKIAIOSFODNN7EXAMPLE" not in expected
    events = sse(g, *APIS[api])
    texts = text_events(api, events)
    assert "" not in texts, f"{texts.count('')} empty text events while text was held"
    assert "".join(texts) == expected
    assert 10 < len(texts) <= CHUNKS + 1, len(texts)  # streamed in pieces, never more events than the model sent
    assert len(texts) < CHUNKS, "no chunk was held back: the test shows nothing"
    for t in texts:
        assert not any(s in t for s in SECRETS)
    assert sdk_text(g, api) == expected


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_text_held_for_a_verdict_arrives_in_one_event_and_nothing_before(guard: Any, api: str) -> None:
    """Llama Guard in the default ``hold`` mode: an answer shorter than one window is held whole until its
    verdict. Before that the client gets no text event at all (only the stream's opening events), then one."""
    path, body = APIS[api]
    body = {**body, **({"input": "[[reply: one two three four]]"} if api == "responses" else {})}
    if api != "responses":
        body["messages"] = [{"role": "user", "content": "[[reply: one two three four]]"}]
    texts = text_events(api, sse(guard, path, body))
    assert texts == ["one two three four"]
