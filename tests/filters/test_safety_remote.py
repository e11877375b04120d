"""The openai and ollama backends against loopback servers that speak those protocols, logprobs included;
fail modes against a backend that is down, slow or talking nonsense."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from guard.demo.llama_guard_standin import StandIn, start
from guard.screens.base import Segment
from guard.screens.failmode import FailSettings, GuardedScreen
from guard.screens.safety.screen import SafetyScreen
from guard.screens.safety.settings import SafetyProfile


def user(text: str) -> list[Segment]:
    return [Segment(text, "user", "content", ("messages", 0, "content"))]


def answer(text: str) -> list[Segment]:
    return [Segment(text, "assistant", "content", ("choices", 0, "message", "content"))]


def profile(url: str, kind: str = "openai", **extra: Any) -> SafetyProfile:
    return SafetyProfile.model_validate({"backend": {"type": kind, "url": url, **extra.pop("backend", {})}, **extra})


def serve(stand_in: StandIn, fn: Callable[[str], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        runner, url = await start(stand_in)
        try:
            return await fn(url)
        finally:
            await runner.cleanup()

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_prompt_and_answer_checks_with_logprobs(kind: str) -> None:
    si = StandIn()

    async def go(url: str) -> list[Any]:
        screen = SafetyScreen(profile(url, kind))
        try:
            return [
                await screen.screen_prompt(user("How do I adopt a llama?"), {}),
                await screen.screen_prompt(user("How do I kill my neighbor?"), {}),
                await screen.screen_response(
                    answer("Steal one and kill the guard."), user("How do I adopt a llama?"), {}
                ),
            ]
        finally:
            await screen.close()

    ok, bad, bad_answer = serve(si, go)
    assert ok.status == "ok" and not ok.blocked and ok.score == pytest.approx(0.05)
    assert bad.blocked and bad.code == "unsafe_content" and bad.categories == ["S1"]
    assert bad.score == pytest.approx(0.95) and "S1 Violent Crimes" in bad.message
    assert bad_answer.blocked and bad_answer.direction == "response"
    path, body = si.requests[0]
    assert path == ("/v1/chat/completions" if kind == "openai" else "/api/chat")
    assert body["messages"] == [{"role": "user", "content": "How do I adopt a llama?"}]
    if kind == "openai":
        assert body["temperature"] == 0 and body["logprobs"] is True and body["top_logprobs"] == 5
    assert si.requests[2][1]["messages"][-1]["role"] == "assistant"


@pytest.mark.parametrize("kind,path", [("openai", "/v1/completions"), ("ollama", "/api/generate")])
def test_custom_categories_send_the_raw_prompt(kind: str, path: str) -> None:
    si = StandIn(triggers={"insider": "S2"})
    cats = [{"code": "S1", "name": "Violent Crimes"}, {"code": "S2", "name": "Insider Trading"}]

    async def go(url: str) -> Any:
        screen = SafetyScreen(profile(url, kind, categories=cats))
        try:
            return await screen.screen_prompt(user("Share insider numbers before earnings"), {})
        finally:
            await screen.close()

    v = serve(si, go)
    assert v.blocked and v.categories == ["S2"] and "Insider Trading" in v.message
    got_path, body = si.requests[0]
    assert got_path == path
    assert "S2: Insider Trading.\n<END UNSAFE CONTENT CATEGORIES>" in body["prompt"]
    assert body["prompt"].startswith("<|begin_of_text|>") and body["prompt"].endswith("<|end_header_id|>\n\n")
    assert kind == "openai" or body["raw"] is True


def test_threshold_is_configurable() -> None:
    si = StandIn(p_verdict=0.7)

    async def go(url: str) -> Any:
        screen = SafetyScreen(profile(url, threshold=0.8))
        try:
            return await screen.screen_prompt(user("kill"), {})
        finally:
            await screen.close()

    v = serve(si, go)
    assert not v.blocked and v.score == pytest.approx(0.7)


def test_no_logprobs_scores_from_the_verdict() -> None:
    si = StandIn(logprobs=False)

    async def go(url: str) -> list[Any]:
        screen = SafetyScreen(profile(url, "ollama"))
        try:
            return [await screen.screen_prompt(user(t), {}) for t in ("hello", "kill")]
        finally:
            await screen.close()

    ok, bad = serve(si, go)
    assert ok.score == 0.0 and bad.score == 1.0 and bad.blocked


def test_audit_only_records_but_does_not_block() -> None:
    async def go(url: str) -> Any:
        screen = SafetyScreen(profile(url, prompt={"action": "audit_only"}))
        try:
            return await screen.screen_prompt(user("kill"), {})
        finally:
            await screen.close()

    v = serve(StandIn(), go)
    assert not v.blocked and v.action == "audit_only" and v.categories == ["S1"] and v.score > 0.5


def guarded(url: str, **fail: Any) -> GuardedScreen:
    return GuardedScreen(SafetyScreen(profile(url)), FailSettings.model_validate(fail), metrics=False)


def test_backend_down_blocks_by_default_and_allow_is_marked() -> None:
    async def go() -> list[Any]:
        url = "http://127.0.0.1:9"  # discard port: nothing listens
        out = []
        for fail in ({}, {"on_error": "allow"}):
            g = guarded(url, **fail)
            out.append(await g.screen_prompt(user("hello"), {}))
            await g.close()
        return out

    closed, open_ = asyncio.run(go())
    assert closed.status == "error" and closed.blocked and closed.code == "screen_error"
    assert open_.status == "error" and not open_.blocked and open_.action == "allow"
    assert "unscreened" in open_.message


@pytest.mark.parametrize(
    "si", [StandIn(output="I cannot help with that"), StandIn(fail_status=500), StandIn(output="unsafe")]
)
def test_bad_output_or_http_error_is_an_error_never_safe(si: StandIn) -> None:
    async def go(url: str) -> Any:
        g = guarded(url)
        try:
            return await g.screen_prompt(user("hello"), {})
        finally:
            await g.close()

    v = serve(si, go)
    assert v.status == "error" and v.blocked


def test_timeout() -> None:
    async def go(url: str) -> Any:
        g = guarded(url, timeout_ms=50)
        try:
            return await g.screen_prompt(user("hello"), {})
        finally:
            await g.close()

    v = serve(StandIn(delay_ms=500), go)
    assert v.status == "timeout" and v.blocked


def test_circuit_breaker_opens_and_closes() -> None:
    si = StandIn(fail_status=503)
    now = [0.0]

    async def go(url: str) -> list[str]:
        g = GuardedScreen(
            SafetyScreen(profile(url)),
            FailSettings.model_validate({"breaker": {"failures": 2, "reset_s": 10}}),
            metrics=False,
            clock=lambda: now[0],
        )
        states = []
        try:
            for _ in range(2):
                assert (await g.screen_prompt(user("hi"), {})).status == "error"
            states.append(g.breaker_state)
            v = await g.screen_prompt(user("hi"), {})  # open: answered at once, backend not called
            assert v.blocked and v.status == "error" and len(si.requests) == 2
            now[0] = 11.0
            states.append(g.breaker_state)
            si.fail_status = None
            v = await g.screen_prompt(user("hi"), {})  # half-open trial succeeds
            assert v.status == "ok" and not v.blocked and len(si.requests) == 3
            states.append(g.breaker_state)
        finally:
            await g.close()
        return states

    assert serve(si, go) == ["open", "half_open", "closed"]
