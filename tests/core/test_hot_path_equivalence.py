"""The request path's fast rewrites give what the plain versions they replace give.

``parameter_texts`` walks ``SENT_PARAMETERS`` depth-first with a first-key fast path; the plain version (kept
here as the reference) expands every pattern level by level. Random JSON bodies built around the patterns'
keys must give the same (path, text) list, order included: the order of segments is the order screens and
write-back see them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.apis.fields import SENT_PARAMETERS, parameter_texts


def _reference(api: str, operation: str, body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    out: list[tuple[tuple[Any, ...], str]] = []
    for pattern in SENT_PARAMETERS[(api, operation)]:
        level: list[tuple[tuple[Any, ...], Any]] = [((), body)]
        for step in pattern:
            nxt: list[tuple[tuple[Any, ...], Any]] = []
            for path, obj in level:
                if step == "*":
                    items = obj.items() if type(obj) is dict else enumerate(obj) if type(obj) is list else ()
                    nxt.extend(((*path, k), v) for k, v in items)
                elif type(obj) is dict and step in obj:
                    nxt.append(((*path, step), obj[step]))
            level = nxt
        out.extend((path, v) for path, v in level if type(v) is str)
    return out


_KEYS = sorted({k for pats in SENT_PARAMETERS.values() for p in pats for k in p if k != "*"} | {"x", "role"})
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3))
_json = st.recursive(
    _leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(_KEYS), kids, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SENT_PARAMETERS)), st.dictionaries(st.sampled_from(_KEYS), _json, max_size=6))
def test_parameter_texts_matches_the_level_by_level_walk(key: tuple[str, str], body: dict[str, Any]) -> None:
    assert parameter_texts(*key, body) == _reference(*key, body)


def test_parameter_texts_finds_each_pattern() -> None:
    body = {
        "stop": ["a", 1, "b"],
        "user": "u",
        "metadata": {"k": "v", "n": 2},
        "messages": [{"role": "tool", "tool_call_id": "t1", "tool_calls": [{"id": "c1"}, {"id": 3}]}],
        "tool_choice": {"function": {"name": "f"}},
    }
    got = parameter_texts("openai", "chat", body)
    assert got == _reference("openai", "chat", body)
    assert [t for _, t in got] == ["a", "b", "u", "v", "f", "t1", "c1"]
