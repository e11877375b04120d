"""`guard audit prune`: retention without losing provability.

A chain's oldest whole segments, every event of which is older than ``--before``, are removed, and a
record signed with the journal's key, ``chains/<chain>/PRUNED.json``, says what went: through which seq,
the hash of the last removed event (the next event's ``prev``), the last removed checkpoint and how many
events followed it, and each removed file's name, seq range, size and SHA-256. ``guard audit verify``
resumes the chain from that record, so the chain still verifies from its first kept event, while a
segment removed any other way (or a record edited, replayed or dropped) is still tampering.

Refused (exit 1, nothing removed): a journal that does not verify with the given keys; a sink whose cursor
has not passed the events to be removed (they would never reach the SIEM), unless ``--ignore-sinks``.
The newest segment of a chain (the one being written) is never removed. The record is written before the
files are removed; if that is interrupted, verify skips the listed files still present and the next prune
removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from guard.audit import event as ev
from guard.audit import layout, leafcache
from guard.audit.pruned import PRUNED, check_pruned, pruned_names, read_pruned
from guard.audit.seal import GENESIS, Signer
from guard.audit.verify import verify_dir

__all__ = ["PRUNED", "PruneError", "check_pruned", "plan", "prune", "pruned_names", "read_pruned"]

_CP = "audit.checkpoint"


class PruneError(Exception):
    pass


def plan(root: Path, chain: str, before: str) -> list[Path]:
    """The longest run of a chain's oldest segments whose events are all older than ``before``,
    never including its newest segment."""
    out: list[Path] = []
    skip = pruned_names(root, chain)
    segs = [s for s in layout.segments(root, chain) if s.name not in skip]
    for seg in segs[:-1]:
        last = layout.last_intact([seg])[0]
        if last is None or not str(last.get("time", "")) < before:
            break
        out.append(seg)
    return out


def _walk(segs: list[Path], start: dict[str, Any] | None) -> dict[str, Any]:
    """Chain state after ``segs`` (which verify has accepted), from a previous record or the genesis."""
    st: dict[str, Any] = {"seq": 0, "prev": GENESIS, "checkpoint": "", "since_checkpoint": 0, "events": 0}
    if start:
        st.update({k: start[k] for k in ("seq", "prev", "checkpoint", "since_checkpoint", "events")})
    files = list(start.get("segments", [])) if start else []
    for seg in segs:
        first = last = None
        with open(seg, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        for _, _, line in layout.iter_lines(seg):
            e = json.loads(line)
            st["seq"], st["prev"] = e["seq"], e["hash"]
            st["events"] += 1
            if e.get("type") == _CP:
                st["checkpoint"], st["since_checkpoint"] = e["hash"], 0
            else:
                st["since_checkpoint"] += 1
            first = e["seq"] if first is None else first
            last = e["seq"]
        files.append(
            {"name": seg.name, "first_seq": first, "last_seq": last, "bytes": seg.stat().st_size, "sha256": digest}
        )
    st["segments"] = files
    return st


def _sinks_behind(root: Path, chain: str, through: int) -> list[str]:
    out = []
    for sink, chains in layout.read_cursors(root).items():
        pos = chains.get(chain)
        seq = pos.get("seq", 0) if isinstance(pos, dict) else 0
        if not isinstance(seq, int) or seq < through:
            out.append(f"{sink} (at seq {seq})")
    return out


def prune(
    root: Path, before: str, signer: Signer, keys: dict[str, Any], *, dry_run: bool = False, ignore_sinks: bool = False
) -> dict[str, Any]:
    """Remove what is older than ``before`` (RFC 3339) in every chain; returns a report per chain.
    Raises PruneError (and removes nothing) when the journal does not verify or a sink is behind."""
    report = verify_dir(root, keys)
    if not report.ok:
        broken = [f"{c.chain}: {c.broken.reason} at {c.broken.file}:{c.broken.line}" for c in report.chains if c.broken]
        raise PruneError("the journal does not verify, nothing removed: " + "; ".join(broken))
    todo: list[tuple[str, list[Path], dict[str, Any]]] = []
    for chain in layout.chain_names(root):
        segs = plan(root, chain, before)
        if not segs:
            continue
        st = _walk(segs, read_pruned(root, chain))
        behind = [] if ignore_sinks else _sinks_behind(root, chain, st["seq"])
        if behind:
            raise PruneError(
                f"{chain}: sinks have not delivered the events to be removed (through seq "
                f"{st['seq']}): {', '.join(behind)}; nothing removed (--ignore-sinks to remove anyway)"
            )
        todo.append((chain, segs, st))
    out = []
    if not dry_run:  # finish a prune that was interrupted after its record was written
        for chain in layout.chain_names(root):
            for name in pruned_names(root, chain):
                (layout.chains_dir(root) / chain / name).unlink(missing_ok=True)
                leafcache.forget(layout.chains_dir(root) / chain / name)
    for chain, segs, st in todo:
        rec = {
            "type": "audit.pruned",
            "before": before,
            "time": ev.utc_now(),
            "events": st["events"],
            "checkpoint": st["checkpoint"],
            "since_checkpoint": st["since_checkpoint"],
            "segments": st["segments"],
        }
        rng = _range_at(root, chain, st["seq"], read_pruned(root, chain))
        if rng is not None:  # the Merkle tree's state at the cut: verify goes on rebuilding the tree from it
            rec["range"] = rng
        line = signer.seal_line(rec, chain, st["seq"], st["prev"])[0]
        out.append(
            {
                "chain": chain,
                "removed": [s.name for s in segs],
                "through_seq": st["seq"],
                "events_pruned_total": st["events"],
            }
        )
        if dry_run:
            continue
        d = layout.chains_dir(root) / chain
        layout.write_atomic(d / PRUNED, line)  # first the record: a crash here leaves extra files, not a gap
        for seg in segs:
            seg.unlink()
            leafcache.forget(seg)
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return {"before": before, "dry_run": dry_run, "chains": out}


def _range_at(root: Path, chain: str, seq: int, prior: dict[str, Any] | None) -> list[str] | None:
    """The compact range (base64 hashes) of the chain's tree of ``seq`` leaves, from the segments (and an
    earlier prune record's range); None when the leaves before it are not all there."""
    import base64

    from guard.audit.logtree import line_leaf
    from guard.audit.merkle import CompactRange

    tree = CompactRange()
    if prior is not None:
        try:
            tree = CompactRange(int(prior["seq"]), [base64.b64decode(h) for h in prior["range"]])
        except (KeyError, TypeError, ValueError):
            return None
    for seg in layout.segments(root, chain):
        for _, _, line in layout.iter_lines(seg):
            try:
                s = json.loads(line).get("seq")
            except ValueError:
                continue
            if s == tree.size + 1 and s <= seq:
                tree.append(line_leaf(line))
    return [base64.b64encode(h).decode() for h in tree.hashes] if tree.size == seq else None
