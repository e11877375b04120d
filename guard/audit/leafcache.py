"""Leaf hashes of a chain's closed segments, kept beside them so that a process building its first receipt
does not re-read and re-hash the whole chain (``guard.audit.proofs.Leaves``).

One file per closed segment: ``chains/<chain>/leaves/<segment>.leaves``, a JSON header line (the segment's
byte size and the index of its first leaf) followed by the raw 32-byte leaf hashes. A file is used only when
its header matches the segment as it is now and the tree read so far. It is a cache, not evidence: every
receipt built from it is checked against its signed checkpoint before it is returned, and a mismatch drops
the chain's cache and rebuilds from the segments (``guard.audit.proofs.receipt``). Writing is best effort
(a read-only journal simply has no cache).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from guard.audit import layout

DIR = "leaves"
_SUFFIX = ".leaves"


def _path(seg: Path) -> Path:
    return seg.parent / DIR / (seg.name + _SUFFIX)


def load(seg: Path, first: int) -> bytes | None:
    """The leaf hashes of closed segment ``seg`` when its cache file fits (same byte size, first leaf
    ``first``), else None."""
    try:
        size = seg.stat().st_size
        with open(_path(seg), "rb") as f:
            head = json.loads(f.readline(256))
            leaves = f.read()
    except (OSError, ValueError):
        return None
    if not isinstance(head, dict) or head.get("bytes") != size or head.get("first") != first:
        return None
    if head.get("count") != len(leaves) // 32 or len(leaves) % 32:
        return None
    return leaves


def store(seg: Path, first: int, leaves: bytes) -> None:
    """Remember the leaf hashes read from closed segment ``seg`` (from its start, first leaf ``first``)."""
    try:
        size = seg.stat().st_size
        (seg.parent / DIR).mkdir(mode=0o750, exist_ok=True)
        head = json.dumps({"bytes": size, "first": first, "count": len(leaves) // 32}).encode()
        layout.write_atomic(_path(seg), head + b"\n" + leaves)
    except OSError:
        return


def forget(seg: Path) -> None:
    """Remove the cache file of segment ``seg`` (the segment is being removed)."""
    _path(seg).unlink(missing_ok=True)


def drop(root: Path, chain: str) -> None:
    """Forget every cached leaf of ``chain``."""
    shutil.rmtree(layout.chains_dir(root) / chain / DIR, ignore_errors=True)
