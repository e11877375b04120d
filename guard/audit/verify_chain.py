"""The parent side of ``guard audit verify``: each chain walked in order (units stitched, line by line where
they do not fit), its Merkle tree recomputed from the leaves, and every signed checkpoint checked against it.
The first broken point is kept (file, line, seq, reason)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard.audit import layout
from guard.audit.checkpoints_verify import Notes
from guard.audit.merkle import CompactRange
from guard.audit.pruned import PRUNED, check_pruned, read_pruned
from guard.audit.seal import GENESIS, record_problem
from guard.audit.verify_units import _CP, _KEYS, Line, _check_lines, _read_lines, _Unit


@dataclass
class Break:
    file: str
    line: int
    seq: int | None
    reason: str
    detail: str = ""


@dataclass
class ChainReport:
    chain: str
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    segments: int = 0
    checkpoints: int = 0
    closed: bool = False  # ends with a final checkpoint (clean shutdown)
    key_ids: list[str] = field(default_factory=list)
    status: str = "intact"  # intact | torn | tampered
    broken: Break | None = None
    torn: list[dict[str, Any]] = field(default_factory=list)
    pruned: dict[str, Any] | None = None  # what `guard audit prune` removed, from its signed record
    signed_size: int = 0  # events covered by the newest signed checkpoint that verified
    unsigned_tail: int = 0  # events after it: hash-linked, not yet covered by a signed checkpoint


Segs = list[tuple[Path, list[tuple[_Unit, tuple[str, int, int]]], int]]  # segment, (unit, its range), torn bytes


def _head(root: Path, chain: str) -> dict[str, Any] | None:
    head = layout.read_head(root, chain)
    return head if isinstance(head, dict) else None


class _Seqs:
    """The sequence numbers present in a chain (a unit that holds together is a range)."""

    def __init__(self, segs: Segs) -> None:
        self.ranges: list[range] = []
        self.loose: set[int] = set()
        for _, units, _ in segs:
            for u, _ in units:
                if u.records is not None:
                    self.loose.update(r[0] for r in u.records if isinstance(r[0], int))
                elif u.first is not None:
                    self.ranges.append(range(u.first[0], u.last_seq + 1))

    def __contains__(self, seq: int) -> bool:
        return seq in self.loose or any(seq in r for r in self.ranges)


class _Chain:
    """Walks one chain's lines in order, remembering the first break."""

    def __init__(self, rep: ChainReport, head: dict[str, Any] | None, seqs: _Seqs, notes: Notes) -> None:
        self.rep, self.head, self.seqs = rep, head, seqs
        self.expect, self.prev, self.last_cp, self.since_cp = 1, GENESIS, "", 0
        self.head_hash: str | None = None
        self.last_type: Any = None
        self.last_cp_final = False
        self.kids: set[str] = set()
        self.tree: CompactRange | None = CompactRange()  # None: leaves before the first kept one are gone
        self.notes = notes

    def fail(self, seg: Path, lineno: int, seq: Any, reason: str, detail: str = "") -> None:
        if self.rep.broken is None:
            self.rep.broken = Break(seg.name, lineno, seq if isinstance(seq, int) else None, reason, detail)
            self.rep.status = "tampered"

    def leaf(self, seg: Path, lineno: int, leaf: bytes) -> None:
        """The next leaf of the tree; at a size a signed checkpoint names, its root must be the signed one."""
        if self.tree is None:
            return
        self.tree.append(leaf)
        if self.tree.size == self.notes.next_size:
            why = self.notes.check_root(self.tree)
            if why is not None:
                self.fail(seg, lineno, self.tree.size, *why)

    def unit(self, seg: Path, base: int, u: _Unit, where: tuple[str, int, int]) -> None:
        """Lines ``base + 1 ..`` of ``seg``: a summary is taken whole once its first line and first
        checkpoint fit the chain so far; anything else is walked line by line."""
        if u.records is not None:
            return self.walk(seg, base, u.records)
        if u.first is None:
            return None
        self.step(seg, base + 1, u.first)
        if self.rep.broken or u.lines == 1:
            return None
        if u.first_cp is not None:
            i, cp = u.first_cp
            if cp.get("prev_checkpoint", "") != self.last_cp or cp.get("count") != self.since_cp + i - 1:
                return self.walk(seg, base + 1, _check_lines(_read_lines(*where))[1:])
        rep, m = self.rep, u.lines - 1
        if self.tree is not None:  # a root that does not match: walk the unit line by line to report it
            saved = self.tree.copy(), self.notes.save()
            leaves, tree, notes = memoryview(u.leaves), self.tree, self.notes
            end, done = tree.size + m, 0
            while done < m:  # up to the next signed size (or the unit's end), then that size's root
                stop = notes.next_size if tree.size < notes.next_size <= end else end
                tree.extend(leaves[32 * done :], stop - tree.size)
                done = m - (end - tree.size)
                if tree.size == notes.next_size and notes.check_root(tree) is not None:
                    self.tree, _ = saved
                    notes.restore(saved[1])
                    return self.walk(seg, base + 1, _check_lines(_read_lines(*where))[1:])
        rep.events += m
        rep.checkpoints += u.checkpoints
        rep.last_seq = u.last_seq
        self.kids |= u.key_ids
        self.expect, self.prev, self.last_type = u.last_seq + 1, u.last_hash, u.last_type
        if u.last_cp is not None:
            i, self.last_cp, self.last_cp_final = u.last_cp
            self.since_cp = m - i
        else:
            self.since_cp += m
        if u.head_hash is not None:
            self.head_hash = u.head_hash
        return None

    def walk(self, seg: Path, base: int, recs: list[Line]) -> None:
        for n, rec in enumerate(recs, base + 1):
            self.step(seg, n, rec)
            if self.rep.broken:
                return

    def step(self, seg: Path, lineno: int, rec: Line) -> None:
        seq, prev, h, status, typ, cp, kid, leaf = rec
        if status == "malformed":
            return self.fail(seg, lineno, None, "hash_mismatch", "line is not a sealed event")
        if status != "ok":
            return self.fail(seg, lineno, seq, status)
        if seq != self.expect:
            if isinstance(seq, int) and seq > self.expect and self.expect not in self.seqs:
                return self.fail(seg, lineno, seq, "seq_gap", f"expected seq {self.expect}")
            return self.fail(seg, lineno, seq, "broken_link", f"expected seq {self.expect} (lines out of order)")
        if prev != self.prev:
            return self.fail(seg, lineno, seq, "broken_link", "prev is not the hash of the preceding event")
        if cp is not None and not self._checkpoint(seg, lineno, seq, h, cp):
            return None
        self.leaf(seg, lineno, leaf)
        if self.rep.broken:
            return None
        self.rep.events += 1
        self.kids.add(kid)
        self.rep.first_seq = self.rep.first_seq or seq
        self.rep.last_seq = seq
        if self.head and seq == self.head.get("seq"):
            self.head_hash = h
        self.expect, self.prev, self.last_type = seq + 1, h, typ
        self.since_cp = 0 if cp is not None else self.since_cp + 1
        return None

    def _checkpoint(self, seg: Path, lineno: int, seq: int, h: str, cp: Any) -> bool:
        if not isinstance(cp, dict):
            self.fail(seg, lineno, seq, "broken_link", "checkpoint does not match the events before it")
            return False
        ok = (
            cp.get("seq") == seq - 1
            and cp.get("head") == self.prev
            and cp.get("prev_checkpoint", "") == self.last_cp
            and cp.get("count") == self.since_cp
        )
        if not ok and cp.get("reason") == "recovery":  # a restart may follow a previous checkpoint's chain
            ok = cp.get("seq") == seq - 1 and cp.get("head") == self.prev
        if not ok:
            self.fail(seg, lineno, seq, "broken_link", "checkpoint does not match the events before it")
            return False
        rec = cp.get("recovery") or {}
        if isinstance(rec, dict) and rec.get("checkpoints_missing"):
            why = "the writer found the chain's signed checkpoints gone when it restarted"
            self.fail(seg, lineno, seq, "truncated", why)
            return False
        if isinstance(rec, dict) and rec.get("head_seq_missing"):
            self.fail(
                seg,
                lineno,
                seq,
                "truncated",
                f"writer found events up to seq {rec['head_seq_missing']} missing when it restarted",
            )
            return False
        self.rep.checkpoints += 1
        self.last_cp, self.last_cp_final = h, bool(cp.get("final"))
        return True


