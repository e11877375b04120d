"""The field tables of each wire API and operation (``SPECS``), from the public API references; what each
entry means: guard.apis.field_spec, and how they are used: guard.apis.fields."""

from __future__ import annotations

from guard.apis.field_spec import F, P, T

# --- OpenAI ------------------------------------------------------------------------------------------------
_CACHE = {"prompt_cache_breakpoint": P}
_PART = {
    "type": P,
    "text": T("content"),
    "refusal": T("content"),
    "image_url": F("image", {"url": P, "detail": P}),
    "input_audio": F("audio", {"data": P, "format": P}),
    "file": F("file", {"file_data": P, "file_id": P, "filename": P}),
    **_CACHE,
}
_CALL_FN = {"name": T("name"), "arguments": T("tool_arguments")}
_TOOL_CALL = {
    "id": P,
    "type": P,
    "function": F(sub=_CALL_FN),
    "custom": F(sub={"name": T("name"), "input": T("tool_arguments")}),
}
_MESSAGE = {
    "role": P,
    "content": F("content", _PART, types=(str, list)),
    "name": T("name"),
    "tool_call_id": P,
    "tool_calls": F(sub=_TOOL_CALL),
    "function_call": F(sub=_CALL_FN),
    "refusal": T("content"),
    "audio": F("audio", {"id": P}),
}
_FUNCTION_DEF = {
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "parameters": F("tool_definition"),
    "strict": P,
}
_CUSTOM_DEF = {
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "format": F(sub={"type": P, "grammar": F(sub={"definition": T("tool_definition"), "syntax": P})}),
}
_TOOL = {"type": P, "function": F(sub=_FUNCTION_DEF), "custom": F(sub=_CUSTOM_DEF)}
_RESPONSE_FORMAT = {
    "type": P,
    "json_schema": F(
        sub={
            "name": T("response_schema"),
            "description": T("response_schema"),
            "schema": F("response_schema"),
            "strict": P,
        }
    ),
}
_PREDICTION = {"type": P, "content": F("prediction", {"type": P, "text": T("prediction"), **_CACHE}, types=(str, list))}

OPENAI_CHAT: dict[str, F] = {
    "model": P,
    "messages": F(sub=_MESSAGE),
    "audio": P,
    "frequency_penalty": P,
    "function_call": P,
    "functions": F(sub=_FUNCTION_DEF),
    "logit_bias": P,
    "logprobs": P,
    "max_completion_tokens": P,
    "max_tokens": P,
    "metadata": P,
    "modalities": P,
    "moderation": P,
    "n": P,
    "parallel_tool_calls": P,
    "prediction": F(sub=_PREDICTION),
    "presence_penalty": P,
    "prompt_cache_key": P,
    "prompt_cache_options": P,
    "prompt_cache_retention": P,
    "reasoning_effort": P,
    "response_format": F(sub=_RESPONSE_FORMAT),
    "safety_identifier": P,
    "seed": P,
    "service_tier": P,
    "stop": P,
    "store": P,
    "stream": P,
    "stream_options": P,
    "temperature": P,
    "tool_choice": P,
    "tools": F(sub=_TOOL),
    "top_logprobs": P,
    "top_p": P,
    "user": P,
    "verbosity": P,
    "web_search_options": P,
}
OPENAI_COMPLETION: dict[str, F] = {
    "model": P,
    "prompt": F("prompt", tokens=True),
    "best_of": P,
    "echo": P,
    "frequency_penalty": P,
    "logit_bias": P,
    "logprobs": P,
    "max_tokens": P,
    "n": P,
    "presence_penalty": P,
    "seed": P,
    "stop": P,
    "stream": P,
    "stream_options": P,
    "suffix": T("suffix"),
    "temperature": P,
    "top_p": P,
    "user": P,
}
OPENAI_EMBEDDINGS: dict[str, F] = {
    "model": P,
    "input": F("input", tokens=True),
    "dimensions": P,
    "encoding_format": P,
    "user": P,
}

# --- Ollama ------------------------------------------------------------------------------------------------
_O_CALL = {
    "id": P,
    "type": P,
    "function": F(sub={"index": P, "name": T("name"), "arguments": F("tool_arguments", types=(str, dict))}),
}
_O_MESSAGE = {
    "role": P,
    "content": T("content"),
    "thinking": T("content"),
    "images": F("image"),
    "tool_calls": F(sub=_O_CALL),
    "tool_name": T("name"),
    "tool_call_id": P,
}
_O_TOOL = {
    "type": P,
    "function": F(
        sub={"name": T("tool_definition"), "description": T("tool_definition"), "parameters": F("tool_definition")}
    ),
}
_O_COMMON = {
    "model": P,
    "format": F("response_schema"),
    "options": P,
    "stream": P,
    "keep_alive": P,
    "think": P,
    "truncate": P,
    "shift": P,
    "logprobs": P,
    "top_logprobs": P,
}
OLLAMA_CHAT: dict[str, F] = {**_O_COMMON, "messages": F(sub=_O_MESSAGE), "tools": F(sub=_O_TOOL)}
OLLAMA_GENERATE: dict[str, F] = {
    **_O_COMMON,
    "prompt": T("prompt"),
    "suffix": T("suffix"),
    "system": T("system"),
    "template": T("template"),
    "context": F("context"),
    "raw": P,
    "images": F("image"),
    "width": P,
    "height": P,
    "steps": P,
}
OLLAMA_EMBED: dict[str, F] = {
    "model": P,
    "input": F("input"),
    "truncate": P,
    "options": P,
    "keep_alive": P,
    "dimensions": P,
}

