"""What Guard judges is what the upstream parses: attacks on request canonicalisation, against the running proxy.

Model servers read JSON differently (Go's encoding/json, used by Ollama, matches keys ignoring case with
Unicode folding and keeps the last duplicate; other parsers keep the first, or choke on NaN and lone
surrogates). Each body below would let a server read a model, messages or content Guard never judged:
each is refused with 400 in the OpenAI error shape, naming the JSON path in ``param``, has its
``exchange.denied`` record, and never reaches the model server. What is allowed reaches the upstream as
Guard's own serialisation of the object it judged, never as the client's bytes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from guard.apis import strictjson
from tests.hardening.conftest import error_field, events, metric

CHAT = "/v1/chat/completions"
OK_MSG = '[{"role":"user","content":"hello"}]'
AWS = "AKIAIOSFODNN7EXAMPLE"

# name -> (path, raw body, code, param)
REFUSED: dict[str, tuple[str, bytes, str, str | None]] = {
    "duplicate model": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"model":"internal-x"}' % OK_MSG.encode(),
        "duplicate_key",
        "$.model",
    ),
    "Model beside model": (
        CHAT,
        b'{"model":"demo-model","Model":"internal-x","messages":%s}' % OK_MSG.encode(),
        "ambiguous_key",
        "$.Model",
    ),
    "MESSAGES alone": (CHAT, b'{"model":"demo-model","MESSAGES":%s}' % OK_MSG.encode(), "ambiguous_key", "$.MESSAGES"),
    "messages beside MESSAGES": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"MESSAGES":[{"role":"user",'
        b'"content":"%s"}]}' % (OK_MSG.encode(), AWS.encode()),
        "ambiguous_key",
        "$.MESSAGES",
    ),
    "long s folds to s (Go)": (
        CHAT,
        '{"model":"demo-model","meſſages":%s}'.replace("%s", OK_MSG).encode(),
        "ambiguous_key",
        '$["meſſages"]',
    ),
    "Kelvin sign folds to k": (
        CHAT,
        '{"model":"demo-model","messages":%s,"max_to\u212aens":5}'.replace("%s", OK_MSG).encode(),
        "ambiguous_key",
        '$["max_to\u212aens"]',
    ),
    "duplicate content in a message": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":"hi","content":"%s"}]}' % AWS.encode(),
        "duplicate_key",
        "$.messages[0].content",
    ),
    "Content in a message": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":"hi","Content":"x"}]}',
        "ambiguous_key",
        "$.messages[0].Content",
    ),
    "lone Content in a message": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","Content":"x"}]}',
        "ambiguous_key",
        "$.messages[0].Content",
    ),
    "TEXT in a content part": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":[{"type":"text","TEXT":"x"}]}]}',
        "ambiguous_key",
        "$.messages[0].content[0].TEXT",
    ),
    "Arguments in a tool call": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"assistant","tool_calls":[{"id":'
        b'"c","type":"function","function":{"name":"f","Arguments":"{}"}}]}]}',
        "ambiguous_key",
        "$.messages[0].tool_calls[0].function.Arguments",
    ),
    "duplicate key deep in a schema": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"tools":[{"type":"function",'
        b'"function":{"name":"f","parameters":{"type":"object","type":"string"}}}]}' % OK_MSG.encode(),
        "duplicate_key",
        "$.tools[0].function.parameters.type",
    ),
    "NaN": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"temperature":NaN}' % OK_MSG.encode(),
        "invalid_json",
        "$.temperature",
    ),
    "Infinity": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"top_p":Infinity}' % OK_MSG.encode(),
        "invalid_json",
        "$.top_p",
    ),
    "-Infinity": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"top_p":-Infinity}' % OK_MSG.encode(),
        "invalid_json",
        "$.top_p",
    ),
    "1e999": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"temperature":1e999}' % OK_MSG.encode(),
        "invalid_json",
        "$.temperature",
    ),
    "-1e999 deep": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"metadata":{"a":[1,-1e999]}}' % OK_MSG.encode(),
        "invalid_json",
        "$.metadata.a[1]",
    ),
    "integer past int64": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"seed":18446744073709551616}' % OK_MSG.encode(),
        "invalid_json",
        "$.seed",
    ),
    "lone high surrogate": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":"hi \\ud800"}]}',
        "invalid_json",
        "$.messages[0].content",
    ),
    "lone low surrogate": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":"\\udc00x"}]}',
        "invalid_json",
        "$.messages[0].content",
    ),
    "lone surrogate in a key": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"metadata":{"\\ud800":"x"}}' % OK_MSG.encode(),
        "invalid_json",
        "$.metadata[key]",
    ),
    "not UTF-8": (CHAT, b'{"model":"demo-model","messages":[{"role":"user","content":"\xff"}]}', "invalid_json", "$"),
    "UTF-16": (CHAT, '{"model":"demo-model","messages":[]}'.encode("utf-16"), "invalid_json", "$"),
    "UTF-8 BOM": (CHAT, b'\xef\xbb\xbf{"model":"demo-model","messages":%s}' % OK_MSG.encode(), "invalid_json", "$"),
    "unknown top-level field": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"foo":1}' % OK_MSG.encode(),
        "unknown_field",
        "$.foo",
    ),
    "unknown field in a message": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":"hi","cache_control":{"type":"ephemeral"}}]}',
        "unknown_field",
        "$.messages[0].cache_control",
    ),
    "unknown content part type": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":[{"type":"video_url","video_url":{"url":"x"}}]}]}',
        "unknown_field",
        "$.messages[0].content[0].video_url",
    ),
    # Text a server could still read, in a type Guard would not screen as text.
    "text part as an object": (
        CHAT,
        b'{"model":"demo-model","messages":[{"role":"user","content":[{"type":"text",'
        b'"text":{"value":"%s"}}]}]}' % AWS.encode(),
        "invalid_type",
        "$.messages[0].content[0].text",
    ),
    "tool description as an array": (
        CHAT,
        b'{"model":"demo-model","messages":%s,"tools":[{"type":"function",'
        b'"function":{"name":"f","description":["%s"]}}]}' % (OK_MSG.encode(), AWS.encode()),
        "invalid_type",
        "$.tools[0].function.description",
    ),
    "prompt array with an object": (
        "/v1/completions",
        b'{"model":"demo-model","prompt":["hi",{"text":"%s"}]}' % AWS.encode(),
        "invalid_prompt",
        "$.prompt[1]",
    ),
    "embedding input with a nested string": (
        "/v1/embeddings",
        b'{"model":"demo-model","input":[[1,"%s"]]}' % AWS.encode(),
        "invalid_input",
        "$.input[0]",
    ),
    # Ollama (a Go server): the same family.
    "ollama duplicate model": (
        "/api/chat",
        b'{"model":"llama3","messages":%s,"model":"internal-x"}' % OK_MSG.encode(),
        "duplicate_key",
        "$.model",
    ),
    "ollama Messages": (
        "/api/chat",
        b'{"model":"llama3","Messages":%s}' % OK_MSG.encode(),
        "ambiguous_key",
        "$.Messages",
    ),
    "ollama SYSTEM on generate": (
        "/api/generate",
        b'{"model":"llama3","prompt":"hi","SYSTEM":"%s"}' % AWS.encode(),
        "ambiguous_key",
        "$.SYSTEM",
    ),
    "ollama Prompt beside prompt": (
        "/api/generate",
        b'{"model":"llama3","prompt":"hi","Prompt":"x"}',
        "ambiguous_key",
        "$.Prompt",
    ),
    "ollama duplicate content": (
        "/api/chat",
        b'{"model":"llama3","messages":[{"role":"user","content":"hi","content":"x"}]}',
        "duplicate_key",
        "$.messages[0].content",
    ),
    "ollama Images": (
        "/api/chat",
        b'{"model":"llama3","messages":[{"role":"user","content":"hi","Images":["x"]}]}',
        "ambiguous_key",
        "$.messages[0].Images",
    ),
    "ollama NaN in options": (
        "/api/chat",
        b'{"model":"llama3","messages":%s,"options":{"temperature":NaN}}' % OK_MSG.encode(),
        "invalid_json",
        "$.options.temperature",
    ),
    "ollama unknown field": (
        "/api/generate",
        b'{"model":"llama3","prompt":"hi","prompt_override":"x"}',
        "unknown_field",
        "$.prompt_override",
    ),
    "ollama system as an array": (
        "/api/generate",
        b'{"model":"llama3","prompt":"hi","system":["%s"]}' % AWS.encode(),
        "invalid_type",
        "$.system",
    ),
    "ollama embed input with a number": ("/api/embed", b'{"model":"llama3","input":["hi",1]}', "invalid_input", None),
    "ollama unknown field on embed": (
        "/api/embed",
        b'{"model":"llama3","input":"hi","Input":"x"}',
        "ambiguous_key",
        "$.Input",
    ),
}


def _upstream_ids(model_server: Any) -> set[str]:
    return {r["headers"].get("x-guard-request-id", "") for r in model_server[0].requests}


def _denied(audit_dir: Path, rids: set[str]) -> dict[str, dict[str, Any]]:
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


def test_ambiguous_bodies_are_refused_with_path_and_record(guard: Any, model_server: Any) -> None:
    seen: dict[str, tuple[str, str]] = {}
    with guard.client() as c:
        for name, (path, raw, code, param) in REFUSED.items():
            r = c.post(path, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, (name, r.status_code, r.text)
            if path.startswith("/api/"):  # Ollama's shape: the text in "error", Guard's code beside it
                assert isinstance(r.json()["error"], str) and set(r.json()) <= {"error", "code", "param"}, name
            else:
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}, name
            assert (error_field(r), error_field(r, "param")) == (code, param), (name, r.text)
            assert AWS not in r.text
            rid = r.headers["x-guard-request-id"]
            seen[rid] = (name, code)
    assert not set(seen) & _upstream_ids(model_server), "a refused body reached the model server"
    denied = _denied(guard.config.audit.dir, set(seen))
    for rid, (name, code) in seen.items():
        assert rid in denied, f"no exchange.denied for {name}"
        assert denied[rid]["outcome"]["status"] == 400 and denied[rid]["denial"]["code"] == code, name


def _sent(model_server: Any, rid: str) -> dict[str, Any]:
    for r in reversed(model_server[0].requests):
        if r["headers"].get("x-guard-request-id") == rid:
            return r
    raise AssertionError(f"request {rid} did not reach the model server")


def test_upstream_receives_the_judged_object_not_the_client_bytes(guard: Any, model_server: Any) -> None:
    # Legal JSON that parsers could still read apart from Guard's reading: escapes, odd spacing, exponents,
    # an int past 2**53, keys in an odd order. The upstream gets Guard's own serialisation of what it judged.
    raw = (
        b'{ "messages" : [ {"content":"h\\u0065llo \\ud83d\\ude00 caf\xc3\xa9","role":"user"} ],\n'
        b'"temperature": 1.0E-1 , "seed": 9007199254740993, "model":"demo-model", "stop":["\\u0000"],'
        b'"metadata":{"k":"\\/"}}'
    )
    with guard.client() as c:
        r = c.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    got = _sent(model_server, r.headers["x-guard-request-id"])
    judged = json.loads(raw)
    assert got["raw"].encode() != raw
    assert got["raw"].encode() == strictjson.dumps(judged)
    assert json.loads(got["raw"]) == judged and got["body"]["seed"] == 9007199254740993


def test_screen_rewrites_and_route_rename_are_what_the_upstream_gets(guard_factory: Any, model_server: Any) -> None:
    g = guard_factory(
        routes=[
            {"model": "alias-*", "upstream": "local", "upstream_model": "demo-model"},
            {"model": "*", "upstream": "local"},
        ]
    )
    body = {
        "model": "alias-x",
        "messages": [{"role": "user", "content": "write to jane.doe@example.com"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "mail",
                    "description": "mails jane.doe@example.com",
                    "parameters": {"type": "object"},
                },
            }
        ],
    }
    with g.client() as c:
        r = c.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    got = _sent(model_server, r.headers["x-guard-request-id"])
    assert got["body"]["model"] == "demo-model"
    assert "jane.doe@example.com" not in got["raw"]
    assert got["body"]["messages"][0]["content"] == "write to <EMAIL_ADDRESS_1>"
    assert got["body"]["tools"][0]["function"]["description"] == "mails <EMAIL_ADDRESS_1>"
    assert got["raw"].encode() == strictjson.dumps(got["body"])


def test_extra_fields_are_allowed_per_upstream_and_forwarded_as_parsed(guard_factory: Any, model_server: Any) -> None:
    ups = {
        "local": {
            "url": model_server[1],
            "api": "openai",
            "timeout_s": 10,
            "extra_fields": ["top_k", "messages.cache_control"],
        },
        "ollama": {"url": model_server[1], "api": "ollama", "timeout_s": 10},
    }
    g = guard_factory(upstreams=ups)
    raw = (
        b'{"model":"demo-model","top_k" : 4,"messages":[{"role":"user","content":"hi",'
        b'"cache_control":{"type":"ephemeral"}}]}'
    )
    with g.client() as c:
        r = c.post(CHAT, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        got = _sent(model_server, r.headers["x-guard-request-id"])
        assert got["raw"].encode() == strictjson.dumps(json.loads(raw))
        # Allowed by name only: another unknown field, or the allowed one spelt otherwise, is still refused;
        # the Ollama upstream allows none.
        for path, body, code, param in [
            (
                CHAT,
                {"model": "demo-model", "messages": [{"role": "user", "content": "hi"}], "top_p_x": 1},
                "unknown_field",
                "$.top_p_x",
            ),
            (
                CHAT,
                {"model": "demo-model", "messages": [{"role": "user", "content": "hi"}], "Top_K": 1},
                "unknown_field",
                "$.Top_K",
            ),
            ("/api/chat", {"model": "llama3", "messages": [], "top_k": 1}, "unknown_field", "$.top_k"),
        ]:
            r = c.post(path, json=body)
            assert r.status_code == 400 and error_field(r) == code, (body, r.text)
            assert error_field(r, "param") == param


def test_extra_fields_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    from guard.config import ConfigError, load_config

    p = tmp_path / "guard.yaml"
    p.write_text(
        "tls: {cert: a, key: b, client_ca: c}\nupstreams:\n  u:\n    url: http://x\n"
        "    extra_fields: ['ok_name', 'bad name']\n    allow_unscreened: [image, video]\n"
        "routes: [{model: '*', upstream: u}]\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:5: upstreams.u.extra_fields" in msg and "'bad name'" in msg
    assert f"{p}:6: upstreams.u.allow_unscreened.1" in msg


def test_official_sdk_optional_parameters_still_work(guard: Any, model_server: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": True,
            },
        }
    ]
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "description": "the answer",
            "schema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "strict": True,
        },
    }
    kw: dict[str, Any] = dict(
        model="demo-model",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello", "name": "ann"}],
        tools=tools,
        tool_choice="auto",
        parallel_tool_calls=False,
        response_format=fmt,
        seed=7,
        user="u-1",
        temperature=0.2,
        top_p=0.9,
        max_completion_tokens=50,
        frequency_penalty=0.1,
        presence_penalty=0.1,
        logit_bias={"50256": -100},
        metadata={"team": "a"},
        store=False,
        stop=["\n\n"],
        n=1,
        service_tier="auto",
        safety_identifier="s-1",
        prompt_cache_key="k",
        reasoning_effort="low",
        verbosity="low",
        logprobs=False,
    )
    with guard.openai("prod-workload") as c:  # the shipped policy lets prod workloads use any operation
        whole = c.chat.completions.with_raw_response.create(**kw)
        assert whole.parse().choices[0].message.content
        stream = c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text
        emb = c.embeddings.create(
            model="demo-model", input=["a", "b"], dimensions=3, encoding_format="float", user="u-1"
        )
        assert len(emb.data) == 2
        comp = c.completions.create(
            model="demo-model",
            prompt="hi",
            suffix="end",
            echo=False,
            best_of=1,
            seed=1,
            max_tokens=5,
            logprobs=None,
            user="u-1",
        )
        assert comp.choices
    got = _sent(model_server, whole.headers["x-guard-request-id"])["body"]
    for k in ("tools", "response_format", "seed", "user", "logit_bias", "metadata", "stop"):
        assert got[k] == json.loads(json.dumps(kw[k])), k


def test_unscreenable_inputs_are_refused_unless_the_upstream_allows_them(guard_factory: Any, model_server: Any) -> None:
    image = {
        "model": "demo-model",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            }
        ],
    }
    g = guard_factory()
    with g.client() as c:
        r = c.post(CHAT, json=image)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "unscreenable_input", r.text
    assert err["param"] == "$.messages[0].content[1]" and "image" in err["message"]
    rid = r.headers["x-guard-request-id"]
    assert rid in _denied(g.config.audit.dir, {rid})

    ups = {
        "local": {"url": model_server[1], "api": "openai", "timeout_s": 10, "allow_unscreened": ["image"]},
        "ollama": {"url": model_server[1], "api": "ollama", "timeout_s": 10},
    }
    g2 = guard_factory(upstreams=ups)
    before = metric(g2.admin_url, "guard_unscreened_inputs_total", api="openai", kind="image")
    with g2.client() as c:
        r = c.post(CHAT, json=image)
        assert r.status_code == 200, r.text
        # Only the allowed kind: audio is still refused.
        audio = {
            "model": "demo-model",
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}
            ],
        }
        r2 = c.post(CHAT, json=audio)
        assert r2.status_code == 400 and r2.json()["error"]["code"] == "unscreenable_input"
    assert metric(g2.admin_url, "guard_unscreened_inputs_total", api="openai", kind="image") == before + 1
    rid = r.headers["x-guard-request-id"]
    deadline = time.monotonic() + 5
    while True:
        started = [
            e for e in events(g2.config.audit.dir) if e.get("request_id") == rid and e.get("type") == "exchange.started"
        ]
        if started or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    marks = [s for s in started[0]["screens"] if s["name"] == "unscreened"]
    assert marks == [
        {
            "name": "unscreened",
            "direction": "prompt",
            "status": "skipped",
            "action": "allow",
            "blocked": False,
            "latency_ms": 0.0,
            "entities": {"image": 1},
            "categories": ["image"],
        }
    ]


def test_strict_reader_is_strict_on_any_input(guard: Any) -> None:
    """Bodies from an httpx client with ``json=``: Python's own NaN and big floats are refused too."""
    with guard.client() as c:
        r = c.post(
            CHAT,
            content=json.dumps(
                {"model": "demo-model", "messages": [{"role": "user", "content": "x"}], "temperature": float("nan")}
            ),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_large_bodies_read_off_the_gil_are_refused_and_forwarded_alike(guard: Any, model_server: Any) -> None:
    """Bodies above 64 KB are read strictly in a helper process and then by orjson (guard/apis/bodies.py): every
    refused family above, padded past the limit with leading white space (legal JSON), is refused with the same
    code and path once the helper runs, and an accepted large body reaches the upstream as Guard serialises it."""
    from guard.apis import bodies

    pad = b" " * 70_000
    with guard.client() as c:
        deadline = time.monotonic() + 60
        while not bodies.HELPER.ready:  # the first large body starts the helper (read in a thread meanwhile)
            assert time.monotonic() < deadline, "the body reader process did not start"
            c.post(CHAT, content=pad + b"{}", headers={"content-type": "application/json"})
            time.sleep(0.2)
        for name, (path, raw, code, param) in REFUSED.items():
            r = c.post(path, content=pad + raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, (name, r.status_code, r.text)
            assert (error_field(r), error_field(r, "param")) == (code, param), (name, r.text)
        raw = pad + (
            b'{"messages":[{"content":"h\\u0065llo \\ud83d\\ude00 caf\xc3\xa9 ' + b"x" * 70_000 + b'","role":"user"}],'
            b'"temperature":1.0E-1,"seed":9007199254740993,"model":"demo-model","stop":["\\u0000"]}'
        )
        r = c.post(CHAT, content=raw, headers={"content-type": "application/json"})
        for big in (pad, b""):  # nested past limits.max_json_depth: refused by the helper as in this process
            deep = b'{"model":"demo-model","messages":[{"role":"user","content":"x"}],"tools":' + b"[" * 300
            deep = big + deep + b"]" * 300 + b"}" + (b" " * 70_000 if big else b"")
            d = c.post(CHAT, content=deep, headers={"content-type": "application/json"})
            assert d.status_code == 400 and error_field(d) == "invalid_json" and "deeper" in d.text, d.text
    assert r.status_code == 200, r.text
    got = _sent(model_server, r.headers["x-guard-request-id"])
    assert got["raw"].encode() == strictjson.dumps(json.loads(raw)) and got["body"]["seed"] == 9007199254740993
    assert bodies.HELPER.ready, "the helper process stopped"
