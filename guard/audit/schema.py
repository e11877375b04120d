"""Validate audit events against ``audit/event.schema.json`` (tests and ``guard audit verify --schema``).

Needs the ``jsonschema`` package (a test dependency); the proxy itself never imports this module.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from guard.audit import layout

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "audit" / "event.schema.json"


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def event_errors(event: dict[str, Any]) -> list[str]:
    """Schema violations of one event, as 'path: message' strings (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(event)'}: {e.message}" for e in _validator().iter_errors(event)]


def journal_errors(root: Path) -> list[str]:
    """Every schema violation of every event under an audit dir: 'chain/segment:line: path: message'."""
    out: list[str] = []
    for chain in layout.chain_names(root):
        for seg in layout.segments(root, chain):
            for n, (_, _, line) in enumerate(layout.iter_lines(seg), 1):
                try:
                    ev = json.loads(line)
                except ValueError as e:
                    out.append(f"{chain}/{seg.name}:{n}: not JSON: {e}")
                    continue
                out += [f"{chain}/{seg.name}:{n}: {m}" for m in event_errors(ev)]
    return out


def assert_journal_valid(root: Path) -> int:
    """For other packages' tests: raise AssertionError listing violations; return the number of events."""
    errors = journal_errors(root)
    assert not errors, "audit events violate the schema:\n" + "\n".join(errors[:50])
    return sum(1 for _ in layout.iter_events(root))
