"""Every wire API module offers what guard.pipeline and guard.relay ask of it (guard.apis.wire), and every
served route has a module and a field table."""

from __future__ import annotations

from guard.apis import ROUTES, fields
from guard.apis.wire import UPSTREAM, WIRE

NEEDED = (
    "validate",
    "prompt_segments",
    "unscreened",
    "response_segments",
    "usage",
    "finish_reasons",
    "filter_whole",
    "error_body",
    "stream_error",
    "split",
    "payload",
    "is_end",
    "chunk_channels",
    "chunk_finished",
    "flush",
    "encode",
    "stop_bytes",
    "SEP",
    "END",
    "STREAM_MEDIA_TYPE",
    "prompt_text",
    "upstream_error_body",
)


def test_every_module_has_the_shared_functions() -> None:
    for name, mod in WIRE.items():
        missing = [f for f in NEEDED if not hasattr(mod, f)]
        assert not missing, (name, missing)


def test_every_route_has_a_module_and_a_field_table() -> None:
    for api, op in ROUTES.values():
        assert api in WIRE
        if op != "models":
            assert (api, op) in fields.SPECS


def test_every_upstream_api_the_config_accepts_has_a_target_writer() -> None:
    """guard.upstream asks guard.apis.wire how to address each upstream API: every value ``upstreams.<name>.api``
    may take has its own writer, so none falls back to OpenAI's by accident."""
    import typing

    from guard.config import Upstream

    accepted = set(typing.get_args(Upstream.model_fields["api"].annotation))
    assert accepted and accepted <= set(UPSTREAM), (accepted, set(UPSTREAM))


# guard.relay and guard.quota still branch on the API; they are listed until their knowledge moves too.
NOT_YET: tuple[str, ...] = ()


def test_no_branch_on_the_wire_api_outside_the_wire_modules() -> None:
    """What differs between APIs lives in guard/apis/ (reached through guard.apis.wire): no module of the
    request path compares an API name (``api == "..."``, ``api in (...)``, ``api in answer.APIS``)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    branch = re.compile(r"""\bapi\s*(?:==|!=)\s*["']|\bapi\s+(?:not\s+)?in\s+[(\[{A-Za-z]""")
    found = []
    for p in sorted((root / "guard").rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith("guard/apis/") or rel.startswith(NOT_YET):
            continue
        for n, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if branch.search(code):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, found