def _verify_chain(root: Path, chain: str, segs: Segs, external: list[str] | None = None) -> ChainReport:
    rep = ChainReport(chain, segments=len(segs))
    notes = Notes(root, chain, external)
    w = _Chain(rep, _head(root, chain), _Seqs(segs), notes)
    rec = read_pruned(root, chain)
    if rec is not None:  # the chain resumes where the signed prune record says the removed events ended
        first = segs[0][0] if segs else Path(PRUNED)
        why = check_pruned(rec, chain, _KEYS)
        if why is not None:
            w.fail(first, 0, None, why, f"{PRUNED} is not a prune record signed by a trusted key")
            return rep
        w.expect, w.prev, w.last_cp, w.since_cp = (
            rec["seq"] + 1,
            rec["prev"],
            rec["checkpoint"],
            rec["since_checkpoint"],
        )
        rep.pruned = {
            "through_seq": rec["seq"],
            "events": rec["events"],
            "before": rec.get("before"),
            "time": rec.get("time"),
            "segments": len(rec.get("segments") or []),
        }
        w.tree = notes.resume_after_prune(rec)
    counts = [sum(u.lines for u, _ in units) for _, units, _ in segs]
    for i, (seg, units, torn) in enumerate(segs):
        base = 0
        for u, where in units:
            w.unit(seg, base, u, where)
            if rep.broken:
                return rep
            base += u.lines
        if torn:
            nxt = next((u.first for _, us, _ in segs[i + 1 :] for u, _ in us if u.first is not None), None)
            if nxt is None or _acknowledges(nxt, seg):
                rep.torn.append(
                    {"file": seg.name, "line": counts[i] + 1, "bytes": torn, "acknowledged": nxt is not None}
                )
                rep.status = "torn"
            else:
                w.fail(seg, counts[i] + 1, None, "truncated", "segment ends mid-line and the chain goes on")
                return rep
    rep.closed = w.last_type == _CP and w.last_cp_final
    last, line = (segs[-1][0], counts[-1]) if segs else (Path("-"), 0)
    if notes.present:
        problem = notes.finish(rep.last_seq or 0, w.tree)
        if problem is not None:
            w.fail(last, line, rep.last_seq, *problem)
        rep.signed_size = notes.signed_size
        rep.unsigned_tail = max(0, (rep.last_seq or 0) - notes.signed_size) if not rep.broken else 0
    else:
        _check_head(w, last, line)
    rep.key_ids = sorted(w.kids)
    return rep


