"""Where things live under ``audit.dir`` (shared by the journal, verify, export, tail and the forwarder).

<dir>/chains/<chain>/<first seq, 16 digits>.jsonl   segments, append-only, one event per line
<dir>/chains/<chain>/HEAD.json                        signed head record (last durable checkpoint)
<dir>/chains/<chain>/PRUNED.json                      signed record of segments `guard audit prune` removed
<dir>/chains/<chain>/witnessed.log                    witness cosignatures and timestamp tokens (notary)
<dir>/chains/<chain>/LOCK                             flock held by the one process writing the chain
<dir>/keys/                                           generated keys and published public keys
<dir>/cursors/<sink>.json                             forwarder cursors, one file per sink
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SEGMENT_RE = re.compile(r"^(\d{16})(?:-(\d{1,4}))?\.jsonl$")
_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def safe_chain(name: str) -> str:
    s = _BAD.sub("_", name)[:128].lstrip(".")
    return s or "chain"


def chains_dir(root: Path) -> Path:
    return Path(root) / "chains"


def chain_names(root: Path) -> list[str]:
    d = chains_dir(root)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir())


def segment_name(first_seq: int, n: int = 0) -> str:
    """``n`` > 0 only when a failed write left bytes in the segment of the same first seq."""
    return f"{first_seq:016d}.jsonl" if not n else f"{first_seq:016d}-{n}.jsonl"


def _seg_key(p: Path) -> tuple[int, int]:
    m = SEGMENT_RE.match(p.name)
    assert m
    return int(m.group(1)), int(m.group(2) or 0)


def segments(root: Path, chain: str) -> list[Path]:
    """Segments of a chain in order of their first sequence number."""
    d = chains_dir(root) / chain
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if SEGMENT_RE.match(p.name)), key=_seg_key)


def read_head(root: Path, chain: str) -> dict[str, Any] | None:
    try:
        return json.loads((chains_dir(root) / chain / "HEAD.json").read_text())
    except (OSError, ValueError):
        return None


def cursor_path(root: Path, sink: str) -> Path:
    return Path(root) / "cursors" / f"{sink}.json"


def read_cursors(root: Path) -> dict[str, dict[str, Any]]:
    """Every sink's persisted position, by sink: chain -> {segment, offset, seq} (guard.audit.forwarder);
    an unreadable cursor file reads as an empty position (the sink starts from the beginning)."""
    return {p.stem: read_cursor(p) for p in sorted((Path(root) / "cursors").glob("*.json"))}


def read_cursor(path: Path) -> dict[str, Any]:
    try:
        chains = json.loads(path.read_text())["chains"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return chains if isinstance(chains, dict) else {}


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # a full disk, EIO: leave no temporary file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def iter_lines(path: Path, offset: int = 0, chunk: int = 1 << 20) -> Iterator[tuple[int, int, bytes]]:
    """Yield (start offset, end offset, line without newline) for complete lines from ``offset``.

    A final line without a newline is not yielded (it is torn, or still being written).
    """
    with open(path, "rb") as f:
        f.seek(offset)
        buf = b""
        pos = offset
        while True:
            data = f.read(chunk)
            if not data:
                return
            buf += data
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                yield pos + start, pos + nl + 1, buf[start:nl]
                start = nl + 1
            pos += start
            buf = buf[start:]


def iter_events(root: Path, chains: list[str] | None = None) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """All parseable events, chain by chain, in sequence order (for export and tail; verify checks more)."""
    for chain in chains if chains is not None else chain_names(root):
        for seg in segments(root, chain):
            for _, _, line in iter_lines(seg):
                try:
                    yield chain, seg, json.loads(line)
                except ValueError:
                    continue


def last_intact(segs: list[Path]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The last complete event of a chain and a note about torn bytes after it."""
    torn: dict[str, Any] = {}
    for seg in reversed(segs):
        data = seg.read_bytes()
        if not data:
            continue
        end = len(data)
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            torn = {"torn_segment": seg.name, "torn_bytes": end - cut}
            data = data[:cut]
        for line in reversed(data.splitlines()):
            try:
                e = json.loads(line)
                if isinstance(e, dict) and "seq" in e and "hash" in e:
                    return e, torn
            except ValueError:
                continue
    return None, torn
