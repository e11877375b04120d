"""The built-in model server's OpenAI Responses answers (POST /v1/responses): whole and streamed with the
typed events (response.created, output_item.added, content_part.added, output_text.delta/.done,
content_part.done, output_item.done, function_call_arguments.delta/.done, response.completed).
Directives as in guard.demo.modelserver."""

from __future__ import annotations

import json
from typing import Any


def last_user(body: dict[str, Any]) -> str:
    x = body.get("input")
    if isinstance(x, str):
        return x
    for item in reversed(x if isinstance(x, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            c = item.get("content")
            if isinstance(c, list):
                return " ".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


def _message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_demo",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call(d: dict[str, str]) -> dict[str, Any]:
    name, _, args = d["tool"].partition(" ")
    return {
        "type": "function_call",
        "id": "fc_demo",
        "call_id": "call_demo",
        "name": name,
        "arguments": args,
        "status": "completed",
    }


def whole(model: str, answer: str, d: dict[str, str], prompt_len: int, status: str = "completed") -> dict[str, Any]:
    output = [_call(d)] if "tool" in d else [_message(answer)]
    n_in, n_out = max(1, prompt_len // 4), len(answer.split())
    return {
        "id": "resp_demo",
        "object": "response",
        "created_at": 0,
        "status": status,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
    }


class Events:
    """Numbers the events of one stream."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.seq = 0

    def ev(self, ev: dict[str, Any]) -> bytes:
        ev["sequence_number"] = self.seq
        self.seq += 1
        return b"event: " + ev["type"].encode() + b"\ndata: " + json.dumps(ev).encode() + b"\n\n"

    def start(self) -> bytes:
        resp = whole(self.model, "", {}, 0, "in_progress")
        resp["output"], resp["usage"] = [], None
        item = {"type": "message", "id": "msg_demo", "status": "in_progress", "role": "assistant", "content": []}
        return (
            self.ev({"type": "response.created", "response": resp})
            + self.ev({"type": "response.output_item.added", "output_index": 0, "item": item})
            + self.ev(
                {
                    "type": "response.content_part.added",
                    "item_id": "msg_demo",
                    "output_index": 0,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
        )

    def delta(self, piece: str) -> bytes:
        return self.ev(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_demo",
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
        )

    def end(self, answer: str, d: dict[str, str], prompt_len: int) -> bytes:
        out = (
            self.ev(
                {
                    "type": "response.output_text.done",
                    "item_id": "msg_demo",
                    "output_index": 0,
                    "content_index": 0,
                    "text": answer,
                    "logprobs": [],
                }
            )
            + self.ev(
                {
                    "type": "response.content_part.done",
                    "item_id": "msg_demo",
                    "output_index": 0,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": answer, "annotations": []},
                }
            )
            + self.ev({"type": "response.output_item.done", "output_index": 0, "item": _message(answer)})
        )
        final = whole(self.model, answer, {}, prompt_len)
        if "tool" in d:
            call = _call(d)
            args = call["arguments"]
            out += self.ev(
                {
                    "type": "response.output_item.added",
                    "output_index": 1,
                    "item": {**call, "arguments": "", "status": "in_progress"},
                }
            )
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                out += self.ev(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": "fc_demo",
                        "output_index": 1,
                        "delta": part,
                    }
                )
            out += self.ev(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": "fc_demo",
                    "output_index": 1,
                    "arguments": args,
                }
            )
            out += self.ev({"type": "response.output_item.done", "output_index": 1, "item": call})
            final["output"].append(call)
        return out + self.ev({"type": "response.completed", "response": final})