def _acknowledges(rec: Line, seg: Path) -> bool:
    cp = rec[5] if isinstance(rec[5], dict) else {}
    recovery = cp.get("recovery") or {}
    return cp.get("reason") == "recovery" and isinstance(recovery, dict) and recovery.get("torn_segment") == seg.name


def _check_head(w: _Chain, last: Path, line: int) -> None:
    """The signed head record names the last durable checkpoint: a chain that ends before it was cut."""
    head = w.head
    if head is None:
        return w.fail(last, line, w.rep.last_seq, "truncated", "HEAD.json missing or unreadable")
    why = record_problem(head, _KEYS)
    if why == "unknown_key":
        return w.fail(last, line, w.rep.last_seq, "unknown_key", "HEAD.json signed by an unknown key")
    if why is not None:
        return w.fail(last, line, w.rep.last_seq, "bad_signature", "HEAD.json signature")
    hs = int(head.get("seq", 0))
    if hs > (w.rep.last_seq or 0):
        return w.fail(
            last,
            line,
            w.rep.last_seq,
            "truncated",
            f"head record says seq {hs}; the chain ends at {w.rep.last_seq or 0}",
        )
    if hs and w.head_hash != head.get("head"):
        return w.fail(last, line, hs, "hash_mismatch", "event at the head record's seq has another hash")
    return None
