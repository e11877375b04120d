"""Cost of request canonicalisation per request, in-process: what Guard does to a body before screening.

  plain      json.loads(raw), the raw bytes forwarded (what a lax proxy does)
  strict     strictjson.loads alone (the reader; with its C object hook when built)
  canonical  strictjson.loads (duplicate / case-equal keys, NaN, overflow, lone surrogates refused)
             + fields.check (known fields per API) + unscreened-input scan + strictjson.dumps (the body
             the upstream receives is serialised from the judged object)

Bodies: a one-message chat, a tool-using chat (12 messages, 4 tools with JSON schemas, response_format),
an Ollama generate. Alternating rounds, median per variant; reported as microseconds per request and the
ratio canonical / plain measured in the same run.
Run: python -m tests.bench.bench_canonical   (or BENCH_ONLY=canonical python -m tests.bench.run)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from guard.apis import fields, ollama, openai, strictjson

SMALL = b'{"model":"bench-model","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16}'


def _tools_chat() -> bytes:
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": f"parameter {i}"} for i in range(6)},
        "required": ["p0"],
    }
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant. " * 8}]
    for i in range(5):
        msgs.append({"role": "user", "content": f"Question {i}: " + "what is the weather like today? " * 6})
        msgs.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": f"c{i}", "type": "function", "function": {"name": "weather", "arguments": '{"p0":"Paris"}'}}
                ],
            }
        )
    msgs.append({"role": "tool", "tool_call_id": "c4", "content": "sunny, 21 C"})
    body = {
        "model": "bench-model",
        "messages": msgs,
        "temperature": 0.2,
        "seed": 7,
        "stream": False,
        "tools": [
            {
                "type": "function",
                "function": {"name": f"tool{i}", "description": "does things " * 5, "parameters": schema},
            }
            for i in range(4)
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    return json.dumps(body).encode()


GENERATE = json.dumps(
    {
        "model": "llama3",
        "prompt": "Why is the sky blue? " * 10,
        "system": "Be brief.",
        "stream": False,
        "options": {"temperature": 0.1, "num_ctx": 4096},
    }
).encode()
BODIES = {
    "chat_small": ("openai", "chat", SMALL),
    "chat_tools": ("openai", "chat", _tools_chat()),
    "ollama_generate": ("ollama", "completion", GENERATE),
}
APIS = {"openai": openai, "ollama": ollama}


def plain(api: str, op: str, raw: bytes) -> bytes:
    json.loads(raw)
    return raw


def strict(api: str, op: str, raw: bytes) -> bytes:
    strictjson.loads(raw)
    return raw


def canonical(api: str, op: str, raw: bytes) -> bytes:
    body = strictjson.loads(raw)
    fields.check(api, op, body)
    APIS[api].unscreened(op, body)
    return strictjson.dumps(body)


def _per_request_us(fn: Any, api: str, op: str, raw: bytes, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn(api, op, raw)
    return (time.perf_counter() - t) / n * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    n, rounds = (2000, 3) if quick else (10000, 7)
    out: dict[str, Any] = {"n": n, "rounds": rounds}
    for name, (api, op, raw) in BODIES.items():
        times: dict[str, list[float]] = {"plain": [], "strict": [], "canonical": []}
        for _ in range(rounds):
            for label, fn in (("plain", plain), ("strict", strict), ("canonical", canonical)):
                times[label].append(_per_request_us(fn, api, op, raw, n))
        p, s, c = (statistics.median(times[k]) for k in ("plain", "strict", "canonical"))
        out[name] = {
            "bytes": len(raw),
            "plain_us": round(p, 2),
            "strict_us": round(s, 2),
            "canonical_us": round(c, 2),
            "strict_ratio": round(s / p, 2),
            "canonical_ratio": round(c / p, 2),
            "added_us": round(c - p, 2),
        }
    out["c_hook"] = strictjson._pairs_c is not strictjson._pairs
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
