"""Every wire API module offers what guard.pipeline and guard.relay ask of it (guard.apis.wire), and every
served route has a module and a field table."""

from __future__ import annotations

from guard.apis import ROUTES, fields
from guard.apis.wire import WIRE

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
