"""A large body read in pieces (guard.apis.body_pieces) is the object orjson reads from the whole body: for
any JSON object, any layout (white space anywhere JSON allows it), strings holding brackets, commas, quotes
and escapes, and arrays of any length."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.apis import body_pieces

_TRICKY = st.sampled_from(['"', "\\", "[", "]", "{", "}", ",", ":", "\u00e9", "\u2028", " ", "\n", "\\u0022"])
_STR = st.lists(st.one_of(_TRICKY, st.text(max_size=4)), max_size=5).map("".join)
_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), _STR
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_STR, inner, max_size=4)),
    max_leaves=12,
)
_BODY = st.dictionaries(_STR, st.one_of(_VALUE, st.lists(_VALUE, max_size=12)), min_size=1, max_size=5)


def _layout(body: dict[str, Any], style: int) -> bytes:
    if style == 0:
        return orjson.dumps(body)
    if style == 1:
        return json.dumps(body, indent=2, ensure_ascii=False).encode()
    text = json.dumps(body, separators=(" , ", " : "), ensure_ascii=style == 2)
    return f"\n\t {text} \r\n".encode()


@settings(max_examples=300, deadline=None)
@given(_BODY, st.integers(0, 3), st.integers(0, 3))
def test_pieces_give_the_object_the_whole_body_gives(body: dict[str, Any], style: int, least: int) -> None:
    raw = _layout(body, style)
    found = body_pieces.spans(raw, least)
    assert body_pieces.assemble(raw, found) == orjson.loads(raw)
    for key, start, end, elems in found:  # each array found is a top-level value, whole, element by element
        assert isinstance(body[key], list) and len(elems) == len(body[key]) >= least
        assert orjson.loads(raw[start:end]) == body[key]


def test_a_megabyte_of_messages_is_read_message_by_message() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": f"part {i}, [x]"} for i in range(5000)]}
    raw = orjson.dumps(body)
    ((key, _, _, elems),) = body_pieces.spans(raw)
    assert key == "messages" and len(elems) == 5000
    assert body_pieces.assemble(raw, body_pieces.spans(raw)) == body
    assert body_pieces.spans(orjson.dumps({"messages": [1] * (body_pieces.LEAST_ITEMS - 1)})) == []
