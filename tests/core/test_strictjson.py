"""The strict JSON reader: its C object hook (when built) and its Python hook give the same answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.apis import strictjson

KEYS = st.sampled_from(
    [
        "model",
        "Model",
        "MODEL",
        "messages",
        "meſſages",
        "max_tokens",
        "max_to\u212aens",
        "é",
        "É",
        "a",
        "A",
        "ß",
        "ss",
        "SS",
        "k",
        "\u212a",
        "x1",
        "",
    ]
)


def _verdict(hook: object, pairs: list[tuple[str, int]]) -> object:
    try:
        return hook(pairs)  # type: ignore[operator]
    except (strictjson._Bad, strictjson._Duplicate):
        return "refused"


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(KEYS, max_size=5))
def test_c_and_python_hooks_agree(keys: list[str]) -> None:
    pairs = [(k, i) for i, k in enumerate(keys)]
    expected = "refused" if len({k.casefold() for k in keys}) != len(keys) else dict(pairs)
    assert _verdict(strictjson._pairs, pairs) == expected
    assert _verdict(strictjson._pairs_c, pairs) == expected


@pytest.mark.parametrize(
    "raw, code, path",
    [
        (b'{"a":{"b":[{"c":1,"C":2}]}}', "ambiguous_key", "$.a.b[0].C"),
        (b'{"a":1,"a":1}', "duplicate_key", "$.a"),
        (b'{"a":[1e309]}', "invalid_json", "$.a[0]"),
        (b'{"a":-Infinity}', "invalid_json", "$.a"),
        (b'{"a":-9223372036854775809}', "invalid_json", "$.a"),
        (b'{"a":"\\udfff"}', "invalid_json", "$.a"),
        (b'{"a":1} x', "invalid_json", "$"),
    ],
)
def test_refusals_name_the_path(raw: bytes, code: str, path: str) -> None:
    with pytest.raises(strictjson.StrictJSONError) as e:
        strictjson.loads(raw)
    assert (e.value.code, e.value.path) == (code, path)


def test_accepted_bodies_read_as_json_loads_does() -> None:
    raw = b'{"a":[1,2.5,-0,9223372036854775807,"\\ud83d\\ude00",null,true],"b":{"c":"\\u0000"},"Fine":1,"ok":2}'
    assert strictjson.loads(raw) == json.loads(raw)
    assert json.loads(strictjson.dumps(json.loads(raw))) == json.loads(raw)
