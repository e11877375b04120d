"""The built-in model server's answers: whole bodies and stream chunks in OpenAI's and Ollama's shapes, and
the Ollama catalogue it serves (/api/tags, /api/show). guard.demo.modelserver decides what to answer."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

_DIRECTIVE = re.compile(r"\[\[(\w+)(?:[=:]\s*(.*?))?\]\]", re.S)

OLLAMA_MODELS = ("demo-model", "llama3:latest", "llama3.1:8b", "internal-llama3:latest", "mistral:7b")
OPENAI_MODELS = ("demo-model", "gpt-4o-mini", "internal-gpt-4o")  # what its GET /v1/models lists


def openai_models() -> dict[str, Any]:
    """OpenAI's ``GET /v1/models`` answer for the models above."""
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 1_767_000_000, "owned_by": "demo"} for n in OPENAI_MODELS],
    }


def ollama_catalog(path: str) -> dict[str, Any]:
    """Ollama's /api/tags (every model above), /api/ps (two of them loaded) and /api/version answers."""
    if path == "/api/version":
        return {"version": "0.12.3"}
    names = OLLAMA_MODELS if path == "/api/tags" else ("llama3:latest", "internal-llama3:latest")
    details = {"format": "gguf", "family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_0"}
    return {
        "models": [
            {
                "name": n,
                "model": n,
                "modified_at": "2026-01-05T10:00:00Z",
                "size": 4_661_224_676,
                "digest": "sha256:" + hashlib.sha256(n.encode()).hexdigest(),
                "details": details,
                **({"expires_at": "2026-01-05T10:05:00Z", "size_vram": 4_661_224_676} if path == "/api/ps" else {}),
            }
            for n in names
        ]
    }


def ollama_show(model: str) -> dict[str, Any]:
    return {
        "modelfile": f"FROM {model}\n",
        "parameters": "stop <|eot_id|>",
        "template": "{{ .Prompt }}",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_0"},
        "model_info": {"general.architecture": "llama"},
        "capabilities": ["completion", "tools"],
    }


def _whole(ollama: bool, op: str, model: str, answer: str, d: dict[str, str], prompt_len: int) -> dict[str, Any]:
    usage = {
        "prompt_tokens": max(1, prompt_len // 4),
        "completion_tokens": len(answer.split()),
        "total_tokens": max(1, prompt_len // 4) + len(answer.split()),
    }
    if ollama:
        base = {
            "model": model,
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": usage["prompt_tokens"],
            "eval_count": usage["completion_tokens"],
        }
        if op == "completion":
            return {**base, "response": answer}
        if "tool" in d:  # Ollama gives a tool call's arguments as an object
            return {**base, "message": _ollama_tool_message(d["tool"])}
        return {**base, "message": {"role": "assistant", "content": answer}}
    if op == "completion":
        return {
            "id": "cmpl-demo",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": answer, "finish_reason": "stop"}],
            "usage": usage,
        }
    msg: dict[str, Any] = {"role": "assistant", "content": answer}
    finish = "stop"
    if "tool" in d:
        name, _, args = d["tool"].partition(" ")
        msg = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_demo", "type": "function", "function": {"name": name, "arguments": args}}],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
        "usage": usage,
    }


def _ollama_tool_message(tool: str) -> dict[str, Any]:
    """An Ollama assistant message calling ``NAME`` with ``ARGS`` (JSON text, given as the object it reads)."""
    name, _, args = tool.partition(" ")
    call = {"function": {"name": name, "arguments": json.loads(args or "{}")}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def ollama_tool_line(model: str, tool: str) -> bytes:
    """The stream line of an Ollama tool call: the whole call in one line, as Ollama streams it."""
    c = {"model": model, "created_at": "2026-01-01T00:00:00Z", "done": False, "message": _ollama_tool_message(tool)}
    return json.dumps(c).encode() + b"\n"


def _chunk(ollama: bool, op: str, model: str, piece: str) -> bytes:
    if ollama:
        c: dict[str, Any] = {"model": model, "created_at": "2026-01-01T00:00:00Z", "done": False}
        c.update({"response": piece} if op == "completion" else {"message": {"role": "assistant", "content": piece}})
        return json.dumps(c).encode() + b"\n"
    if op == "completion":
        c = {
            "id": "cmpl-demo",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "text": piece, "finish_reason": None}],
        }
    else:
        c = {
            "id": "chatcmpl-demo",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
    return b"data: " + json.dumps(c).encode() + b"\n\n"


def _tool_chunk(model: str, name: str | None, args: str) -> bytes:
    """A tool call's delta: the first (``name``) names the call, the next (None) carry more arguments."""
    c = {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_demo",
                            "type": "function",
                            "function": {"name": name, "arguments": args},
                        }
                        if name is not None
                        else {"index": 0, "function": {"arguments": args}}
                    ]
                },
                "finish_reason": None,
            }
        ],
    }
    return b"data: " + json.dumps(c).encode() + b"\n\n"


def _final(ollama: bool, op: str, model: str, tool: bool) -> bytes:
    if ollama:
        c: dict[str, Any] = {
            "model": model,
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 5,
            "eval_count": 7,
        }
        c.update({"response": ""} if op == "completion" else {"message": {"role": "assistant", "content": ""}})
        return json.dumps(c).encode() + b"\n"
    finish = "tool_calls" if tool else "stop"
    if op == "completion":
        c = {
            "id": "cmpl-demo",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "text": "", "finish_reason": finish}],
        }
    else:
        c = {
            "id": "chatcmpl-demo",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
    return b"data: " + json.dumps(c).encode() + b"\n\ndata: [DONE]\n\n"
