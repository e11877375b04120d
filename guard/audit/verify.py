"""Verify a journal directory with nothing but its files and the public keys.

Per chain: every line's hash, every link (``prev``), sequence continuity, every checkpoint event (head,
count, previous checkpoint), the chain's Merkle tree recomputed from the events against every signed
checkpoint note (guard.audit.logtree), and torn lines; lines of the earlier format (signed one by one) also
have their signature checked, and a chain of that format only its signed head record. The first broken
point of each chain is reported with file, line, seq and one reason:

    bad_signature  hash_mismatch  broken_link  seq_gap  truncated  unknown_key  fork

A torn final line (a crash mid-write) is reported as ``torn``: a warning, not tampering, when it ends the
chain or the writer's next start acknowledged it in a recovery checkpoint.

Work is split by chain, by segment, and within a segment into newline-aligned units of about ``_CHUNK``
bytes; the units go to a process pool (``jobs``, guard.audit.verify_units). The parent stitches each chain
in order and rebuilds its tree (guard.audit.verify_chain). Unit boundaries do not depend on ``jobs``, so the
report is the same for any number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.audit import layout
from guard.audit.logtree import read_latest, read_notes_strict
from guard.audit.pruned import pruned_names
from guard.audit.verify_chain import Break, ChainReport, Segs, _head, _verify_chain
from guard.audit.verify_units import _check_unit, _chunks, _init, _Unit

REASONS = ("bad_signature", "hash_mismatch", "broken_link", "seq_gap", "truncated", "unknown_key", "fork")
_CHUNK = 4 << 20
_FAST = True  # False: every unit comes back line by line (the reference the tests compare the fast path with)

__all__ = ["REASONS", "Break", "ChainReport", "Report", "verify_dir"]


@dataclass
class Report:
    chains: list[ChainReport]

    @property
    def ok(self) -> bool:
        return all(c.status != "tampered" for c in self.chains)

    @property
    def events(self) -> int:
        return sum(c.events for c in self.chains)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "chains": [asdict(c) for c in self.chains]}


def verify_dir(
    root: Path,
    keys: dict[str, Ed25519PublicKey],
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
    signatures: str = "all",
    checkpoints: list[str] | None = None,
) -> Report:
    """Check every chain under ``root`` against ``keys`` (key_id -> public key) with ``jobs`` processes
    (default: all CPUs; 1 checks in this process). The report does not depend on ``jobs``.

    ``signatures`` concerns lines of the earlier, per-event signed format only: ``"all"`` checks each one's
    signature, ``"checkpoints"`` those of checkpoint events and of each unit's last line. ``checkpoints``:
    signed notes kept outside the journal (by an auditor, a witness): each must be a state of its chain's
    tree, or the chain is reported as a ``fork``.
    """
    if signatures not in ("all", "checkpoints"):
        raise ValueError("signatures must be 'all' or 'checkpoints'")
    every = signatures == "all"
    raw = {k: v.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) for k, v in keys.items()}
    plan: list[tuple[str, Path, list[tuple[str, int, int]], int]] = []  # chain, segment, units, torn bytes
    tasks: list[tuple[str, int, int, Any]] = []
    total = 0
    for chain in layout.chain_names(root):
        head = _head(root, chain)
        head_seq = head.get("seq") if head else None
        gone = pruned_names(root, chain)  # left by an interrupted prune; its signed record is checked below
        for seg in layout.segments(root, chain):
            if seg.name in gone:
                continue
            chunks, torn = _chunks(seg, _CHUNK)
            plan.append((chain, seg, chunks, torn))
            tasks += [(p, a, b, head_seq) for p, a, b in chunks]
            total += seg.stat().st_size
    _init(raw, every, _FAST)
    jobs = min(jobs or os.cpu_count() or 1, len(tasks))
    if jobs > 1 and total > 2 * _CHUNK:
        with ProcessPoolExecutor(jobs, initializer=_init, initargs=(raw, every, _FAST)) as pool:
            return _link(root, plan, pool.map(_check_unit, *zip(*tasks, strict=False)), progress, checkpoints)
    return _link(root, plan, (_check_unit(*t) for t in tasks), progress, checkpoints)


def _link(
    root: Path,
    plan: list[tuple[str, Path, list[tuple[str, int, int]], int]],
    results: Iterable[_Unit],
    progress: Callable[[int], None] | None,
    external: list[str] | None = None,
) -> Report:
    it = iter(results)
    by_chain: dict[str, Segs] = {}
    done = 0
    for chain, seg, chunks, torn in plan:
        units = []
        for c in chunks:
            units.append((next(it), c))
            done += units[-1][0].lines
            if progress:
                progress(done)
        by_chain.setdefault(chain, []).append((seg, units, torn))
    for chain in layout.chain_names(root):  # every segment gone: only the signed records are left to tell
        if chain not in by_chain and (
            layout.read_head(root, chain) is not None or read_latest(root, chain) or read_notes_strict(root, chain)
        ):
            by_chain[chain] = []
    return Report([_verify_chain(root, chain, segs, external) for chain, segs in sorted(by_chain.items())])
