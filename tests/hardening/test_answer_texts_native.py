"""Attack on the running proxy: model text in every place a native Responses or Anthropic Messages answer
carries it, beyond the output text and tool arguments (issue 21, "No bypass").

A model server (tests/hardening/raw_upstream.py, bytes written by hand in each API's exact shapes) puts a
secret the shipped denylist redacts in answers (an AWS access key, split across two stream deltas where
it streams) into: Responses reasoning summaries and reasoning text, refusals, an output item of a type no
reference lists yet; Anthropic citations, a server tool's input, a thinking block or tool input given
whole in its ``content_block_start``, a block of a type no reference lists. Whole and streamed, through the
official SDKs: none of it may reach the client unscreened. Opaque fields (``encrypted_content``,
``signature``) pass unchanged: the client sends them back and the upstream checks them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hardening.raw_upstream import fixed, guard_before, responses_answer, responses_events

KEY = "AKIAIOSFODNN7EXAMPLE"
HALF1, HALF2 = KEY[:9], KEY[9:]
MARK = "[REDACTED:aws_access_key_id]"
OPAQUE = "gAAAAB" + KEY  # an opaque blob that happens to hold the pattern: must pass as it is


def _no_key(text: str) -> None:
    assert KEY not in text.replace(OPAQUE, "") and HALF2 not in text.replace(OPAQUE, ""), text


# --- Responses ---------------------------------------------------------------------------------------------


def _reasoning(summary: str, text: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
        "encrypted_content": OPAQUE,
    }
    if text:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    return item


def _message(part: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [part]}


SAID = f"key {KEY}"
OK_PART = {"type": "output_text", "text": "ok", "annotations": []}
REFUSAL = {"type": "refusal", "refusal": SAID}
R_WHOLE = {
    "reasoning-summary": [_reasoning(SAID), _message(OK_PART)],
    "reasoning-text": [_reasoning("", SAID), _message(OK_PART)],
    "refusal": [_message(REFUSAL)],
    "unknown-item": [{"id": "x_1", "type": "x_future_item", "status": "completed", "note": SAID}, _message(OK_PART)],
}


def _summary_stream() -> bytes:
    start = {**_reasoning(""), "summary": []}
    part = {"type": "summary_text", "text": ""}
    ids = {"item_id": "rs_1", "output_index": 0, "summary_index": 0}
    return responses_events(
        {"type": "response.created", "response": responses_answer("in_progress", [])},
        {"type": "response.output_item.added", "output_index": 0, "item": start},
        {"type": "response.reasoning_summary_part.added", **ids, "part": part},
        *({"type": "response.reasoning_summary_text.delta", **ids, "delta": d} for d in ("key ", HALF1, HALF2)),
        {"type": "response.reasoning_summary_text.done", **ids, "text": SAID},
        {"type": "response.reasoning_summary_part.done", **ids, "part": {**part, "text": SAID}},
        {"type": "response.output_item.done", "output_index": 0, "item": _reasoning(SAID)},
        {"type": "response.completed", "response": responses_answer("completed", [_reasoning(SAID)])},
    )


def _refusal_stream() -> bytes:
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return responses_events(
        {"type": "response.created", "response": responses_answer("in_progress", [])},
        {"type": "response.output_item.added", "output_index": 0, "item": {**_message(REFUSAL), "content": []}},
        {"type": "response.content_part.added", **ids, "part": {"type": "refusal", "refusal": ""}},
        *({"type": "response.refusal.delta", **ids, "delta": d} for d in ("key ", HALF1, HALF2)),
        {"type": "response.refusal.done", **ids, "refusal": SAID},
        {"type": "response.content_part.done", **ids, "part": REFUSAL},
        {"type": "response.output_item.done", "output_index": 0, "item": _message(REFUSAL)},
        {"type": "response.completed", "response": responses_answer("completed", [_message(REFUSAL)])},
    )


R_STREAM = {"reasoning-summary": _summary_stream(), "refusal": _refusal_stream()}

# --- Anthropic Messages ------------------------------------------------------------------------------------


def _amsg(content: list[Any]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "a-m",
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


CITED = {
    "type": "text",
    "text": "as the file says",
    "citations": [
        {
            "type": "char_location",
            "cited_text": SAID,
            "document_index": 0,
            "document_title": "notes",
            "start_char_index": 0,
            "end_char_index": 24,
        }
    ],
}
A_WHOLE = {
    "citation": [CITED],
    "server-tool": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": SAID}},
        {"type": "text", "text": "found nothing"},
    ],
    "unknown-block": [{"type": "x_future_block", "note": SAID}, {"type": "text", "text": "ok"}],
    "signature": [{"type": "thinking", "thinking": "fine", "signature": OPAQUE}, {"type": "text", "text": "ok"}],
}


def _astream(*blocks: tuple[dict[str, Any], list[dict[str, Any]]]) -> bytes:
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {**_amsg([]), "stop_reason": None}}]
    for i, (start, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


A_STREAM = {
    "thinking-in-start": _astream(
        ({"type": "thinking", "thinking": SAID, "signature": ""}, [{"type": "signature_delta", "signature": OPAQUE}]),
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "ok"}]),
    ),
    "tool-input-in-start": _astream(({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"k": SAID}}, [])),
    "citation-delta": _astream(
        (
            {"type": "text", "text": ""},
            [
                {"type": "citations_delta", "citation": CITED["citations"][0]},
                {"type": "text_delta", "text": "as the file says"},
            ],
        )
    ),
}


HANDLERS = {
    **{
        f"r-w-{k}": fixed(json.dumps(responses_answer("completed", v)).encode(), b"application/json")
        for k, v in R_WHOLE.items()
    },
    **{f"r-s-{k}": fixed(v, b"text/event-stream") for k, v in R_STREAM.items()},
    **{f"a-w-{k}": fixed(json.dumps(_amsg(v)).encode(), b"application/json") for k, v in A_WHOLE.items()},
    **{f"a-s-{k}": fixed(v, b"text/event-stream") for k, v in A_STREAM.items()},
}


@pytest.fixture(scope="module")
def native(pki_dir: Any, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    routes = [("r-*", {"api": "openai", "responses": "native"}), ("a-*", {"api": "anthropic"})]
    with guard_before(HANDLERS, pki_dir, model_server[1], tmp_path_factory.mktemp("native"), routes) as g:
        yield g


def _claude(g: Any) -> Any:
    import anthropic
    import httpx2

    return anthropic.Anthropic(
        base_url=g.url,
        api_key="client-secret-key",
        max_retries=0,
        http_client=httpx2.Client(verify=g.ssl_context("staff")),
    )


@pytest.mark.parametrize("case", sorted(R_WHOLE))
def test_every_text_of_a_whole_responses_answer_is_screened(native: Any, case: str) -> None:
    r = native.openai("staff").responses.create(model=f"r-w-{case}", input="hi")
    dumped = r.model_dump_json()
    _no_key(dumped)
    assert MARK in dumped, dumped
    if case.startswith("reasoning"):
        assert r.output[0].encrypted_content == OPAQUE  # opaque: the upstream checks it when sent back


@pytest.mark.parametrize("case", sorted(R_STREAM))
def test_every_text_of_a_streamed_responses_answer_is_screened(native: Any, case: str) -> None:
    """Every event the official SDK hands out, and the final response it assembles."""
    seen = []
    with native.openai("staff").responses.stream(model=f"r-s-{case}", input="hi") as s:
        for e in s:
            seen.append(e.model_dump_json())
        final = s.get_final_response().model_dump_json()
    for text in (*seen, final):
        _no_key(text)
    assert MARK in final, final
    if case == "reasoning-summary":
        deltas = "".join(json.loads(e).get("delta", "") for e in seen if '"response.reasoning_summary_text.delta"' in e)
        assert deltas == f"key {MARK}", deltas


@pytest.mark.parametrize("case", sorted(A_WHOLE))
def test_every_text_of_a_whole_anthropic_answer_is_screened(native: Any, case: str) -> None:
    m = _claude(native).messages.create(
        model=f"a-w-{case}", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    dumped = m.model_dump_json()
    _no_key(dumped)
    if case == "signature":
        assert m.content[0].signature == OPAQUE, dumped
    else:
        assert MARK in dumped, dumped


@pytest.mark.parametrize("case", sorted(A_STREAM))
def test_every_text_of_a_streamed_anthropic_answer_is_screened(native: Any, case: str) -> None:
    with _claude(native).messages.stream(
        model=f"a-s-{case}", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        seen = [e.model_dump_json() for e in s]
        final = s.get_final_message()
    for text in (*seen, final.model_dump_json()):
        _no_key(text)
    assert MARK in final.model_dump_json(), final
    if case == "thinking-in-start":
        assert final.content[0].signature == OPAQUE, final
    if case == "tool-input-in-start":
        assert final.content[0].input == {"k": f"key {MARK}"}, final
