"""Llama Guard served by a model server: OpenAI-compatible (vLLM, llama.cpp, TGI) or Ollama, over aiohttp.

The default taxonomy goes through the chat endpoint so the server applies the model's own chat template;
custom or excluded categories need the raw prompt (``/v1/completions``, Ollama ``/api/generate`` raw).
Score: P(first verdict token is ``unsafe``) from the server's logprobs. A server that returns none (older
Ollama) gives a score of 1.0 or 0.0 from the verdict text, so the threshold then has no effect.

Servers tokenise what they render with special-token parsing on, so every turn's text is sent through
:func:`~guard.screens.safety.text.escape_specials` first (``<|eot_id|>`` typed by a user stays text).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Sequence
from typing import Any

import aiohttp

from guard.screens.failmode import ScreenError
from guard.screens.safety.llama_guard import (
    Judgement,
    Taxonomy,
    Turn,
    build_prompt,
    chat_messages,
    judge,
    model_text,
    score_from_logprobs,
)
from guard.screens.safety.settings import KEEPALIVE_S, OllamaBackend, OpenAIBackend
from guard.screens.safety.text import escape_specials

Steps = list[tuple[str, list[tuple[str, float]]]]


async def _reused(session: Any, ctx: Any, params: Any) -> None:
    """Trace hook: the request went out on a kept-alive connection (``trace_request_ctx`` of ``post``)."""
    if isinstance(ctx.trace_request_ctx, dict):
        ctx.trace_request_ctx["reused"] = True


def _closed_idle(e: BaseException) -> bool:
    """The server closed the connection under the request, before any answer: it disconnected, or reset or
    broke the connection (ECONNRESET, EPIPE)."""
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(e, aiohttp.ClientOSError) and e.errno in (errno.ECONNRESET, errno.EPIPE)


class _HTTPJudge:
    def __init__(
        self,
        taxonomy: Taxonomy,
        threshold: float,
        session: aiohttp.ClientSession | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.taxonomy = taxonomy
        self.threshold = threshold
        self.keepalive_s = keepalive_s
        self._session = session
        self._own_session = session is None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # idle connections retired before the server retires them (the server's keep-alive is longer)
            conn = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300, keepalive_timeout=self.keepalive_s)
            trace = aiohttp.TraceConfig()
            trace.on_connection_reuseconn.append(_reused)
            self._session = aiohttp.ClientSession(
                connector=conn,
                timeout=aiohttp.ClientTimeout(total=60),
                cookie_jar=aiohttp.DummyCookieJar(),
                trace_configs=[trace],
            )  # shared by all callers
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The judge's JSON answer. A connection the server closed while it sat idle (the server's keep-alive
        shorter than ``keepalive_s``, or its close racing this request) fails before any answer: tried once
        more on a new connection. Judging has no side effects, so a second try is safe even had the server
        read the first."""
        for attempt in (0, 1):
            ctx: dict[str, bool] = {}
            try:
                async with self.session().post(url, json=body, headers=headers, trace_request_ctx=ctx) as r:
                    if r.status != 200:
                        raise ScreenError(f"classifier answered HTTP {r.status}")
                    data = await r.json(content_type=None)
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                if attempt == 0 and ctx.get("reused") and _closed_idle(e):
                    continue
                raise ScreenError(f"classifier unreachable: {type(e).__name__}") from None
            except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                raise ScreenError(f"classifier unreachable: {type(e).__name__}") from None
        if not isinstance(data, dict):
            raise ScreenError("classifier answered a non-object")
        return data

    def conclude(self, text: Any, steps: Steps) -> Judgement:
        if not isinstance(text, str):
            raise ScreenError("classifier answer has no text")
        score = score_from_logprobs(steps) if steps else None
        j = judge(text, score, self.threshold, self.taxonomy.codes)
        if j.score is None:  # no logprobs: the verdict is all we know
            j.score = 1.0 if j.unsafe else 0.0
        return j


class OpenAIJudge(_HTTPJudge):
    def __init__(
        self, cfg: OpenAIBackend, taxonomy: Taxonomy, threshold: float, session: aiohttp.ClientSession | None = None
    ) -> None:
        super().__init__(taxonomy, threshold, session, cfg.keepalive_s)
        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def classify(self, turns: Sequence[Turn]) -> Judgement:
        turns = inert(turns)
        c = self.cfg
        base: dict[str, Any] = {"model": c.model, "temperature": 0, "max_tokens": c.max_tokens}
        if self.taxonomy.default and not c.raw_prompt:
            body = {**base, "messages": chat_messages(turns)}
            if c.top_logprobs:
                body.update(logprobs=True, top_logprobs=c.top_logprobs)
            data = await self.post(f"{c.url}/v1/chat/completions", body, self.headers)
            choice = _first_choice(data)
            text = (choice.get("message") or {}).get("content")
            return self.conclude(text, _chat_steps(choice.get("logprobs")))
        body = {**base, "prompt": model_text(build_prompt(turns, self.taxonomy))}
        if c.top_logprobs:
            body["logprobs"] = c.top_logprobs
        data = await self.post(f"{c.url}/v1/completions", body, self.headers)
        choice = _first_choice(data)
        return self.conclude(choice.get("text"), _completion_steps(choice.get("logprobs")))


class OllamaJudge(_HTTPJudge):
    def __init__(
        self, cfg: OllamaBackend, taxonomy: Taxonomy, threshold: float, session: aiohttp.ClientSession | None = None
    ) -> None:
        super().__init__(taxonomy, threshold, session, cfg.keepalive_s)
        self.cfg = cfg

    async def classify(self, turns: Sequence[Turn]) -> Judgement:
        turns = inert(turns)
        c = self.cfg
        body: dict[str, Any] = {
            "model": c.model,
            "stream": False,
            "options": {"temperature": 0, "num_predict": c.max_tokens},
        }
        if c.top_logprobs:
            body.update(logprobs=True, top_logprobs=c.top_logprobs)
        if self.taxonomy.default:
            data = await self.post(f"{c.url}/api/chat", {**body, "messages": chat_messages(turns)})
            text = (data.get("message") or {}).get("content")
        else:
            prompt = model_text(build_prompt(turns, self.taxonomy))
            data = await self.post(f"{c.url}/api/generate", {**body, "prompt": prompt, "raw": True})
            text = data.get("response")
        return self.conclude(text, _chat_steps({"content": data.get("logprobs")}))


def inert(turns: Sequence[Turn]) -> list[Turn]:
    """The turns with no special-token string left in their text (what is sent to a server)."""
    return [Turn(t.role, escape_specials(t.content)) for t in turns]


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ScreenError("classifier answer has no choices")
    return choices[0]


def _chat_steps(lp: Any) -> Steps:
    """OpenAI chat / Ollama: [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]."""
    steps: Steps = []
    for item in (lp or {}).get("content") or []:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            continue
        top = [
            (t["token"], float(t["logprob"]))
            for t in item.get("top_logprobs") or []
            if isinstance(t, dict) and isinstance(t.get("token"), str) and t.get("logprob") is not None
        ]
        if not top and item.get("logprob") is not None:
            top = [(item["token"], float(item["logprob"]))]
        steps.append((item["token"], top))
    return steps


def _completion_steps(lp: Any) -> Steps:
    """OpenAI completions: {"tokens": [...], "top_logprobs": [{token: logprob}, ...]}."""
    if not isinstance(lp, dict):
        return []
    tokens = lp.get("tokens") or []
    tops = lp.get("top_logprobs") or []
    steps: Steps = []
    for i, tok in enumerate(tokens):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        steps.append((tok, [(k, float(v)) for k, v in top.items()]))
    return steps
