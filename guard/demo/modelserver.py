"""A built-in model server that speaks the OpenAI, Ollama and Anthropic Messages wire protocols, with
deterministic replies.

It is the demo's model and the tests' and benchmarks' upstream stand-in. The last user message may carry
directives that change the reply, so demos can show redaction and blocking:

  [[reply: TEXT]]        answer exactly TEXT (until the closing ]])
  [[echo]]               answer with the whole last user message (shows what the model was sent)
  [[delay_ms=N]]         wait N ms between streamed chunks
  [[first_byte_ms=N]]    wait N ms before answering at all
  [[chunks=N]]           split the streamed answer into N chunks (default: one per word)
  [[status=N]]           answer with HTTP status N and an OpenAI error body
  [[tool: NAME ARGS]]    answer with a tool call NAME whose arguments are the JSON text ARGS (Ollama chat:
                         the object it reads, streamed whole in one line)
  [[tool_chunks=N]]      stream the tool call's arguments in N deltas (OpenAI chat; default: one)
  [[garbage]]            stream a chunk that is not JSON
  [[reset]]              drop the connection in the middle of the stream
  [[forever]]            stream until the client goes away

A request for a model whose name contains "guard" is answered as Llama Guard 3 would (``safe`` or
``unsafe\nS9``, with logprobs) by a keyword judge over the last turn, read as a steerable model would, so
demos and tests can screen with a real wire protocol: bomb/explosive/nerve agent -> S9, kill/murder -> S1,
launder/steal a car -> S2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

from guard.demo import messages as anthropic
from guard.demo import responses
from guard.demo.answers import (
    _chunk,
    _final,
    _tool_chunk,
    _whole,
    ollama_catalog,
    ollama_show,
    ollama_tool_line,
    openai_models,
)

_DIRECTIVE = re.compile(r"\[\[(\w+)(?:[=:]\s*(.*?))?\]\]", re.S)


def directives(text: str) -> dict[str, str]:
    return {m.group(1): (m.group(2) or "") for m in _DIRECTIVE.finditer(text)}


def _last_user(body: dict[str, Any]) -> str:
    if isinstance(body.get("prompt"), str):
        return body["prompt"]
    if isinstance(body.get("prompt"), list) and body["prompt"]:
        return str(body["prompt"][-1])
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c or ""
    return ""


def reply_for(model: str, text: str, d: dict[str, str]) -> str:
    if "reply" in d:
        return d["reply"]
    if "echo" in d:
        return text
    return f"Hello from {model}. This is a deterministic demo reply to a prompt of {len(text)} characters."


_JUDGE = [
    (re.compile(r"\b(bomb|explosive|nerve agent|bioweapon)", re.I), "S9"),
    (re.compile(r"\b(kill|murder|stab)\b", re.I), "S1"),
    (re.compile(r"\b(launder|steal a car|hotwire)", re.I), "S2"),
]


def judge(body: dict[str, Any]) -> str:
    """Llama Guard's verdict text for the conversation (or raw prompt) in ``body``: chat messages are rendered
    as a server would, and the last turn is read as a steerable model would (guard.screens.safety.reader),
    so a special token, template marker or forged verdict in the text takes effect here."""
    from guard.screens.safety.reader import read, render_chat

    prompt = body["prompt"] if isinstance(body.get("prompt"), str) else render_chat(body.get("messages"))
    text, forged = read(prompt)
    if forged is not None:
        return forged
    codes = sorted({code for rx, code in _JUDGE if rx.search(text)})
    return "unsafe\n" + ",".join(codes) if codes else "safe"


def _judge_answer(body: dict[str, Any], ollama: bool) -> dict[str, Any]:
    verdict = judge(body)
    first = verdict.split("\n")[0]
    other = "safe" if first == "unsafe" else "unsafe"
    top = [{"token": first, "logprob": -0.01}, {"token": other, "logprob": -4.6}]
    lp = [{"token": first, "logprob": -0.01, "top_logprobs": top}]
    if ollama:
        return {
            "model": body.get("model"),
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": "stop",
            "message": {"role": "assistant", "content": verdict},
            "logprobs": lp,
        }
    if isinstance(body.get("prompt"), str):
        return {
            "id": "cmpl-guard",
            "object": "text_completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "text": verdict,
                    "finish_reason": "stop",
                    "logprobs": {
                        "tokens": [first],
                        "token_logprobs": [-0.01],
                        "top_logprobs": [{first: -0.01, other: -4.6}],
                    },
                }
            ],
        }
    return {
        "id": "chatcmpl-guard",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": verdict},
                "finish_reason": "stop",
                "logprobs": {"content": lp},
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 3},
    }


def _pieces(text: str, n: int | None) -> list[str]:
    if n and n > 0:
        size = max(1, -(-len(text) // n))
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]
    words = re.findall(r"\S+\s*|\s+", text)
    return words or [""]


class ModelServer:
    """ASGI app. ``requests`` keeps the last requests seen (headers, parsed body and the body as sent) for tests."""

    def __init__(self, keep: int = 50, judge_delay_ms: float | None = None) -> None:
        import os

        # The judge's fixed think time (benchmarks use 5 ms); also settable for `uvicorn --factory` runs.
        self.judge_delay = (
            judge_delay_ms if judge_delay_ms is not None else float(os.environ.get("GUARD_DEMO_JUDGE_DELAY_MS", "0"))
        ) / 1000
        self.requests: list[dict[str, Any]] = []
        self.keep = keep
        self.cancelled = 0  # streams whose client went away before the end
        self.finished = 0

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in ("/v1/models", "/api/tags", "/api/ps", "/api/version"):
            self.requests.append(
                {
                    "path": path,
                    "headers": {k.decode(): v.decode("latin-1") for k, v in scope["headers"]},
                    "body": {},
                    "raw": "",
                }
            )
            del self.requests[: -self.keep]
            return await self._json(send, 200, openai_models() if path == "/v1/models" else ollama_catalog(path))
        if method == "GET" and path == "/_requests":
            return await self._json(
                send, 200, {"requests": self.requests, "cancelled": self.cancelled, "finished": self.finished}
            )
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return await self._json(send, 400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
        self.requests.append(
            {
                "path": path,
                "headers": {k.decode(): v.decode("latin-1") for k, v in scope["headers"]},
                "body": body,
                "raw": raw.decode("utf-8", "replace"),
            }
        )
        del self.requests[: -self.keep]
        model = body.get("model", "demo-model")
        if path == "/api/show":
            names = [m["name"] for m in ollama_catalog("/api/tags")["models"]]
            if model not in names:
                return await self._json(send, 404, {"error": f"model '{model}' not found"})
            return await self._json(send, 200, ollama_show(str(model)))
        if "guard" in str(model).lower():
            if self.judge_delay:
                await asyncio.sleep(self.judge_delay)
            return await self._json(send, 200, _judge_answer(body, path.startswith("/api/")))
        msgs = path == "/v1/messages"  # Anthropic Messages (guard.demo.messages)
        resp_api = path == "/v1/responses"  # OpenAI Responses (guard.demo.responses)
        text = anthropic.last_user(body) if msgs else responses.last_user(body) if resp_api else _last_user(body)
        d = directives(text)
        if msgs and (why := anthropic.invalid(body)):
            return await self._json(send, 400, anthropic.error(400, why))
        if "first_byte_ms" in d:
            await asyncio.sleep(int(d["first_byte_ms"]) / 1000)
        if "status" in d:
            return await self._json(
                send,
                int(d["status"]),
                anthropic.error(int(d["status"]))
                if msgs
                else {"error": {"message": "demo error", "type": "demo", "code": d["status"]}},
            )
        if path.endswith("/embeddings") or path == "/api/embed":
            inputs = body.get("input")
            n = len(inputs) if isinstance(inputs, list) else 1
            if path == "/api/embed":
                return await self._json(send, 200, {"model": model, "embeddings": [[0.1, 0.2, 0.3]] * n})
            return await self._json(
                send,
                200,
                {
                    "object": "list",
                    "model": model,
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                    "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(n)],
                },
            )
        answer = reply_for(model, text, d)
        ollama = path.startswith("/api/")
        op = "completion" if path in ("/v1/completions", "/api/generate") else "chat"
        stream = body.get("stream", ollama)
        if msgs and not stream:
            return await self._json(send, 200, anthropic.whole(model, answer, d, len(text)))
        if resp_api and not stream:
            return await self._json(send, 200, responses.whole(model, answer, d, len(text)))
        if resp_api:
            return await self._stream(send, receive, False, op, model, answer, d, len(text), responses.Events(model))
        if stream:
            return await self._stream(send, receive, ollama, op, model, answer, d, len(text) if msgs else -1)
        return await self._json(send, 200, _whole(ollama, op, model, answer, d, len(text)))

    async def _json(self, send: Callable, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _stream(
        self,
        send: Callable,
        receive: Callable,
        ollama: bool,
        op: str,
        model: str,
        answer: str,
        d: dict[str, str],
        msgs_prompt: int = -1,
        rev: Any = None,
    ) -> None:
        """Streams in the client's protocol; ``msgs_prompt`` >= 0: Anthropic Messages events (its prompt length),
        or Responses events when ``rev`` (guard.demo.responses.Events) is given."""
        msgs = msgs_prompt >= 0 and rev is None
        ctype = b"application/x-ndjson" if ollama else b"text/event-stream"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
        delay = int(d.get("delay_ms", "0") or 0) / 1000
        pieces = _pieces(answer, int(d["chunks"]) if d.get("chunks") else None)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        w = asyncio.ensure_future(watch())
        try:
            if msgs:
                await send(
                    {"type": "http.response.body", "body": anthropic.start(model, msgs_prompt, d), "more_body": True}
                )
            elif rev is not None:
                await send({"type": "http.response.body", "body": rev.start(), "more_body": True})
            i = 0
            while True:
                if "forever" in d:
                    piece = f"tick {i} "
                elif i < len(pieces):
                    piece = pieces[i]
                else:
                    break
                if "garbage" in d and i == 1:
                    await send({"type": "http.response.body", "body": b"data: {not json\n\n", "more_body": True})
                if "reset" in d and i == 2:
                    raise ConnectionResetError("demo reset")
                await send(
                    {
                        "type": "http.response.body",
                        "more_body": True,
                        "body": anthropic.delta(piece, d)
                        if msgs
                        else rev.delta(piece)
                        if rev is not None
                        else _chunk(ollama, op, model, piece),
                    }
                )
                i += 1
                if delay or "forever" in d:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), delay or 0.01)
                if gone.is_set():
                    self.cancelled += 1
                    return
            if msgs or rev is not None:
                end = anthropic.end(answer, d, msgs_prompt) if msgs else rev.end(answer, d, msgs_prompt)
                await send({"type": "http.response.body", "body": end, "more_body": False})
                self.finished += 1
                return
            if "tool" in d and ollama and op == "chat":
                await send(
                    {"type": "http.response.body", "more_body": True, "body": ollama_tool_line(model, d["tool"])}
                )
            elif "tool" in d:
                name, _, args = d["tool"].partition(" ")
                parts = _pieces(args, int(d["tool_chunks"])) if d.get("tool_chunks") else [args]
                for k, part in enumerate(parts):  # the first delta names the call, the others add arguments
                    body = _tool_chunk(model, name if k == 0 else None, part)
                    await send({"type": "http.response.body", "more_body": True, "body": body})
            await send(
                {"type": "http.response.body", "body": _final(ollama, op, model, "tool" in d), "more_body": False}
            )
            self.finished += 1
        finally:
            w.cancel()
