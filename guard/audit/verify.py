"""Verify a journal directory with nothing but its files and the public keys.

Per chain: every line's hash and Ed25519 signature, every link (``prev``), sequence continuity, every
checkpoint (head, count, previous checkpoint), the signed head record, and torn lines. The first broken
point of each chain is reported with file, line, seq and one reason:

    bad_signature  hash_mismatch  broken_link  seq_gap  truncated  unknown_key

A torn final line (a crash mid-write) is reported as ``torn``: a warning, not tampering, when it ends the
chain or the writer's next start acknowledged it in a signed recovery checkpoint.
Signatures are checked in parallel processes (Ed25519 verification is the cost); links run in order.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.audit import layout
from guard.audit.seal import GENESIS, canonical, check_signature

REASONS = ("bad_signature", "hash_mismatch", "broken_link", "seq_gap", "truncated", "unknown_key")
_CHUNK = 4 << 20
_KEYS: dict[str, Ed25519PublicKey] = {}
_MODE = {"all": True}  # signatures: True = every event; False = checkpoints, chunk ends and head records
Line = tuple[Any, Any, Any, str, Any, Any, Any]  # seq, prev, hash, status, type, checkpoint, key_id


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


def _init(raw: dict[str, bytes], all_signatures: bool = True) -> None:
    _MODE["all"] = all_signatures
    _KEYS.clear()
    _KEYS.update({k: Ed25519PublicKey.from_public_bytes(v) for k, v in raw.items()})


def _hash_ok(line: bytes, e: dict[str, Any], h: str, sig: str) -> bool:
    """Guard writes the canonical body with hash and sig appended: hash those bytes directly; a line in any
    other (equivalent) form, e.g. re-serialised by another tool, is canonicalised again."""
    i = line.rfind(b',"hash":"')
    if i > 0 and line[i:] == b',"hash":"%s","sig":"%s"}' % (h.encode(), sig.encode()):
        if hashlib.sha256(line[:i] + b"}").hexdigest() == h:
            return True
    body = {k: v for k, v in e.items() if k != "hash" and k != "sig"}
    try:
        return hashlib.sha256(canonical(body)).hexdigest() == h
    except (ValueError, TypeError, UnicodeError):
        return False


def _check_line(line: bytes, last: bool = False) -> Line:
    try:
        e = json.loads(line)
        seq, prev, h, sig, kid = e["seq"], e["prev"], e["hash"], e["sig"], e["key_id"]
        typ = e.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None, None, "malformed", None, None, None
    key = _KEYS.get(kid)
    if key is None:
        status = "unknown_key"
    elif not isinstance(h, str) or not isinstance(sig, str) or not _hash_ok(line, e, h, sig):
        status = "hash_mismatch"
    elif (_MODE["all"] or last or typ == "audit.checkpoint") and not check_signature(key, h, sig):
        status = "bad_signature"
    else:
        status = "ok"
    return seq, prev, h, status, typ, e.get("checkpoint") if typ == "audit.checkpoint" else None, kid


def _check_chunk(path: str, start: int, end: int) -> list[Line]:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")[:-1]
    n = len(lines)
    return [_check_line(ln, i == n - 1) for i, ln in enumerate(lines)]


def _chunks(path: Path, size: int) -> tuple[list[tuple[str, int, int]], int]:
    """Newline-aligned byte ranges covering the complete lines; returns them and the torn tail length."""
    n = path.stat().st_size
    out, start = [], 0
    with open(path, "rb") as f:
        while start < n:
            stop = min(start + _CHUNK, n)
            if stop < n:
                f.seek(stop)
                rest = f.read(1 << 20)
                nl = rest.find(b"\n")
                stop = n if nl < 0 else stop + nl + 1
            if stop == n:
                f.seek(max(start, n - 1))
                if f.read(1) != b"\n":
                    f.seek(start)
                    last_nl = f.read(n - start).rfind(b"\n")
                    stop = start + last_nl + 1
                    if stop > start:
                        out.append((str(path), start, stop))
                    return out, n - stop
            out.append((str(path), start, stop))
            start = stop
    return out, 0


def verify_dir(root: Path, keys: dict[str, Ed25519PublicKey], jobs: int | None = None,
               progress: Callable[[int], None] | None = None, signatures: str = "all") -> Report:
    """Check every chain under ``root`` against ``keys`` (key_id -> public key).

    ``signatures="all"`` checks every event's signature. ``"checkpoints"`` checks every hash and link but
    signatures only of checkpoints, of the last event of each segment chunk and of head records: each
    signed hash commits to everything before it, so any change is still found, though a rewritten (re-hashed)
    stretch is reported at the first signature that fails rather than at the first edited event.
    """
    if signatures not in ("all", "checkpoints"):
        raise ValueError("signatures must be 'all' or 'checkpoints'")
    every = signatures == "all"
    raw = {k: v.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) for k, v in keys.items()}
    plan: list[tuple[str, Path, list[tuple[str, int, int]], int]] = []
    total = 0
    for chain in layout.chain_names(root):
        for seg in layout.segments(root, chain):
            chunks, torn = _chunks(seg, _CHUNK)
            plan.append((chain, seg, chunks, torn))
            total += seg.stat().st_size
    _init(raw, every)
    jobs = jobs or os.cpu_count() or 1
    tasks = [c for _, _, chunks, _ in plan for c in chunks]
    if jobs > 1 and total > 8 * _CHUNK // 4 and len(tasks) > 1:
        with ProcessPoolExecutor(jobs, initializer=_init, initargs=(raw, every)) as pool:
            results = iter(pool.map(_check_chunk, *zip(*tasks)) if tasks else [])
            return _link(root, plan, results, progress)
    return _link(root, plan, (_check_chunk(*t) for t in tasks), progress)


def _link(root: Path, plan: list[Any], results: Any, progress: Callable[[int], None] | None) -> Report:
    by_chain: dict[str, list[tuple[Path, list[Line], int]]] = {}
    for chain, seg, chunks, torn in plan:
        lines: list[Line] = []
        for _ in chunks:
            lines.extend(next(results))
            if progress:
                progress(len(lines))
        by_chain.setdefault(chain, []).append((seg, lines, torn))
    for chain in layout.chain_names(root):  # every segment gone: only the head record is left to tell
        if chain not in by_chain and layout.read_head(root, chain) is not None:
            by_chain[chain] = []
    return Report([_verify_chain(root, chain, segs) for chain, segs in sorted(by_chain.items())])


class _Chain:
    """Walks one chain's lines in order, remembering the first break."""

    def __init__(self, rep: ChainReport, head: dict[str, Any] | None, seqs: set[int]) -> None:
        self.rep, self.head, self.seqs = rep, head, seqs
        self.expect, self.prev, self.last_cp, self.since_cp = 1, GENESIS, "", 0
        self.head_hash: str | None = None
        self.last_type: Any = None
        self.last_cp_final = False
        self.kids: set[str] = set()

    def fail(self, seg: Path, lineno: int, seq: Any, reason: str, detail: str = "") -> None:
        if self.rep.broken is None:
            self.rep.broken = Break(seg.name, lineno, seq if isinstance(seq, int) else None, reason, detail)
            self.rep.status = "tampered"

    def step(self, seg: Path, lineno: int, rec: Line) -> None:
        seq, prev, h, status, typ, cp, kid = rec
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
        self.rep.events += 1
        self.kids.add(kid)
        self.rep.first_seq = self.rep.first_seq or seq
        self.rep.last_seq = seq
        if self.head and seq == self.head.get("seq"):
            self.head_hash = h
        self.expect, self.prev, self.last_type = seq + 1, h, typ
        self.since_cp = 0 if cp is not None else self.since_cp + 1
        return None

    def _checkpoint(self, seg: Path, lineno: int, seq: int, h: str, cp: dict[str, Any]) -> bool:
        ok = (cp.get("seq") == seq - 1 and cp.get("head") == self.prev
              and cp.get("prev_checkpoint", "") == self.last_cp and cp.get("count") == self.since_cp)
        if not ok and cp.get("reason") == "recovery":  # a restart may follow a previous checkpoint's chain
            ok = cp.get("seq") == seq - 1 and cp.get("head") == self.prev
        if not ok:
            self.fail(seg, lineno, seq, "broken_link", "checkpoint does not match the events before it")
            return False
        rec = cp.get("recovery") or {}
        if rec.get("head_seq_missing"):
            self.fail(seg, lineno, seq, "truncated",
                      f"writer found events up to seq {rec['head_seq_missing']} missing when it restarted")
            return False
        self.rep.checkpoints += 1
        self.last_cp, self.last_cp_final = h, bool(cp.get("final"))
        return True


