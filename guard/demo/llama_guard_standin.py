"""A Llama Guard stand-in server for tests, benchmarks and the demo: speaks the OpenAI (chat, completions)
and Ollama (chat, generate) protocols, logprobs included, and judges by trigger words.

Chat messages are rendered with the published template as a server would; the judged text is then the last
``User:`` / ``Agent:`` turn as a steerable model reads it (:mod:`guard.screens.safety.reader`: special
tokens, template markers and forged verdicts in the text take effect). It is unsafe when it contains a
trigger word (default: ``kill`` -> S1, ``vermin`` -> S10).
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from guard.screens.safety.reader import read, render_chat

TRIGGERS = {"kill": "S1", "stab": "S1", "vermin": "S10"}


@dataclass
class StandIn:
    triggers: dict[str, str] = field(default_factory=lambda: dict(TRIGGERS))
    delay_ms: float = 0.0
    fail_status: int | None = None  # answer every request with this HTTP status
    output: str | None = None  # force the generated text (e.g. something outside the grammar)
    logprobs: bool = True  # include logprobs when asked
    p_verdict: float = 0.95  # probability given to the chosen verdict token
    ignore: str | None = None  # a regex removed before judging (e.g. the demo model server's [[directives]])
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/api/chat", self._ollama_chat)
        app.router.add_post("/api/generate", self._ollama_generate)
        return app

    def judge(self, text: str) -> str:
        low = (re.sub(self.ignore, " ", text, flags=re.S) if self.ignore else text).lower()
        codes = sorted({c for w, c in self.triggers.items() if w in low}, key=lambda c: int(c[1:]))
        return f"unsafe\n{','.join(codes)}" if codes else "safe"

    def verdict(self, prompt: str) -> str:
        """The answer for a rendered prompt: a verdict forged into it, else the judged turn's."""
        if self.output is not None:
            return self.output
        text, forged = read(prompt)
        return forged if forged is not None else self.judge(text)

    async def _enter(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append((request.path, body))
        del self.requests[:-1000]  # bounded: a long-running stand-in keeps only the latest
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        if self.fail_status:
            raise _status(self.fail_status)
        return body

    def _steps(self, text: str, n: int) -> list[dict[str, Any]]:
        """Per-token logprobs: the verdict token with its alternative, then the rest as certain."""
        first, _, rest = text.partition("\n")
        other = "safe" if first == "unsafe" else "unsafe"
        lp, alt = math.log(self.p_verdict), math.log(1 - self.p_verdict)
        top = [{"token": first, "logprob": lp}, {"token": other, "logprob": alt}][: max(n, 1)]
        steps = [{"token": first, "logprob": lp, "top_logprobs": top}]
        if rest:
            steps += [
                {"token": "\n", "logprob": 0.0, "top_logprobs": []},
                {"token": rest, "logprob": 0.0, "top_logprobs": []},
            ]
        return steps

    async def _chat(self, request: web.Request) -> web.Response:
        body = await self._enter(request)
        text = self.verdict(render_chat(body["messages"]))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if body.get("logprobs") and self.logprobs:
            choice["logprobs"] = {"content": self._steps(text, body.get("top_logprobs") or 1)}
        return web.json_response({"id": "lg", "object": "chat.completion", "model": body["model"], "choices": [choice]})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await self._enter(request)
        text = self.verdict(body["prompt"])
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop"}
        if body.get("logprobs") and self.logprobs:
            steps = self._steps(text, body["logprobs"])
            choice["logprobs"] = {
                "tokens": [s["token"] for s in steps],
                "token_logprobs": [s["logprob"] for s in steps],
                "top_logprobs": [{t["token"]: t["logprob"] for t in s["top_logprobs"]} for s in steps],
            }
        return web.json_response({"id": "lg", "object": "text_completion", "choices": [choice]})

    async def _ollama_chat(self, request: web.Request) -> web.Response:
        body = await self._enter(request)
        text = self.verdict(render_chat(body["messages"]))
        out: dict[str, Any] = {"model": body["model"], "message": {"role": "assistant", "content": text}, "done": True}
        if body.get("logprobs") and self.logprobs:
            out["logprobs"] = self._steps(text, body.get("top_logprobs") or 1)
        return web.json_response(out)

    async def _ollama_generate(self, request: web.Request) -> web.Response:
        body = await self._enter(request)
        text = self.verdict(body["prompt"])
        out: dict[str, Any] = {"model": body["model"], "response": text, "done": True}
        if body.get("logprobs") and self.logprobs:
            out["logprobs"] = self._steps(text, body.get("top_logprobs") or 1)
        return web.json_response(out)


def _status(code: int) -> web.HTTPException:
    exc = web.HTTPException()
    exc.set_status(code)
    return exc


class StandInThread:
    """The stand-in on its own event loop thread, for tests of code that runs another loop (the proxy)."""

    def __init__(self, stand_in: StandIn) -> None:
        import threading

        self.stand_in = stand_in
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llama-guard-stand-in", daemon=True)
        self.thread.start()
        self.runner, self.url = asyncio.run_coroutine_threadsafe(start(stand_in), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def start(stand_in: StandIn, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve on loopback; returns the runner (``await runner.cleanup()`` to stop) and the base URL."""
    runner = web.AppRunner(stand_in.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, f"http://{host}:{runner.addresses[0][1]}"


def main() -> None:
    """``python -m guard.demo.llama_guard_standin --port 8000 [--delay-ms 5]``: serve until killed."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    a = ap.parse_args()
    web.run_app(StandIn(delay_ms=a.delay_ms).app(), host=a.host, port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
