"""Helpers for the through-the-proxy audit tests: read the journal, run `guard audit verify`, talk to Guard."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

GUARD = str(Path(sys.executable).with_name("guard"))
CHAT = "/v1/chat/completions"


def journal_events(root: Path) -> list[dict[str, Any]]:
    """Every complete line of every segment (a torn final line, without its LF, is skipped), captured texts
    opened with the journal's default content keys (guard.audit.content_keys)."""
    from guard.audit.content_keys import ContentKeys, reveal

    keys = ContentKeys(root / "keys" / "content")
    out: list[dict[str, Any]] = []
    for seg in sorted((root / "chains").glob("*/*.jsonl")):
        for line in seg.read_bytes().split(b"\n")[:-1]:
            out.append(reveal(json.loads(line), keys))
    return out


def journal_bytes(root: Path) -> bytes:
    """Everything Guard wrote under audit.dir except the keys folder (segments, head records, cursors)."""
    return b"".join(
        p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "keys" not in p.relative_to(root).parts
    )


def by_request(events: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """request_id -> {event type -> event}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for e in events:
        if e.get("request_id"):
            out.setdefault(e["request_id"], {})[e["type"]] = e
    return out


def verify(root: Path, public_key: Path) -> tuple[int, dict[str, Any]]:
    """`guard audit verify DIR --public-key PEM --json` as a compliance officer runs it."""
    p = subprocess.run(
        [GUARD, "audit", "verify", str(root), "--public-key", str(public_key), "--json", "--jobs", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode in (0, 1), f"verify usage error: {p.stderr}"
    return p.returncode, json.loads(p.stdout)


def chat(
    c: httpx.Client, content: str, model: str = "gpt-4o", headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    return c.post(
        CHAT, json={"model": model, "messages": [{"role": "user", "content": content}], **body}, headers=headers
    )


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total
