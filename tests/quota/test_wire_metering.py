"""The quota's view of each wire API, through its module (guard.apis.wire): the answer limit a request
reserves, the stream meter reading each API's own events (text, not framing bytes; the API's usage where it
is larger), the usage ask and its removal. Streams are the built-in model server's encoders for each API
(guard.demo), the bytes the proxy tests relay."""

from __future__ import annotations

import asyncio
import math

import pytest

from guard.apis.wire import module
from guard.demo import messages, modelserver, responses
from guard.exchange import Exchange
from guard.identity import Principal
from guard.quota import hook
from guard.quota.core import Quotas
from guard.quota.memory import MemoryBackend
from guard.quota.settings import QuotaSettings
from guard.quota.stream import StreamMeter
from guard.screens.base import Segment

WORDS = [f"word{i} " for i in range(40)]  # 280 characters of answer text: 70 tokens by the heuristic
TEXT_TOKENS = math.ceil(sum(map(len, WORDS)) / 4)


def _openai() -> bytes:
    return b"".join(modelserver._chunk(False, "chat", "m", w) for w in WORDS) + modelserver._final(
        False, "chat", "m", False
    )


def _ollama() -> bytes:
    return b"".join(modelserver._chunk(True, "chat", "m", w) for w in WORDS) + modelserver._final(
        True, "chat", "m", False
    )


def _anthropic(answer_usage: int) -> bytes:
    end = messages.end("".join(WORDS), {}, 40)
    end = end.replace(b'"output_tokens": 40', b'"output_tokens": %d' % answer_usage)
    return messages.start("claude", 40, {}) + b"".join(messages.delta(w, {}) for w in WORDS) + end


def _responses(answer_usage: int) -> bytes:
    ev = responses.Events("m")
    end = ev.end("".join(WORDS), {}, 40)
    end = end.replace(b'"output_tokens": 40', b'"output_tokens": %d' % answer_usage)
    return ev.start() + b"".join(ev.delta(w) for w in WORDS) + end + b"data: [DONE]\n\n"


def _meter(api: str) -> StreamMeter:
    q = Quotas(QuotaSettings(tiers={"default": {"tokens_per_day": 10**6}}), MemoryBackend())
    t = asyncio.run(q.admit("who", "default", 10))
    return StreamMeter(q, t, api, "chat", 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "api, stream",
    [
        ("openai", _openai()),
        ("ollama", _ollama()),
        ("anthropic", _anthropic(40)),
        ("responses", _responses(40)),
    ],
)
def test_the_meter_counts_each_apis_answer_text_not_its_framing(api, stream):
    m = _meter(api)
    for i in range(0, len(stream), 97):  # arbitrary cuts through events
        m.feed(stream[i : i + 97])
    assert len(stream) / 4 > 3 * TEXT_TOKENS, "framing is most of the bytes: counting bytes would overcharge"
    # the whole texts the Responses *.done events and response.completed repeat are not counted again
    assert m.final_tokens() == TEXT_TOKENS


@pytest.mark.parametrize("api, stream", [("anthropic", _anthropic(500)), ("responses", _responses(500))])
def test_the_meter_takes_the_apis_own_answer_count_where_it_is_larger(api, stream):
    """Anthropic's running output_tokens (message_delta), Responses' usage (response.completed)."""
    m = _meter(api)
    m.feed(stream)
    assert m.final_tokens() == 500


@pytest.mark.parametrize(
    "api, body, limit",
    [
        ("openai", {"max_tokens": 30}, 30),
        ("openai", {"max_completion_tokens": 40, "max_tokens": 30}, 40),
        ("ollama", {"options": {"num_predict": 50}}, 50),
        ("anthropic", {"max_tokens": 60}, 60),
        ("responses", {"max_output_tokens": 70}, 70),
        ("responses", {"max_tokens": 70}, None),  # not a Responses field
        ("openai", {"max_tokens": True}, None),
        ("openai", {"max_tokens": -5}, None),
    ],
)
def test_each_api_names_its_answer_limit(api, body, limit):
    assert module(api).completion_limit(body) == limit


def _exchange(api: str, body: dict, stream: bool) -> Exchange:
    return Exchange(
        request_id="r",
        api=api,
        operation="chat",
        model="m",
        path="/",
        body=body,
        stream=stream,
        principal=Principal(subject="CN=a", cn="a"),
    )


@pytest.mark.parametrize("api", ["openai", "ollama", "anthropic", "responses"])
def test_admission_reserves_the_prompt_and_the_apis_answer_limit(api):
    field = {
        "openai": {"max_tokens": 100},
        "ollama": {"options": {"num_predict": 100}},
        "anthropic": {"max_tokens": 100},
        "responses": {"max_output_tokens": 100},
    }[api]
    q = Quotas(QuotaSettings(tiers={"default": {"tokens_per_minute": 1000}}), MemoryBackend())
    ex = _exchange(api, {"model": "m", **field}, False)
    asyncio.run(hook.admit(q, ex, [Segment("x" * 40, "user", "content", ("input",))]))
    assert ex.context[hook.TICKET].reserved == 10 + 100


@pytest.mark.parametrize(
    "api, asked", [("openai", True), ("ollama", False), ("anthropic", False), ("responses", False)]
)
def test_stream_usage_is_asked_only_where_the_api_needs_asking(api, asked):
    q = Quotas(QuotaSettings(tiers={"default": {"tokens_per_minute": 1000}}), MemoryBackend())
    ex = _exchange(api, {"model": "m"}, True)
    asyncio.run(hook.admit(q, ex, []))
    assert bool(ex.context.get(hook.STRIP_USAGE)) is asked
    assert ("stream_options" in ex.body) is asked
    # a client that asked itself keeps its usage chunk
    ex = _exchange(api, {"model": "m", "stream_options": {"include_usage": True}}, True)
    asyncio.run(hook.admit(q, ex, []))
    assert not ex.context.get(hook.STRIP_USAGE)


def test_a_usage_without_an_input_count_settles_the_prompt_estimate():
    """Anthropic's message_delta may carry only output_tokens: the prompt is not settled as free."""
    q = Quotas(QuotaSettings(tiers={"default": {"tokens_per_minute": 1000}}), MemoryBackend())
    ex = _exchange("anthropic", {"model": "m", "max_tokens": 100}, True)
    asyncio.run(hook.admit(q, ex, [Segment("x" * 40, "user", "content", ("messages",))]))
    outcome = {"status": 200, "usage": {"output_tokens": 7}}
    hook.account(ex, outcome)
    assert ex.context["guard.quota.tokens"] == (10, 7)
