"""Bypass families attacked through the running proxy, beyond the named fields (issue 21, "No bypass").

Answer side: a model server (tests/hardening/raw_upstream.py, bytes written by hand) puts a secret that the
shipped denylist redacts in answers (an AWS access key) into every other place an answer may carry model
text: ``refusal``, ``reasoning_content`` / ``reasoning``, content as an array of parts, ``audio.transcript``,
``function_call.arguments``, annotations, a field no reference lists, Ollama's ``thinking`` and streamed
tool calls, and ``logprobs`` (the answer again, token by token), whole and streamed. None of it may reach
the client unscreened.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hardening.conftest import error_field
from tests.hardening.raw_upstream import fixed, guard_before, response, responses_answer, responses_events

KEY = "AKIAIOSFODNN7EXAMPLE"  # the shipped denylist redacts it in answers
HALF1, HALF2 = KEY[:9], KEY[9:]  # a key split across two tokens / stream chunks
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CHAT = "/v1/chat/completions"


def _chat(message: dict[str, Any], top: dict[str, Any] | None = None, **choice: Any) -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            **(top or {}),
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop", **choice}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def _logprobs(*tokens: str) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t,
                "logprob": -0.1,
                "bytes": list(t.encode()),
                "top_logprobs": [{"token": t, "logprob": -0.1, "bytes": list(t.encode())}],
            }
            for t in tokens
        ]
    }


WHOLE = {
    "refusal": _chat({"content": None, "refusal": f"I will not say {KEY}"}),
    "reasoning_content": _chat({"content": "ok", "reasoning_content": f"the key is {KEY}"}),
    "reasoning": _chat({"content": "ok", "reasoning": f"the key is {KEY}"}),
    "content-parts": _chat({"content": [{"type": "text", "text": f"the key is {KEY}"}]}),
    "audio-transcript": _chat(
        {"content": None, "audio": {"id": "a1", "data": "", "expires_at": 0, "transcript": f"the key is {KEY}"}}
    ),
    "function-call": _chat({"content": None, "function_call": {"name": "f", "arguments": json.dumps({"k": KEY})}}),
    "annotations": _chat(
        {
            "content": "ok",
            "annotations": [
                {"type": "url_citation", "url_citation": {"title": f"key {KEY}", "url": "https://example.com/"}}
            ],
        }
    ),
    "unknown-field": _chat({"content": "ok", "x_debug": f"key {KEY}"}),
    "unknown-top": _chat({"content": "ok"}, top={"x_trace": f"key {KEY}"}),
    # a key given twice: Guard's parser reads the last value, some clients (simdjson on-demand, jsmn) the first
    "duplicate-key": _chat({"content": "ok"}).replace(
        b'"content": "ok"', f'"content": "key {KEY}", "content": "ok"'.encode()
    ),
    "logprobs": _chat({"content": f"the key is {KEY}"}, logprobs=_logprobs("the key is ", HALF1, HALF2)),
    "completion-logprobs": json.dumps(
        {
            "id": "c1",
            "object": "text_completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "text": f"key {KEY}",
                    "finish_reason": "stop",
                    "logprobs": {
                        "tokens": ["key ", HALF1, HALF2],
                        "token_logprobs": [-0.1, -0.1, -0.1],
                        "top_logprobs": [{HALF1: -0.1}],
                        "text_offset": [0, 4, 13],
                    },
                }
            ],
        }
    ).encode(),
}


def _sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _delta(delta: dict[str, Any], finish: str | None = None, **choice: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice}],
    }


STREAMED = {
    "reasoning_content": _sse(
        _delta({"role": "assistant", "reasoning_content": "the key is "}),
        _delta({"reasoning_content": HALF1}),
        _delta({"reasoning_content": HALF2}),
        _delta({"content": "ok"}),
        _delta({}, "stop"),
    ),
    "refusal": _sse(
        _delta({"role": "assistant", "refusal": "no: "}),
        _delta({"refusal": HALF1}),
        _delta({"refusal": HALF2}),
        _delta({}, "stop"),
    ),
    "logprobs": _sse(
        _delta({"role": "assistant", "content": HALF1}, logprobs=_logprobs(HALF1)),
        _delta({"content": HALF2}, logprobs=_logprobs(HALF2)),
        _delta({}, "stop"),
    ),
    "unknown-top": _sse(
        {**_delta({"role": "assistant", "content": "ok"}), "x_trace": f"key {KEY}"}, _delta({}, "stop")
    ),
    "tool-name": _sse(
        _delta(
            {
                "role": "assistant",
                "tool_calls": [
                    {"index": 0, "id": "t1", "type": "function", "function": {"name": f"f-{KEY}", "arguments": ""}}
                ],
            }
        ),
        _delta({}, "tool_calls"),
    ),
}


def _ndjson(*chunks: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(c).encode() + b"\n" for c in chunks)


def _o(message: dict[str, Any] | None = None, done: bool = False, **top: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "o-m", "created_at": "2025-01-01T00:00:00Z", "done": done, **top}
    if message is not None:
        out["message"] = {"role": "assistant", "content": "", **message}
    return out


OLLAMA = {  # (path, stream, answer bytes)
    "thinking": ("/api/chat", False, json.dumps(_o({"content": "ok", "thinking": f"key {KEY}"}, True)).encode()),
    "generate-thinking": (
        "/api/generate",
        False,
        json.dumps(_o(None, True, response="ok", thinking=f"key {KEY}")).encode(),
    ),
    "logprobs": (
        "/api/chat",
        False,
        json.dumps(
            _o(
                {"content": f"key {KEY}"},
                True,
                logprobs=[{"token": HALF1, "logprob": -0.1}, {"token": HALF2, "logprob": -0.1}],
            )
        ).encode(),
    ),
    "generate-context": (
        "/api/generate",
        False,
        json.dumps(_o(None, True, response=f"key {KEY}", context=[1, 2, 3])).encode(),
    ),
    "stream-thinking": (
        "/api/chat",
        True,
        _ndjson(
            _o({"thinking": "key "}),
            _o({"thinking": HALF1}),
            _o({"thinking": HALF2}),
            _o({"content": "ok"}),
            _o({}, True, done_reason="stop"),
        ),
    ),
    "stream-tool-call": (
        "/api/chat",
        True,
        _ndjson(
            _o({"tool_calls": [{"function": {"name": "lookup", "arguments": {"key": KEY}}}]}),
            _o({}, True, done_reason="stop"),
        ),
    ),
    # tool-call arguments given as an object are screened as one JSON text, streamed as whole: a secret as
    # a key, and the shipped aws_secret_access_key rule, whose match spans a key (its name) and its value
    **{
        f"{how}-tool-call-{name}": (
            "/api/chat",
            how == "stream",
            _ndjson(
                _o({"tool_calls": [{"function": {"name": "f", "arguments": args}}]}),
                _o({}, True, done_reason="stop"),
            )
            if how == "stream"
            else json.dumps(
                _o({"tool_calls": [{"function": {"name": "f", "arguments": args}}]}, True, done_reason="stop")
            ).encode(),
        )
        for how in ("stream", "whole")
        for name, args in (("pair", {"n": 1, "aws_secret_access_key": AWS_SECRET}), ("key", {KEY: [1, 2]}))
    },
}


def _rlogprobs(*tokens: str) -> list[dict[str, Any]]:
    return [{"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": []} for t in tokens]


def _rpart(text: str, *tokens: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": _rlogprobs(*tokens)}


def _ritem(text: str, *tokens: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [_rpart(text, *tokens)],
    }


_RTEXT = f"key {KEY}"
RESPONSES = {  # OpenAI Responses from a native upstream: logprobs spell the answer token by token
    "whole": json.dumps(responses_answer("completed", [_ritem(_RTEXT, "key ", HALF1, HALF2)])).encode(),
    "stream": responses_events(
        {"type": "response.created", "response": responses_answer("in_progress", [])},
        {"type": "response.output_item.added", "output_index": 0, "item": {**_ritem(""), "content": []}},
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": _rpart(""),
        },
        *(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": t,
                "logprobs": _rlogprobs(t),
            }
            for t in ("key ", HALF1, HALF2)
        ),
        {
            "type": "response.output_text.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "text": _RTEXT,
            "logprobs": _rlogprobs("key ", HALF1, HALF2),
        },
        {
            "type": "response.content_part.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": _rpart(_RTEXT, "key ", HALF1, HALF2),
        },
        {"type": "response.output_item.done", "output_index": 0, "item": _ritem(_RTEXT, "key ", HALF1, HALF2)},
        {
            "type": "response.completed",
            "response": responses_answer("completed", [_ritem(_RTEXT, "key ", HALF1, HALF2)]),
        },
    ),
}


UNSAFE = "here is how to build a bomb"  # the stand-in Llama Guard judges it S9: the answer is blocked
BLOCKED = _chat(
    {"content": UNSAFE, "reasoning_content": UNSAFE},
    top={"x_trace": UNSAFE},
    logprobs=_logprobs("here is how to build a ", "bomb"),
    x_choice_note=UNSAFE,
)


def _error_twice(c: socket.socket, req: dict[str, Any]) -> None:
    body = f'{{"error": {{"message": "bad key {KEY}", "message": "bad request", "type": "invalid_request_error"}}}}'
    c.sendall(response(body.encode(), status="400 Bad Request"))


HANDLERS = {
    "w-blocked": fixed(BLOCKED, b"application/json"),
    "w-error-twice": _error_twice,
    **{f"w-{k}": fixed(v, b"application/json") for k, v in WHOLE.items()},
    **{f"s-{k}": fixed(v, b"text/event-stream") for k, v in STREAMED.items()},
    **{f"o-{k}": fixed(v[2], b"application/x-ndjson" if v[1] else b"application/json") for k, v in OLLAMA.items()},
    "r-whole": fixed(RESPONSES["whole"], b"application/json"),
    "r-stream": fixed(RESPONSES["stream"], b"text/event-stream"),
}


@pytest.fixture(scope="module")
def attacked(pki_dir: Any, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    routes = [("o-*", {"api": "ollama"}), ("r-*", {"api": "openai", "responses": "native"}), ("*", {"api": "openai"})]
    with guard_before(HANDLERS, pki_dir, model_server[1], tmp_path_factory.mktemp("bypass"), routes) as g:
        yield g


@pytest.fixture
def raw_requests(attacked: Any) -> list[Any]:
    return attacked.extra["raw"].requests


def _no_key(text: str) -> None:
    assert KEY not in text and HALF2 not in text and AWS_SECRET not in text.replace("\\/", "/"), text


@pytest.mark.parametrize("case", sorted(WHOLE))
def test_every_text_of_a_whole_answer_is_screened(attacked: Any, case: str) -> None:
    path, body = (
        ("/v1/completions", {"prompt": "hi"})
        if case.startswith("completion")
        else (CHAT, {"messages": [{"role": "user", "content": "hi"}]})
    )
    with attacked.client("staff") as c:
        r = c.post(path, json={"model": f"w-{case}", **body})
    assert r.status_code == 200, r.text
    _no_key(r.text)
    assert r.json()["choices"], r.text  # still an answer, in its own shape


@pytest.mark.parametrize("case", sorted(STREAMED))
def test_every_text_of_a_streamed_answer_is_screened(attacked: Any, case: str) -> None:
    with attacked.client("staff") as c:
        r = c.post(CHAT, json={"model": f"s-{case}", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.text.rstrip().endswith("data: [DONE]"), r.text
    pieces = "".join(json.dumps(json.loads(ln[6:])) for ln in r.text.splitlines() if ln.startswith("data: {"))
    chunks = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    joined: dict[str, str] = {}
    for ch in chunks:
        for choice in ch["choices"]:
            for k, v in (choice.get("delta") or {}).items():
                if isinstance(v, str):
                    joined[k] = joined.get(k, "") + v
    _no_key(pieces)
    for text in joined.values():
        _no_key(text)


def test_the_streamed_openai_sdk_sees_no_secret_in_reasoning(attacked: Any) -> None:
    client = attacked.openai("staff")
    seen = ""
    for chunk in client.chat.completions.create(
        model="s-reasoning_content", stream=True, messages=[{"role": "user", "content": "hi"}]
    ):
        for ch in chunk.choices:
            seen += (ch.delta.model_extra or {}).get("reasoning_content") or ""
    assert seen.startswith("the key is "), seen
    _no_key(seen)


@pytest.mark.parametrize("case", sorted(OLLAMA))
def test_every_text_of_an_ollama_answer_is_screened(attacked: Any, case: str) -> None:
    path, stream, _ = OLLAMA[case]
    body: dict[str, Any] = {"model": f"o-{case}", "stream": stream}
    if path == "/api/chat":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    with attacked.client("staff") as c:
        r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    lines = [json.loads(ln) for ln in r.text.splitlines() if ln.strip()]
    assert lines and lines[-1]["done"] is True, r.text
    _no_key(r.text)
    if case == "generate-context":
        assert "context" not in lines[-1], lines[-1]  # token ids of the unredacted answer
    thinking = "".join((ln.get("message") or {}).get("thinking") or ln.get("thinking") or "" for ln in lines)
    _no_key(thinking)
    if case.endswith(("-pair", "-key")):  # written back as the object it was, each value redacted in place
        [args] = [
            tc["function"]["arguments"] for ln in lines for tc in (ln.get("message") or {}).get("tool_calls") or []
        ]
        mark = "[REDACTED:aws_secret_access_key]" if case.endswith("-pair") else "[REDACTED:aws_access_key_id]"
        assert args == ({"n": 1, mark: mark} if case.endswith("-pair") else {mark: [1, 2]}), args


@pytest.mark.parametrize("case", sorted(RESPONSES))
def test_responses_logprobs_do_not_spell_out_a_redacted_answer(attacked: Any, case: str) -> None:
    """A native Responses upstream returns token log probabilities (the client asked with ``include``): they
    repeat the answer token by token, so they are emptied, whole and in every streamed event."""
    with attacked.client("staff") as c:
        r = c.post("/v1/responses", json={"model": f"r-{case}", "input": "hi", "stream": case == "stream"})
    assert r.status_code == 200, r.text
    _no_key(r.text)
    if case == "whole":
        part = r.json()["output"][0]["content"][0]
        assert part["text"].startswith("key ") and part["logprobs"] == [], part
    else:
        evs = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
        assert evs[-1]["type"] == "response.completed", evs[-1]
        assert all(not e.get("logprobs") for e in evs)
        assert "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta").startswith("key ")


def test_a_blocked_answer_keeps_no_other_text(attacked: Any) -> None:
    with attacked.client("staff") as c:
        r = c.post(CHAT, json={"model": "w-blocked", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter", r.text
    assert "bomb" not in r.text, r.text


def test_an_error_body_goes_out_as_judged(attacked: Any) -> None:
    with attacked.client("staff") as c:
        r = c.post(CHAT, json={"model": "w-error-twice", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    _no_key(r.text)
    assert r.json()["error"]["message"] == "bad request"


@pytest.mark.parametrize(
    "extra",
    [
        {"modalities": ["text", "audio"]},
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        {"audio": {"voice": "alloy", "format": "wav"}},
    ],
)
def test_a_spoken_answer_cannot_be_screened_and_is_refused(
    attacked: Any, raw_requests: list[Any], extra: dict[str, Any]
) -> None:
    n = len(raw_requests)
    with attacked.client("staff") as c:
        r = c.post(CHAT, json={"model": "w-reasoning", "messages": [{"role": "user", "content": "hi"}], **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unscreenable_input", r.text
    assert len(raw_requests) == n


# --- request side: parameters the upstream receives ---------------------------------------------------------

PARAMS = {  # path, body fields carrying the secret (parameters, not model context; fields.SENT_PARAMETERS)
    "stop": (CHAT, {"stop": ["\n\n", f"key {KEY}"]}),
    "stop-string": ("/v1/completions", {"stop": f"key {KEY}"}),
    "user": (CHAT, {"user": f"key {KEY}"}),
    "safety_identifier": (CHAT, {"safety_identifier": f"key {KEY}"}),
    "prompt_cache_key": (CHAT, {"prompt_cache_key": f"key {KEY}"}),
    "metadata": (CHAT, {"metadata": {"note": f"key {KEY}"}, "store": True}),
    "tool_choice": (
        CHAT,
        {
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            "tool_choice": {"type": "function", "function": {"name": f"key {KEY}"}},
        },
    ),
    "web_search_location": (
        CHAT,
        {
            "web_search_options": {
                "user_location": {"type": "approximate", "approximate": {"city": f"key {KEY}", "country": "DE"}}
            }
        },
    ),
    "tool_call_id": (
        CHAT,
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": f"call {KEY}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": f"call {KEY}", "content": "42"},
            ]
        },
    ),
    "ollama-tool_call_id": (
        "/api/chat",
        {
            "stream": False,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": f"call {KEY}", "content": "42"},
            ],
        },
    ),
    "embeddings-user": ("/v1/embeddings", {"user": f"key {KEY}"}),
    "ollama-stop": ("/api/chat", {"options": {"stop": [f"key {KEY}"]}, "stream": False}),
}


@pytest.mark.parametrize("case", sorted(PARAMS))
def test_text_parameters_sent_upstream_are_screened(attacked: Any, raw_requests: list[Any], case: str) -> None:
    path, extra = PARAMS[case]
    base: dict[str, Any] = {"model": "o-thinking" if path.startswith("/api") else "w-reasoning"}
    if path in (CHAT, "/api/chat"):
        base["messages"] = [{"role": "user", "content": "hi"}]
    elif path == "/v1/completions":
        base["prompt"] = "hi"
    else:
        base["input"] = "hi"
    n = len(raw_requests)
    with attacked.client("staff") as c:
        r = c.post(path, json={**base, **extra})
    assert r.status_code == 400, r.text
    assert error_field(r) == "secret_blocked", r.text
    assert len(raw_requests) == n  # never reached the model server


# --- request targets, methods and encodings (closed: kept as regression cases) ------------------------------


def _raw(g: Any, target: bytes, method: bytes = b"POST", extra: bytes = b"", body: bytes | None = None) -> bytes:
    from tests.hardening.conftest import tls_socket

    body = (
        body
        if body is not None
        else json.dumps({"model": "w-reasoning", "messages": [{"role": "user", "content": "hi"}]}).encode()
    )
    s = tls_socket(g.url, g.ssl_context("staff"))
    s.sendall(
        b"%s %s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s\r\n%s" % (method, target, len(body), extra, body)
    )
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/chat/completions/",
        b"//v1/chat/completions",
        b"/V1/chat/completions",
        b"/v1/./chat/completions",
        b"/v1/x/../chat/completions",
        b"/v1/chat/completions;x",
        b"/v1/chat/completions%00",
    ],
)
def test_path_variants_are_not_routes(attacked: Any, raw_requests: list[Any], target: bytes) -> None:
    n = len(raw_requests)
    out = _raw(attacked, target)
    assert out.startswith(b"HTTP/1.1 404"), out[:200]
    assert len(raw_requests) == n


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/chat/completions?api-version=2099-01-01&stream=true",
        b"/v1/chat%2Fcompletions",
        b"/%761/chat/completions?x=1",
    ],
)
def test_a_query_string_or_encoded_path_never_reaches_the_upstream(
    attacked: Any, raw_requests: list[Any], target: bytes
) -> None:
    n = len(raw_requests)
    out = _raw(attacked, target)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    assert [r["line"] for r in raw_requests[n:]] == ["POST /v1/chat/completions HTTP/1.1"]


@pytest.mark.parametrize("method", [b"HEAD", b"PUT", b"PATCH", b"GET", b"DELETE", b"OPTIONS"])
def test_other_methods_are_not_routes(attacked: Any, raw_requests: list[Any], method: bytes) -> None:
    n = len(raw_requests)
    out = _raw(attacked, b"/v1/chat/completions", method, extra=b"x-http-method-override: POST\r\n")
    assert out.startswith(b"HTTP/1.1 404"), out[:200]
    assert len(raw_requests) == n


def test_compressed_bodies_are_refused_not_forwarded(attacked: Any, raw_requests: list[Any]) -> None:
    import gzip
    import zlib

    body = json.dumps({"model": "w-reasoning", "messages": [{"role": "user", "content": f"key {KEY}"}]}).encode()
    n = len(raw_requests)
    for coding, data in ((b"gzip", gzip.compress(body)), (b"deflate", zlib.compress(body))):
        out = _raw(attacked, b"/v1/chat/completions", extra=b"content-encoding: %s\r\n" % coding, body=data)
        assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert len(raw_requests) == n
