"""Guard's field tables (guard/apis/fields.py) know every parameter the official SDKs installed here send,
so a strict Guard never refuses a valid SDK request as ``unknown_field``. An SDK upgrade that adds a field
fails this test until the field is added to the tables (and, if it reaches the model, to CONTEXT_FIELDS)."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from guard.apis import field_tables as F


def _keys(td: Any) -> set[str]:
    return set(typing.get_type_hints(td).keys())


def _members(union: Any) -> list[Any]:
    return [a for a in typing.get_args(union) if isinstance(a, type)] or [union]


def test_openai_request_parameters_are_known() -> None:
    from openai.types import completion_create_params as completion
    from openai.types import embedding_create_params as embedding
    from openai.types.chat import completion_create_params as chat

    assert _keys(chat.CompletionCreateParamsBase) | {"stream"} <= set(F.OPENAI_CHAT)
    assert _keys(completion.CompletionCreateParamsBase) | {"stream"} <= set(F.OPENAI_COMPLETION)
    assert _keys(embedding.EmbeddingCreateParams) <= set(F.OPENAI_EMBEDDINGS)


def test_openai_nested_objects_are_known() -> None:
    from openai.types.chat import (
        ChatCompletionContentPartParam,
        ChatCompletionMessageParam,
        ChatCompletionMessageToolCallUnionParam,
        ChatCompletionToolUnionParam,
        chat_completion_assistant_message_param,
        chat_completion_custom_tool_param,
        chat_completion_prediction_content_param,
    )
    from openai.types.chat.chat_completion_content_part_refusal_param import (
        ChatCompletionContentPartRefusalParam,
    )
    from openai.types.shared_params import (
        FunctionDefinition,
        response_format_json_schema,
    )

    for m in _members(ChatCompletionMessageParam):
        assert _keys(m) <= set(F._MESSAGE), m
    for p in [*_members(ChatCompletionContentPartParam), ChatCompletionContentPartRefusalParam]:
        assert _keys(p) <= set(F._PART), p
    for t in _members(ChatCompletionToolUnionParam):
        assert _keys(t) <= set(F._TOOL), t
    for c in _members(ChatCompletionMessageToolCallUnionParam):
        assert _keys(c) <= set(F._TOOL_CALL), c
    assert _keys(chat_completion_assistant_message_param.FunctionCall) <= set(F._CALL_FN)
    assert _keys(FunctionDefinition) <= set(F._FUNCTION_DEF)
    assert _keys(chat_completion_custom_tool_param.Custom) <= set(F._CUSTOM_DEF)
    assert _keys(response_format_json_schema.JSONSchema) <= set(F._RESPONSE_FORMAT["json_schema"].sub or {})
    assert _keys(chat_completion_prediction_content_param.ChatCompletionPredictionContentParam) <= set(F._PREDICTION)


@pytest.mark.parametrize(
    "name, spec",
    [
        ("ChatRequest", F.OLLAMA_CHAT),
        ("GenerateRequest", F.OLLAMA_GENERATE),
        ("EmbedRequest", F.OLLAMA_EMBED),
        ("Message", F._O_MESSAGE),
    ],
)
def test_ollama_request_fields_are_known(name: str, spec: dict[str, Any]) -> None:
    import ollama._types as types

    cls = getattr(types, name)
    assert {f.alias or n for n, f in cls.model_fields.items()} <= set(spec)
