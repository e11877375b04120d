"""Property fuzzing of the newer wire APIs against the running proxy (the same properties as
tests/hardening/test_fuzz_proxy.py): Anthropic Messages and OpenAI Responses bodies, half of them kept to the
known fields so they get past the field check, with content blocks, items, tools and texts that wake the
screens, to the native upstreams and through translation. Every answer has a request id, no 500 in Guard's
error shape, only documented statuses, and every request an audit record.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from guard.apis import ROUTES
from guard.apis.fields import SPECS
from tests.hardening.test_fuzz_proxy import (
    FUZZ,
    PRINCIPALS,
    check_journal,
    check_response,
    clients,  # noqa: F401 - the fixture
    json_values,
    post,
    texts,
)

BLOCK_TYPES = [
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "search_result",
]
block = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": st.sampled_from(BLOCK_TYPES) | json_values},
        optional={
            "text": texts | json_values,
            "id": st.text(max_size=5),
            "name": texts | json_values,
            "input": st.dictionaries(st.text(max_size=4), texts, max_size=2) | json_values,
            "tool_use_id": st.text(max_size=5),
            "content": texts | st.lists(json_values, max_size=2),
            "thinking": texts,
            "signature": st.text(max_size=4),
            "data": json_values,
            "source": json_values,
        },
    ),
)
a_message = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]) | json_values},
        optional={"content": texts | st.lists(block, max_size=3) | json_values},
    ),
)
a_tool = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"name": texts | json_values},
        optional={
            "description": texts | json_values,
            "input_schema": json_values,
            "type": st.sampled_from(["custom", "bash"]),
        },
    ),
)

ITEM_TYPES = ["message", "function_call", "function_call_output", "item_reference", "reasoning"]
part = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file"]) | json_values},
        optional={"text": texts | json_values, "image_url": json_values, "file_id": json_values},
    ),
)
item = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(ITEM_TYPES) | json_values,
            "role": st.sampled_from(["user", "developer", "assistant"]),
            "content": texts | st.lists(part, max_size=2) | json_values,
            "call_id": st.text(max_size=4),
            "name": texts | json_values,
            "arguments": texts | json_values,
            "output": texts | st.lists(part, max_size=2),
        },
    ),
)
r_tool = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "web_search"])},
        optional={"name": texts, "description": texts | json_values, "parameters": json_values},
    ),
)


def messages_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "model": st.sampled_from(["claude-demo", "demo-model", "internal-x", ""]) | json_values,
            "max_tokens": st.integers(-1, 100) | json_values,
            "messages": st.lists(a_message, max_size=3) | json_values,
            "system": texts | st.lists(block, max_size=2) | json_values,
            "stream": st.booleans() | json_values,
            "tools": st.lists(a_tool, max_size=2) | json_values,
            "tool_choice": json_values,
            "thinking": json_values,
            "top_k": json_values,
            "output_config": json_values,
            "metadata": json_values,
        },
    )


def responses_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "model": st.sampled_from(["demo-model", "claude-demo", "internal-x", ""]) | json_values,
            "input": texts | st.lists(item, max_size=3) | json_values,
            "instructions": texts | json_values,
            "stream": st.booleans() | json_values,
            "tools": st.lists(r_tool, max_size=2) | json_values,
            "previous_response_id": json_values,
            "store": json_values,
            "text": json_values,
            "max_output_tokens": json_values,
            "tool_choice": json_values,
        },
    )


def test_structured_bodies_of_the_newer_apis(guard: Any, clients: dict[str, httpx.Client]) -> None:  # noqa: F811
    seen: list[tuple[str, int, bool]] = []

    @FUZZ
    @given(
        body=st.one_of(
            messages_bodies().map(lambda b: ("/v1/messages", b)), responses_bodies().map(lambda b: ("/v1/responses", b))
        ),
        who=st.sampled_from(PRINCIPALS),
        known_only=st.booleans(),
    )
    def prop(body: tuple[str, dict[str, Any]], who: str, known_only: bool) -> None:
        path, b = body
        if known_only:
            b = {k: v for k, v in b.items() if k in SPECS[ROUTES[("POST", path)]]}
        seen.extend(check_response(post(clients[who], path, json.dumps(b).encode())))

    prop()
    check_journal(guard, seen)


# Chat Completions bodies for a model on the Anthropic upstream (translated to Messages,
# guard.apis.translate_anthropic), mostly well-formed so that most of them get through to the translation


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[Any]:
    """``good`` four times in five (not one_of: Hypothesis favours its first branches and small draws)."""
    return st.integers(0, 4).flatmap(lambda i: bad if i == 3 else good)


c_text = st.text(max_size=12) | texts
c_part = mostly(
    st.fixed_dictionaries(
        {"type": mostly(st.sampled_from(["text", "text", "refusal", "image_url", "input_audio"]))},
        optional={"text": mostly(c_text), "image_url": json_values, "refusal": c_text},
    )
)
c_call = mostly(
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=4),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": mostly(st.text(min_size=1, max_size=6))},
                optional={
                    "arguments": mostly(
                        st.dictionaries(st.text(max_size=3), c_text, max_size=2).map(json.dumps), c_text
                    )
                },
            ),
        }
    )
)
c_message = mostly(
    st.fixed_dictionaries(
        {"role": mostly(st.sampled_from(["system", "developer", "user", "user", "assistant", "tool"]))},
        optional={
            "content": mostly(c_text | st.lists(c_part, max_size=3)),
            "tool_calls": mostly(st.lists(c_call, max_size=2)),
            "tool_call_id": st.text(max_size=4),
            "name": c_text,
        },
    )
)
c_tool = mostly(
    st.fixed_dictionaries(
        {
            "type": mostly(st.just("function"), st.just("custom")),
            "function": st.fixed_dictionaries(
                {"name": st.text(min_size=1, max_size=6)},
                optional={"description": c_text, "parameters": mostly(st.just({"type": "object"}))},
            ),
        }
    )
)


def chat_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"model": st.just("claude-demo"), "messages": st.lists(c_message, min_size=1, max_size=4)},
        optional={
            "stream": st.booleans(),
            "stream_options": mostly(st.just({"include_usage": True})),
            "tools": mostly(st.lists(c_tool, max_size=2)),
            "tool_choice": mostly(st.sampled_from(["auto", "none", "required"])),
            "parallel_tool_calls": mostly(st.booleans()),
            "n": mostly(st.integers(0, 2)),
            "temperature": mostly(st.floats(0, 1.2)),
            "top_p": mostly(st.floats(0, 1)),
            "stop": mostly(c_text | st.lists(c_text, max_size=2)),
            "max_tokens": mostly(st.integers(-1, 100)),
            "max_completion_tokens": mostly(st.integers(1, 100)),
            "response_format": mostly(st.just({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})),
            "user": mostly(c_text),
        },
    )


o_message = mostly(
    st.fixed_dictionaries(
        {"role": mostly(st.sampled_from(["system", "user", "user", "assistant", "tool"]))},
        optional={
            "content": mostly(c_text),
            "tool_calls": mostly(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "function": st.fixed_dictionaries(
                                {"name": st.text(min_size=1, max_size=6)},
                                optional={
                                    "arguments": mostly(st.dictionaries(st.text(max_size=3), c_text, max_size=2))
                                },
                            )
                        }
                    ),
                    max_size=2,
                )
            ),
            "tool_name": c_text,
            "images": mostly(st.just([]), st.just(["iVBORw0KGgo="])),
        },
    )
)


def ollama_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"model": st.just("claude-demo"), "messages": st.lists(o_message, min_size=1, max_size=4)},
        optional={
            "stream": st.booleans(),
            "tools": mostly(st.lists(c_tool, max_size=2)),
            "options": mostly(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "temperature": mostly(st.floats(0, 1.2)),
                        "num_predict": mostly(st.integers(-1, 50)),
                        "stop": mostly(st.lists(c_text, max_size=2)),
                        "seed": st.integers(0, 3),
                    },
                )
            ),
            "format": mostly(st.just({"type": "object"}), st.just("json")),
            "think": st.booleans(),
            "keep_alive": st.just("5m"),
        },
    )


def test_chat_bodies_translated_for_a_messages_upstream(guard: Any, clients: dict[str, httpx.Client]) -> None:  # noqa: F811
    """Chat Completions and Ollama chat bodies: the properties above, and what Guard sends to the Messages
    upstream never has a field outside the Messages reference, lacks max_tokens or has a temperature out of
    range (the model server refuses those as the real API does, and the message would come back here)."""
    seen: list[tuple[str, int, bool]] = []

    @FUZZ
    @given(
        body=st.one_of(
            chat_bodies().map(lambda b: ("/v1/chat/completions", b)), ollama_bodies().map(lambda b: ("/api/chat", b))
        ),
        who=st.sampled_from(PRINCIPALS),
    )
    def prop(body: tuple[str, dict[str, Any]], who: str) -> None:
        path, b = body
        r = post(clients[who], path, json.dumps(b).encode())
        seen.extend(check_response(r))
        for why in ("Extra inputs are not permitted", "max_tokens: Field required", "temperature: Input"):
            assert why not in r.text, (b, r.text)

    prop()
    check_journal(guard, seen)
