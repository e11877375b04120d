"""Every field that reaches the model's context is screened, or refused: walked from guard.apis.fields.

``CONTEXT_FIELDS`` (made from the per-API field tables) is the one list; ``SAMPLES`` below must have a
request for each of its rows, so a field added to the tables cannot go untested. Against the running proxy,
with the shipped denylist and PII profile:

* screened fields: an AWS access key or a PEM private-key header placed there is refused (400
  ``secret_blocked``, never reaching the model server), and the audit record says in which kind of field
  the denylist found it; an e-mail address placed there is pseudonymised, and the upstream receives the
  rewritten body (write-back works for every path);
* fields that cannot be screened (images, audio, files, token ids, Ollama ``context``) are refused with
  400 ``unscreenable_input`` naming the field, and pass only where the upstream allows their kind, marked
  in the audit record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from guard.apis.fields import CONTEXT_FIELDS, UNSCREENABLE, ContextField
from tests.hardening.conftest import error_field, events

AWS = "AKIAIOSFODNN7EXAMPLE"
PEM = "-----BEGIN RSA PRIVATE KEY-----"
EMAIL = "jane.doe@example.com"
CHAT, COMP, EMB = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
OCHAT, OGEN, OEMB = "/api/chat", "/api/generate", "/api/embed"
AMSG = "/v1/messages"
RESP = "/v1/responses"
Body = tuple[str, dict[str, Any], str]  # path, body, the Segment kind the finding is expected in ("" = row's)
Sample = Callable[[str], Body]


def _chat(*msgs: dict[str, Any], kind: str = "", **extra: Any) -> Body:
    return CHAT, {"model": "demo-model", "messages": [*msgs, {"role": "user", "content": "go on"}], **extra}, kind


def _ochat(*msgs: dict[str, Any], kind: str = "", **extra: Any) -> Body:
    return (
        OCHAT,
        {"model": "llama3", "stream": False, "messages": [*msgs, {"role": "user", "content": "go on"}], **extra},
        kind,
    )


def _call(fn: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": fn}]}


def _schema(t: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"q": {"type": "string", "description": t}}, "required": ["q"]}


def _fn(name: str = "lookup", description: str = "looks things up", parameters: Any = None) -> dict[str, Any]:
    return {"name": name, "description": description, "parameters": parameters or _schema("the query")}


def _custom(name: str = "sql", description: str = "runs SQL", grammar: str = "start: /.+/") -> dict[str, Any]:
    return {
        "type": "custom",
        "custom": {
            "name": name,
            "description": description,
            "format": {"type": "grammar", "grammar": {"definition": grammar, "syntax": "lark"}},
        },
    }


def _rf(name: str = "answer", description: str = "the answer", schema: Any = None) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "description": description, "schema": schema or _schema("text")},
    }


def _otool(name: str = "lookup", description: str = "looks things up", parameters: Any = None) -> dict[str, Any]:
    return {"type": "function", "function": _fn(name, description, parameters)}


_USER = {"role": "user", "content": "hi"}
_PNG = "iVBORw0KGgo="


def _amsg(*msgs: dict[str, Any], kind: str = "", **extra: Any) -> Body:
    return (
        AMSG,
        {"model": "claude-demo", "max_tokens": 20, "messages": [*msgs, {"role": "user", "content": "go on"}], **extra},
        kind,
    )


def _ause(name: str = "f", inp: Any = None) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": name, "input": inp or {}}]}


def _aresult(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": content}]}


def _atool(name: str = "lookup", description: str = "looks things up", schema: Any = None, **kw: Any) -> dict[str, Any]:
    return {"name": name, "description": description, "input_schema": schema or _schema("the query"), **kw}


_AIMG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _PNG}}


def _resp(*items: dict[str, Any], kind: str = "", **extra: Any) -> Body:
    return RESP, {"model": "demo-model", "input": [*items, {"role": "user", "content": "go on"}], **extra}, kind


_RCALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}


def _rout(output: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": "c1", "output": output}


def _rtool(name: str = "lookup", description: str = "looks things up", parameters: Any = None) -> dict[str, Any]:
    return {"type": "function", "name": name, "description": description, "parameters": parameters or _schema("q")}


def _rfmt(name: str = "answer", description: str = "the answer", schema: Any = None) -> dict[str, Any]:
    return {
        "format": {"type": "json_schema", "name": name, "description": description, "schema": schema or _schema("text")}
    }


_RIMG = {"type": "input_image", "image_url": f"data:image/png;base64,{_PNG}"}

# Row id (ContextField.id) -> one or more requests carrying the text at that field.
SAMPLES: dict[str, list[Sample]] = {
    "openai chat messages[].content": [
        lambda t: _chat({"role": "user", "content": t}),
        lambda t: _chat({"role": "system", "content": t}, kind="system"),
        lambda t: _chat({"role": "developer", "content": t}, kind="system"),
        lambda t: _chat(_USER, {"role": "assistant", "content": t}),
        lambda t: _chat(
            _USER,
            _call({"name": "f", "arguments": "{}"}),
            {"role": "tool", "tool_call_id": "c1", "content": t},
            kind="tool_result",
        ),
    ],
    "openai chat messages[].content[].text": [
        lambda t: _chat({"role": "user", "content": [{"type": "text", "text": t}]}),
        lambda t: _chat({"role": "system", "content": [{"type": "text", "text": t}]}, kind="system"),
        lambda t: _chat(
            _USER,
            _call({"name": "f", "arguments": "{}"}),
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": t}]},
            kind="tool_result",
        ),
    ],
    "openai chat messages[].content[].refusal": [
        lambda t: _chat(_USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": t}]})
    ],
    "openai chat messages[].content[].image_url": [
        lambda t: _chat(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_PNG}"}}]}
        )
    ],
    "openai chat messages[].content[].input_audio": [
        lambda t: _chat(
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}
        )
    ],
    "openai chat messages[].content[].file": [
        lambda t: _chat(
            {"role": "user", "content": [{"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}}]}
        )
    ],
    "openai chat messages[].name": [lambda t: _chat({"role": "user", "content": "hi", "name": t})],
    "openai chat messages[].tool_calls[].function.name": [
        lambda t: _chat(_USER, _call({"name": t, "arguments": "{}"}))
    ],
    "openai chat messages[].tool_calls[].function.arguments": [
        lambda t: _chat(_USER, _call({"name": "f", "arguments": json.dumps({"q": t})}))
    ],
    "openai chat messages[].tool_calls[].custom.name": [
        lambda t: _chat(
            _USER,
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": t, "input": "x"}}]},
        )
    ],
    "openai chat messages[].tool_calls[].custom.input": [
        lambda t: _chat(
            _USER,
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": "sql", "input": t}}],
            },
        )
    ],
    "openai chat messages[].function_call.name": [
        lambda t: _chat(_USER, {"role": "assistant", "content": None, "function_call": {"name": t, "arguments": "{}"}})
    ],
    "openai chat messages[].function_call.arguments": [
        lambda t: _chat(
            _USER,
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": json.dumps({"q": t})}},
        )
    ],
    "openai chat messages[].refusal": [lambda t: _chat(_USER, {"role": "assistant", "content": None, "refusal": t})],
    "openai chat messages[].audio": [lambda t: _chat(_USER, {"role": "assistant", "audio": {"id": "audio_1"}})],
    "openai chat functions[].name": [lambda t: _chat(_USER, functions=[_fn(name=t)])],
    "openai chat functions[].description": [lambda t: _chat(_USER, functions=[_fn(description=t)])],
    "openai chat functions[].parameters": [lambda t: _chat(_USER, functions=[_fn(parameters=_schema(t))])],
    "openai chat prediction.content": [lambda t: _chat(_USER, prediction={"type": "content", "content": t})],
    "openai chat prediction.content[].text": [
        lambda t: _chat(_USER, prediction={"type": "content", "content": [{"type": "text", "text": t}]})
    ],
    "openai chat response_format.json_schema.name": [lambda t: _chat(_USER, response_format=_rf(name=t))],
    "openai chat response_format.json_schema.description": [lambda t: _chat(_USER, response_format=_rf(description=t))],
    "openai chat response_format.json_schema.schema": [lambda t: _chat(_USER, response_format=_rf(schema=_schema(t)))],
    "openai chat tools[].function.name": [lambda t: _chat(_USER, tools=[_otool(name=t)])],
    "openai chat tools[].function.description": [lambda t: _chat(_USER, tools=[_otool(description=t)])],
    "openai chat tools[].function.parameters": [
        lambda t: _chat(_USER, tools=[_otool(parameters=_schema(t))]),
        lambda t: _chat(_USER, tools=[_otool(parameters={"type": "object", "properties": {t: {"type": "string"}}})]),
    ],
    "openai chat tools[].custom.name": [lambda t: _chat(_USER, tools=[_custom(name=t)])],
    "openai chat tools[].custom.description": [lambda t: _chat(_USER, tools=[_custom(description=t)])],
    "openai chat tools[].custom.format.grammar.definition": [
        lambda t: _chat(_USER, tools=[_custom(grammar=f'start: "{t}"')])
    ],
    "openai completion prompt": [
        lambda t: (COMP, {"model": "demo-model", "prompt": t}, ""),
        lambda t: (COMP, {"model": "demo-model", "prompt": ["hi", t]}, ""),
    ],
    "openai completion prompt (token ids)": [
        lambda t: (COMP, {"model": "demo-model", "prompt": [1, 2, 3]}, ""),
        lambda t: (COMP, {"model": "demo-model", "prompt": [[1, 2], [3]]}, ""),
    ],
    "openai completion suffix": [lambda t: (COMP, {"model": "demo-model", "prompt": "hi", "suffix": t}, "")],
    "openai embeddings input": [
        lambda t: (EMB, {"model": "demo-model", "input": t}, ""),
        lambda t: (EMB, {"model": "demo-model", "input": ["hi", t]}, ""),
    ],
    "openai embeddings input (token ids)": [
        lambda t: (EMB, {"model": "demo-model", "input": [1, 2, 3]}, ""),
        lambda t: (EMB, {"model": "demo-model", "input": [[1, 2], [3]]}, ""),
    ],
    "ollama chat format": [lambda t: _ochat(_USER, format=_schema(t))],
    "ollama chat messages[].content": [
        lambda t: _ochat({"role": "user", "content": t}),
        lambda t: _ochat({"role": "system", "content": t}, kind="system"),
        lambda t: _ochat(_USER, {"role": "tool", "content": t, "tool_name": "f"}, kind="tool_result"),
    ],
    "ollama chat messages[].thinking": [lambda t: _ochat(_USER, {"role": "assistant", "content": "ok", "thinking": t})],
    "ollama chat messages[].images": [lambda t: _ochat({"role": "user", "content": "what?", "images": [_PNG]})],
    "ollama chat messages[].tool_calls[].function.name": [
        lambda t: _ochat(
            _USER, {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": t, "arguments": {}}}]}
        )
    ],
    "ollama chat messages[].tool_calls[].function.arguments": [
        lambda t: _ochat(
            _USER,
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"q": t}}}]},
        )
    ],
    "ollama chat messages[].tool_name": [lambda t: _ochat(_USER, {"role": "tool", "content": "r", "tool_name": t})],
    "ollama chat tools[].function.name": [lambda t: _ochat(_USER, tools=[_otool(name=t)])],
    "ollama chat tools[].function.description": [lambda t: _ochat(_USER, tools=[_otool(description=t)])],
    "ollama chat tools[].function.parameters": [lambda t: _ochat(_USER, tools=[_otool(parameters=_schema(t))])],
    "ollama completion format": [
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": "hi", "format": _schema(t)}, "")
    ],
    "ollama completion prompt": [
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": t}, ""),
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": t, "raw": True}, ""),
    ],
    "ollama completion suffix": [
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": "hi", "suffix": t}, "")
    ],
    "ollama completion system": [
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": "hi", "system": t}, "")
    ],
    "ollama completion template": [
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": "hi", "template": "{{ .Prompt }} " + t}, "")
    ],
    "ollama completion context": [
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": "hi", "context": [1, 2, 3]}, "")
    ],
    "ollama completion images": [
        lambda t: (OGEN, {"model": "llama3", "stream": False, "prompt": "what?", "images": [_PNG]}, "")
    ],
    "ollama embeddings input": [
        lambda t: (OEMB, {"model": "llama3", "input": t}, ""),
        lambda t: (OEMB, {"model": "llama3", "input": ["hi", t]}, ""),
    ],
    "anthropic chat messages[].content": [
        lambda t: _amsg({"role": "user", "content": t}),
        lambda t: _amsg(_USER, {"role": "assistant", "content": t}),
    ],
    "anthropic chat messages[].content[].text": [
        lambda t: _amsg({"role": "user", "content": [{"type": "text", "text": t}]}),
        lambda t: _amsg(_USER, {"role": "assistant", "content": [{"type": "text", "text": t}]}),
    ],
    "anthropic chat messages[].content[].source": [
        lambda t: _amsg({"role": "user", "content": [_AIMG, {"type": "text", "text": "what?"}]})
    ],
    "anthropic chat messages[].content[].name": [lambda t: _amsg(_USER, _ause(name=t), _aresult("ok"))],
    "anthropic chat messages[].content[].input": [lambda t: _amsg(_USER, _ause(inp={"q": t}), _aresult("ok"))],
    "anthropic chat messages[].content[].content": [lambda t: _amsg(_USER, _ause(), _aresult(t), kind="tool_result")],
    "anthropic chat messages[].content[].content[].text": [
        lambda t: _amsg(_USER, _ause(), _aresult([{"type": "text", "text": t}]), kind="tool_result")
    ],
    "anthropic chat messages[].content[].content[].source": [lambda t: _amsg(_USER, _ause(), _aresult([_AIMG]))],
    "anthropic chat messages[].content[].thinking": [
        lambda t: _amsg(
            _USER,
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": t, "signature": "sig"}, {"type": "text", "text": "x"}],
            },
        )
    ],
    "anthropic chat messages[].content[].data": [
        lambda t: _amsg(
            _USER,
            {
                "role": "assistant",
                "content": [{"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "x"}],
            },
        )
    ],
    "anthropic chat system": [lambda t: _amsg(_USER, system=t)],
    "anthropic chat system[].text": [lambda t: _amsg(_USER, system=[{"type": "text", "text": t}])],
    "anthropic chat tools[].name": [lambda t: _amsg(_USER, tools=[_atool(name=t)])],
    "anthropic chat tools[].description": [lambda t: _amsg(_USER, tools=[_atool(description=t)])],
    "anthropic chat tools[].input_schema": [
        lambda t: _amsg(_USER, tools=[_atool(schema=_schema(t))]),
        lambda t: _amsg(_USER, tools=[_atool(schema={"type": "object", "properties": {t: {"type": "string"}}})]),
    ],
    "anthropic chat tools[].input_examples": [lambda t: _amsg(_USER, tools=[_atool(input_examples=[{"q": t}])])],
    "responses chat input": [lambda t: (RESP, {"model": "demo-model", "input": t}, "")],
    "responses chat input[].content": [
        lambda t: _resp({"role": "user", "content": t}),
        lambda t: _resp({"role": "developer", "content": t}, kind="system"),
        lambda t: _resp({"type": "message", "role": "system", "content": t}, kind="system"),
    ],
    "responses chat input[].content[].text": [
        lambda t: _resp({"role": "user", "content": [{"type": "input_text", "text": t}]}),
        lambda t: _resp(_USER, {"role": "assistant", "content": [{"type": "output_text", "text": t}]}),
    ],
    "responses chat input[].content[].refusal": [
        lambda t: _resp(_USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": t}]})
    ],
    "responses chat input[].content[].image_url": [lambda t: _resp({"role": "user", "content": [_RIMG]})],
    "responses chat input[].content[].file_id": [
        lambda t: _resp({"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]})
    ],
    "responses chat input[].content[].file_data": [
        lambda t: _resp(
            {"role": "user", "content": [{"type": "input_file", "file_data": "JVBERi0=", "filename": "a.pdf"}]}
        )
    ],
    "responses chat input[].content[].file_url": [
        lambda t: _resp({"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}]})
    ],
    "responses chat input[].name": [lambda t: _resp(_USER, {**_RCALL, "name": t}, _rout("ok"))],
    "responses chat input[].arguments": [
        lambda t: _resp(_USER, {**_RCALL, "arguments": json.dumps({"q": t})}, _rout("ok"))
    ],
    "responses chat input[].output": [lambda t: _resp(_USER, _RCALL, _rout(t), kind="tool_result")],
    "responses chat input[].output[].text": [
        lambda t: _resp(_USER, _RCALL, _rout([{"type": "input_text", "text": t}]), kind="tool_result")
    ],
    "responses chat input[].output[].image_url": [lambda t: _resp(_USER, _RCALL, _rout([_RIMG]))],
    "responses chat input[].output[].file_id": [
        lambda t: _resp(_USER, _RCALL, _rout([{"type": "input_file", "file_id": "file_1"}]))
    ],
    "responses chat input[].output[].file_data": [
        lambda t: _resp(_USER, _RCALL, _rout([{"type": "input_file", "file_data": "JVBERi0=", "filename": "a.pdf"}]))
    ],
    "responses chat input[].output[].file_url": [
        lambda t: _resp(_USER, _RCALL, _rout([{"type": "input_file", "file_url": "https://x.test/a.pdf"}]))
    ],
    "responses chat instructions": [lambda t: _resp(_USER, instructions=t)],
    "responses chat tools[].name": [lambda t: _resp(_USER, tools=[_rtool(name=t)])],
    "responses chat tools[].description": [lambda t: _resp(_USER, tools=[_rtool(description=t)])],
    "responses chat tools[].parameters": [lambda t: _resp(_USER, tools=[_rtool(parameters=_schema(t))])],
    "responses chat text.format.name": [lambda t: _resp(_USER, text=_rfmt(name=t))],
    "responses chat text.format.description": [lambda t: _resp(_USER, text=_rfmt(description=t))],
    "responses chat text.format.schema": [lambda t: _resp(_USER, text=_rfmt(schema=_schema(t)))],
    "anthropic chat output_config.format.schema": [
        lambda t: _amsg(_USER, output_config={"format": {"type": "json_schema", "schema": _schema(t)}})
    ],
}

SCREENED = [r for r in CONTEXT_FIELDS if r.screened]
REFUSED = [r for r in CONTEXT_FIELDS if not r.screened]


def test_every_listed_field_has_a_sample() -> None:
    ids = [r.id for r in CONTEXT_FIELDS]
    assert len(ids) == len(set(ids))
    assert set(SAMPLES) == set(ids), {"no sample": set(ids) - set(SAMPLES), "not listed": set(SAMPLES) - set(ids)}


def test_the_threat_model_lists_every_field() -> None:
    """docs/threat-model.md's "Fields that reach the model" table has exactly the rows of CONTEXT_FIELDS."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "threat-model.md").read_text()
    section = doc.split("### Fields that reach the model", 1)[1].split("\n### ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[2].startswith("`"):
            refused = cells[3].startswith("refused")
            rows.add((cells[0], cells[1], cells[2].strip("`"), refused))
    want = {
        (r.api, r.operation, r.path + (" (token ids)" if r.kind == "token_ids" else ""), not r.screened)
        for r in CONTEXT_FIELDS
    }
    assert rows == want, {"missing": want - rows, "extra": rows - want}


def test_samples_put_the_text_where_the_row_says() -> None:
    """Offline check of the adapters against the table: each sample's text comes out as a Segment of the
    row's kind (screened rows), or as the row's unscreenable kind (refused rows)."""
    from guard.apis import ROUTES, fields
    from guard.apis.wire import WIRE as apis

    for row in CONTEXT_FIELDS:
        for sample in SAMPLES[row.id]:
            path, body, kind = sample("MARKER-TEXT")
            api, op = ROUTES[("POST", path)]
            assert (api, op) == (row.api, row.operation), row.id
            assert fields.check(api, op, body) == [], row.id
            if row.screened:
                segs = [s for s in apis[api].prompt_segments(op, body) if "MARKER-TEXT" in s.text]
                assert [s.kind for s in segs] == [kind or row.kind], (row.id, segs)
            else:
                assert [k for k, _ in apis[api].unscreened(op, body)] == [row.kind], row.id


def _principal(g: Any) -> Any:
    return g.client("prod-workload")  # the shipped policy lets prod workloads use any operation


def _denied_screens(audit_dir: Any, rids: set[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        found = {
            e["request_id"]: e
            for e in events(audit_dir)
            if e.get("type") == "exchange.denied" and e.get("request_id") in rids
        }
        if set(found) == rids or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("row", SCREENED, ids=lambda r: r.id)
def test_a_secret_in_a_screened_field_is_caught(guard: Any, model_server: Any, row: ContextField) -> None:
    seen: dict[str, str] = {}
    with _principal(guard) as c:
        for sample in SAMPLES[row.id]:
            for secret in (AWS, PEM):
                path, body, kind = sample(secret)
                r = c.post(path, json=body)
                assert r.status_code == 400, (row.id, secret, r.status_code, r.text)
                assert error_field(r) == "secret_blocked", (row.id, r.text)
                seen[r.headers["x-guard-request-id"]] = kind or row.kind
    sent = {q["headers"].get("x-guard-request-id") for q in model_server[0].requests}
    assert not set(seen) & sent
    denied = _denied_screens(guard.config.audit.dir, set(seen))
    for rid, kind in seen.items():
        deny = [s for s in denied[rid]["screens"] if s["name"] == "denylist"]
        assert deny and deny[0]["blocked"] and deny[0]["fields"] == [kind], (row.id, deny)


@pytest.mark.parametrize("row", SCREENED, ids=lambda r: r.id)
def test_a_rewrite_in_a_screened_field_reaches_the_upstream(guard: Any, model_server: Any, row: ContextField) -> None:
    with _principal(guard) as c:
        for sample in SAMPLES[row.id]:
            path, body, _ = sample(EMAIL)
            r = c.post(path, json=body)
            assert r.status_code == 200, (row.id, r.text)
            rid = r.headers["x-guard-request-id"]
            got = next(q for q in reversed(model_server[0].requests) if q["headers"].get("x-guard-request-id") == rid)
            assert EMAIL not in got["raw"] and "<EMAIL_ADDRESS_1>" in got["raw"], (row.id, got["raw"])


@pytest.mark.parametrize("row", REFUSED, ids=lambda r: r.id)
def test_an_unscreenable_field_is_refused_by_default(guard: Any, model_server: Any, row: ContextField) -> None:
    with _principal(guard) as c:
        for sample in SAMPLES[row.id]:
            path, body, _ = sample("")
            r = c.post(path, json=body)
            assert r.status_code == 400 and error_field(r) == "unscreenable_input", (row.id, r.text)
            assert error_field(r, "param").startswith("$." + row.path.split("[")[0].split(".")[0])
            assert row.kind in error_field(r, "message")
            sent = {q["headers"].get("x-guard-request-id") for q in model_server[0].requests}
            assert r.headers["x-guard-request-id"] not in sent


def test_unscreenable_fields_pass_where_allowed_and_are_marked(guard_factory: Any, model_server: Any) -> None:
    ups = {
        name: {"url": model_server[1], "api": api, "timeout_s": 10, "allow_unscreened": list(UNSCREENABLE)}
        for name, api in (("local", "openai"), ("ollama", "ollama"), ("anthropic", "anthropic"))
    }
    g = guard_factory(upstreams=ups)
    rids: dict[str, str] = {}
    with _principal(g) as c:
        for row in REFUSED:
            for sample in SAMPLES[row.id]:
                path, body, _ = sample("")
                r = c.post(path, json=body)
                assert r.status_code == 200, (row.id, r.text)
                rids[r.headers["x-guard-request-id"]] = row.kind
    deadline = time.monotonic() + 5
    while True:
        started = {
            e["request_id"]: e
            for e in events(g.config.audit.dir)
            if e.get("type") == "exchange.started" and e.get("request_id") in rids
        }
        if set(started) == set(rids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for rid, kind in rids.items():
        marks = [s for s in started[rid]["screens"] if s["name"] == "unscreened"]
        assert len(marks) == 1 and marks[0]["categories"] == [kind] and marks[0]["status"] == "skipped", marks


def test_a_rewrite_that_breaks_a_json_field_refuses_the_request() -> None:
    """A screen rewrite that leaves a JSON field (a schema, Ollama tool arguments) invalid JSON cannot be
    forwarded as judged: the request is refused (400 ``rewrite_failed``), never sent half-rewritten."""
    from guard.apis import openai
    from guard.errors import GuardError
    from guard.stages.decide import write_back as _write_back

    _, body, _ = SAMPLES["openai chat tools[].function.parameters"][0]("x")
    segs = [s for s in openai.prompt_segments("chat", body) if s.path[-1] == "__json__"]
    before = [s.text for s in segs]
    segs[0].text = segs[0].text[:-1] + " [REDACTED"  # a redaction that ate the closing brace
    with pytest.raises(GuardError) as e:
        _write_back(body, segs, before)
    assert (e.value.status, e.value.code) == (400, "rewrite_failed")