# --- Anthropic Messages --------------------------------------------------------------------------------------
# One table for every content block type Guard reads (guard.apis.anthropic.BLOCK_TYPES; others are refused):
# text, image and document (source: not screenable), tool_use, tool_result (its content: a string or text and
# image blocks), thinking, redacted_thinking (data: opaque, refused as "context" unless allowed). A document's
# source is refused as "file"; its title and context are not in the table (refused unless extra_fields).
_A_INNER = {"type": P, "text": T("tool_result"), "source": F("image"), "cache_control": P}
_A_BLOCK = {
    "type": P,
    "text": T("content"),
    "source": F("image"),
    "id": P,
    "name": T("name"),
    "input": F("tool_arguments", types=(dict,)),
    "tool_use_id": P,
    "content": F("tool_result", _A_INNER, types=(str, list)),
    "is_error": P,
    "thinking": T("content"),
    "signature": P,
    "data": F("context"),
    "cache_control": P,
}
_A_TOOL = {
    "type": P,
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "input_schema": F("tool_definition"),
    "input_examples": F("tool_definition"),
    "cache_control": P,
    "strict": P,
}
ANTHROPIC_MESSAGES: dict[str, F] = {
    "model": P,
    "max_tokens": P,
    "messages": F(sub={"role": P, "content": F("content", _A_BLOCK, types=(str, list))}),
    "system": F("system", {"type": P, "text": T("system"), "cache_control": P}, types=(str, list)),
    "metadata": P,
    "stop_sequences": P,
    "stream": P,
    "temperature": P,
    "top_k": P,
    "top_p": P,
    "tool_choice": P,
    "tools": F(sub=_A_TOOL),
    "thinking": P,
    "service_tier": P,
    "cache_control": P,
    "inference_geo": P,
    "speed": P,
    "output_config": F(sub={"effort": P, "format": F(sub={"type": P, "schema": F("response_schema")})}),
}

# --- OpenAI Responses ---------------------------------------------------------------------------------------
# Items Guard reads (guard.apis.responses.ITEM_TYPES; others refused): messages with input_text / output_text /
# refusal / input_image / input_file parts, function_call, function_call_output (output: a string or parts).
_R_FILES = {
    "image_url": F("image"),
    "file_id": F("file"),
    "file_data": F("file"),
    "file_url": F("file"),
    "filename": P,
    "detail": P,
}
_R_PART = {"type": P, "text": T("content"), "refusal": T("content"), "annotations": P, "logprobs": P, **_R_FILES}
_R_OUT_PART = {"type": P, "text": T("tool_result"), **_R_FILES}
_R_ITEM = {
    "type": P,
    "role": P,
    "id": P,
    "status": P,
    "phase": P,
    "content": F("content", _R_PART, types=(str, list)),
    "call_id": P,
    "name": T("name"),
    "arguments": T("tool_arguments"),
    "output": F("tool_result", _R_OUT_PART, types=(str, list)),
}
_R_TOOL = {
    "type": P,
    "name": T("tool_definition"),
    "description": T("tool_definition"),
    "parameters": F("tool_definition"),
    "strict": P,
}
_R_FORMAT = {
    "type": P,
    "name": T("response_schema"),
    "description": T("response_schema"),
    "schema": F("response_schema"),
    "strict": P,
}
OPENAI_RESPONSES: dict[str, F] = {
    "model": P,
    "input": F("content", _R_ITEM, types=(str, list)),
    "instructions": T("system"),
    "tools": F(sub=_R_TOOL),
    "tool_choice": P,
    "stream": P,
    "stream_options": P,
    "max_output_tokens": P,
    "max_tool_calls": P,
    "temperature": P,
    "top_p": P,
    "top_logprobs": P,
    "metadata": P,
    "parallel_tool_calls": P,
    "reasoning": P,
    "service_tier": P,
    "store": P,
    "previous_response_id": P,
    "conversation": P,
    "background": P,
    "truncation": P,
    "user": P,
    "text": F(sub={"format": F(sub=_R_FORMAT), "verbosity": P}),
    "safety_identifier": P,
    "prompt_cache_key": P,
    "prompt_cache_retention": P,
    "prompt_cache_options": P,
    "include": P,
}

SPECS: dict[tuple[str, str], dict[str, F]] = {
    ("openai", "chat"): OPENAI_CHAT,
    ("openai", "completion"): OPENAI_COMPLETION,
    ("openai", "embeddings"): OPENAI_EMBEDDINGS,
    ("ollama", "chat"): OLLAMA_CHAT,
    ("ollama", "completion"): OLLAMA_GENERATE,
    ("ollama", "embeddings"): OLLAMA_EMBED,
    ("anthropic", "chat"): ANTHROPIC_MESSAGES,
    ("responses", "chat"): OPENAI_RESPONSES,
}
