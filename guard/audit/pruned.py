"""The signed record of a prune, ``chains/<chain>/PRUNED.json``: reading and checking it.

Written by ``guard audit prune`` (guard.audit.prune), read by ``guard audit verify`` (guard.audit.verify),
which resumes a chain from it. Kept apart from both so that verify does not import prune (prune runs
verify before it removes anything).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guard.audit import layout
from guard.audit.seal import record_problem

PRUNED = "PRUNED.json"


def read_pruned(root: Path, chain: str) -> dict[str, Any] | None:
    try:
        rec = json.loads((layout.chains_dir(root) / chain / PRUNED).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # present but unreadable: verify reports it
    return rec if isinstance(rec, dict) else {}


def check_pruned(rec: dict[str, Any], chain: str, keys: dict[str, Any]) -> str | None:
    """None when ``rec`` is a prune record of ``chain`` signed by one of ``keys``, else why not."""
    if not rec or rec.get("type") != "audit.pruned" or rec.get("chain") != chain:
        return "hash_mismatch"
    why = record_problem(rec, keys)
    if why is not None:
        return why
    if not all(isinstance(rec.get(k), int) for k in ("seq", "events", "since_checkpoint")):
        return "hash_mismatch"
    return None


def pruned_names(root: Path, chain: str) -> set[str]:
    """Segment files a prune record lists as removed: a copy still present is the leftover of a prune
    interrupted between writing its record and removing the files (verify skips it; prune removes it)."""
    rec = read_pruned(root, chain) or {}
    segs = rec.get("segments")
    return (
        {s["name"] for s in segs if isinstance(s, dict) and isinstance(s.get("name"), str)}
        if isinstance(segs, list)
        else set()
    )