def _verify_chain(root: Path, chain: str, segs: list[tuple[Path, list[Line], int]]) -> ChainReport:
    rep = ChainReport(chain, segments=len(segs))
    head = layout.read_head(root, chain)
    seqs = {r[0] for _, lines, _ in segs for r in lines if isinstance(r[0], int)}
    w = _Chain(rep, head, seqs)
    for i, (seg, lines, torn) in enumerate(segs):
        for n, rec in enumerate(lines, 1):
            w.step(seg, n, rec)
            if rep.broken:
                return rep
        if torn:
            nxt = next((ls[0] for _, ls, _ in segs[i + 1:] if ls), None)
            if nxt is None or _acknowledges(nxt, seg):
                rep.torn.append({"file": seg.name, "line": len(lines) + 1, "bytes": torn,
                                 "acknowledged": nxt is not None})
                rep.status = "torn"
            else:
                w.fail(seg, len(lines) + 1, None, "truncated", "segment ends mid-line and the chain goes on")
                return rep
    rep.closed = w.last_type == "audit.checkpoint" and w.last_cp_final
    _check_head(w, segs)
    rep.key_ids = sorted(w.kids)
    return rep


def _acknowledges(rec: Line, seg: Path) -> bool:
    cp = rec[5] or {}
    return cp.get("reason") == "recovery" and (cp.get("recovery") or {}).get("torn_segment") == seg.name


def _check_head(w: _Chain, segs: list[tuple[Path, list[Line], int]]) -> None:
    """The signed head record names the last durable checkpoint: a chain that ends before it was cut."""
    last = segs[-1][0] if segs else Path("-")
    line = len(segs[-1][1]) if segs else 0
    head = w.head
    if head is None:
        return w.fail(last, line, w.rep.last_seq, "truncated", "HEAD.json missing or unreadable")
    h = {k: v for k, v in head.items() if k not in ("hash", "sig")}
    key = _KEYS.get(head.get("key_id", ""))
    if key is None:
        return w.fail(last, line, w.rep.last_seq, "unknown_key", "HEAD.json signed by an unknown key")
    if hashlib.sha256(canonical(h)).hexdigest() != head.get("hash") or not check_signature(key, head["hash"], head.get("sig", "")):
        return w.fail(last, line, w.rep.last_seq, "bad_signature", "HEAD.json signature")
    hs = int(head.get("seq", 0))
    if hs > (w.rep.last_seq or 0):
        return w.fail(last, line, w.rep.last_seq, "truncated", f"head record says seq {hs}; the chain ends at {w.rep.last_seq or 0}")
    if hs and w.head_hash != head.get("head"):
        return w.fail(last, line, hs, "hash_mismatch", "event at the head record's seq has another hash")
    return None
