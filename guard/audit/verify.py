"""Verify a journal directory with nothing but its files and the public keys.

Per chain: every line's hash and Ed25519 signature, every link (``prev``), sequence continuity, every
checkpoint (head, count, previous checkpoint), the signed head record, and torn lines. The first broken
point of each chain is reported with file, line, seq and one reason:

    bad_signature  hash_mismatch  broken_link  seq_gap  truncated  unknown_key

A torn final line (a crash mid-write) is reported as ``torn``: a warning, not tampering, when it ends the
chain or the writer's next start acknowledged it in a signed recovery checkpoint.

Work is split by chain, by segment, and within a segment into newline-aligned units of about ``_CHUNK``
bytes; the units go to a process pool (``jobs``). A worker checks its unit on its own: each line's hash
and signature (per the signature mode), and the links, sequence numbers and checkpoints between the
unit's lines. A unit where all of that holds comes back as a summary (its first event, last seq and hash,
checkpoint state, key ids); any other comes back as every line's record. The parent stitches each chain
in order: the first event of each unit against the end of the one before and the unit's first checkpoint
against the chain's checkpoint state, replaying line by line whatever does not fit. Unit boundaries do
not depend on ``jobs``, so the report is the same for any number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.audit import layout
from guard.audit.pruned import PRUNED, check_pruned, pruned_names, read_pruned
from guard.audit.seal import GENESIS, canonical, check_signature, check_signatures, record_problem

REASONS = ("bad_signature", "hash_mismatch", "broken_link", "seq_gap", "truncated", "unknown_key")
_CHUNK = 4 << 20
_KEYS: dict[str, bytes] = {}  # key_id -> raw public key
_MODE = {"all": True}  # signatures: True = every event; False = checkpoints, unit ends and head records
_FAST = True  # False: every unit comes back line by line (the reference the tests compare the fast path with)
_CP = "audit.checkpoint"
_MALFORMED = (None, None, None, "malformed", None, None, None)
Line = tuple[Any, Any, Any, str, Any, Any, Any]  # seq, prev, hash, status, type, checkpoint, key_id


class _Unit(NamedTuple):
    """What a worker returns for one unit (a newline-aligned byte range of one segment)."""

    lines: int
    first: Line | None  # the record of its first line (the parent checks it against the chain so far)
    records: list[Line] | None  # every line's record when the unit does not hold together on its own
    last_seq: int = 0
    last_hash: str = ""
    last_type: Any = None
    first_cp: tuple[int, dict[str, Any]] | None = None  # (index, checkpoint) the parent checks: count, prev_checkpoint
    checkpoints: int = 0  # checkpoints after the first line
    last_cp: tuple[int, str, bool] | None = None  # (index, hash, final) of the last checkpoint after the first line
    key_ids: frozenset[str] = frozenset()
    head_hash: str | None = None  # hash of the event at the head record's seq, after the first line


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


def _init(raw: dict[str, bytes], all_signatures: bool = True, fast: bool = True) -> None:
    global _FAST
    _MODE["all"], _FAST = all_signatures, fast
    _KEYS.clear()
    _KEYS.update(raw)  # raw bytes of keys load_public_keys parsed


def _hash_ok(line: bytes, e: dict[str, Any], h: str, sig: str) -> bool:
    """Guard writes the canonical body with hash and sig appended: hash those bytes directly; a line in any
    other (equivalent) form, e.g. re-serialised by another tool, is canonicalised again.

    Sound because Guard only ever hashes canonical bodies: bytes whose SHA-256 is the stored hash are the
    body that was hashed (and signed, or linked to a signed event), whatever form they are in.
    """
    t = len(h) + len(sig) + 20  # ,"hash":"<h>","sig":"<sig>"}
    if line.endswith(b',"hash":"%s","sig":"%s"}' % (h.encode(), sig.encode())):
        d = hashlib.sha256(memoryview(line)[:-t])
        d.update(b"}")
        if d.hexdigest() == h:
            return True
    body = {k: v for k, v in e.items() if k != "hash" and k != "sig"}
    try:
        return hashlib.sha256(canonical(body)).hexdigest() == h
    except (ValueError, TypeError, UnicodeError):
        return False


def _loads(line: bytes) -> Any:
    """orjson (2x json.loads); what it refuses (NaN, lone surrogates, ...) gets the standard parser's say."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def _check_line(
    line: bytes,
    last: bool = False,
    loads: Callable[[bytes], Any] = _loads,
    wait: list[tuple[int, bytes, str, str]] | None = None,
    index: int = 0,
) -> Line:
    """The line's record. With ``wait``, a signature to check is appended to it (with ``index``) and the
    status says ``ok`` until ``_check_lines`` has checked it."""
    try:
        e = loads(line)
        seq, prev, h, sig, kid = e["seq"], e["prev"], e["hash"], e["sig"], e["key_id"]
        typ = e.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        return _MALFORMED
    key = _KEYS.get(kid) if type(kid) is str else None
    if key is None:
        status = "unknown_key"
    elif type(h) is not str or type(sig) is not str or not _hash_ok(line, e, h, sig):
        status = "hash_mismatch"
    elif not (_MODE["all"] or last or typ == _CP):
        status = "ok"
    elif wait is not None:
        wait.append((index, key, h, sig))
        status = "ok"
    else:
        status = "ok" if check_signature(key, h, sig) else "bad_signature"
    return seq, prev, h, status, typ, e.get("checkpoint") if typ == _CP else None, kid


def _read_lines(path: str, start: int, end: int) -> list[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return data.split(b"\n")[:-1]


def _check_lines(lines: list[bytes]) -> list[Line]:
    """Every line's record, the signatures checked together (``check_signatures``: the same verdicts as
    one at a time, 3x faster per signature)."""
    n = len(lines)
    wait: list[tuple[int, bytes, str, str]] = []
    recs = [_check_line(line, i == n - 1, _loads, wait, i) for i, line in enumerate(lines)]
    for (i, *_), ok in zip(wait, check_signatures([w[1:] for w in wait]), strict=False):
        if not ok:
            recs[i] = (*recs[i][:3], "bad_signature", *recs[i][4:])
    return recs


def _records(lines: list[bytes], done: list[Line]) -> list[Line]:
    n = len(lines)
    return done + [_check_line(lines[i], i == n - 1) for i in range(len(done), n)]


def _check_unit(path: str, start: int, end: int, head_seq: Any = None) -> _Unit:
    """Check one unit on its own; a summary when it holds together, else every line's record."""
    lines = _read_lines(path, start, end)
    n = len(lines)
    if not n:
        return _Unit(0, None, [])
    if not _FAST:
        every = _records(lines, [])
        return _Unit(n, every[0], every)
    recs = _check_lines(lines)
    kids: set[str] = set()
    seq = prev_seq = first_cp = last_cp = head_hash = None
    h: Any = None
    typ: Any = None
    cp_hash: str | None = None  # the unit's latest checkpoint, once it has one
    since = cps = 0
    for i, rec in enumerate(recs):
        seq, prev, hh, status, typ, cp, kid = rec
        if status != "ok" or type(seq) is not int:
            return _Unit(n, recs[0], recs)
        if i:
            if seq != prev_seq + 1 or prev != h:  # type: ignore[operator]
                return _Unit(n, recs[0], recs)
            if seq == head_seq:
                head_hash = hh
        if cp is not None:
            if i:
                if not _checkpoint_holds(cp, seq, h, cp_hash, since):
                    return _Unit(n, recs[0], recs)
                if cp_hash is None and cp.get("reason") != "recovery":
                    first_cp = (i, cp)
                cps += 1
                last_cp = (i, hh, bool(cp.get("final")))
            cp_hash, since = hh, 0
        else:
            since += 1
        kids.add(kid)
        prev_seq, h = seq, hh
    return _Unit(n, recs[0], None, seq, h, typ, first_cp, cps, last_cp, frozenset(kids), head_hash)  # type: ignore[arg-type]


def _checkpoint_holds(cp: Any, seq: int, prev: str, cp_hash: str | None, since: int) -> bool:
    """What a worker can check of a checkpoint after its unit's first line (see ``_Chain._checkpoint``);
    with no checkpoint before it in the unit, count and prev_checkpoint are left to the parent."""
    if type(cp) is not dict or cp.get("seq") != seq - 1 or cp.get("head") != prev:
        return False
    rec = cp.get("recovery") or {}
    if type(rec) is not dict or rec.get("head_seq_missing"):
        return False
    return (
        cp_hash is None
        or cp.get("reason") == "recovery"
        or (cp.get("prev_checkpoint", "") == cp_hash and cp.get("count") == since)
    )


def _chunks(path: Path, size: int) -> tuple[list[tuple[str, int, int]], int]:
    """Newline-aligned byte ranges covering the complete lines; returns them and the torn tail length."""
    n = path.stat().st_size
    out, start = [], 0
    with open(path, "rb") as f:
        while start < n:
            stop = min(start + size, n)
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


def verify_dir(
    root: Path,
    keys: dict[str, Ed25519PublicKey],
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
    signatures: str = "all",
) -> Report:
    """Check every chain under ``root`` against ``keys`` (key_id -> public key) with ``jobs`` processes
    (default: all CPUs; 1 checks in this process). The report does not depend on ``jobs``.

    ``signatures="all"`` checks every event's signature. ``"checkpoints"`` checks every hash, link, sequence
    number and checkpoint, but signatures only of checkpoints, of the last event of each unit (so of every
    segment's end and of the chain's last event) and of head records: each signed hash commits to everything
    before it, so any change is still found, though a rewritten (re-hashed) stretch is reported at the first
    signature that fails rather than at the first edited event.
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
            return _link(root, plan, pool.map(_check_unit, *zip(*tasks, strict=False)), progress)
    return _link(root, plan, (_check_unit(*t) for t in tasks), progress)


Segs = list[tuple[Path, list[tuple[_Unit, tuple[str, int, int]]], int]]  # segment, (unit, its range), torn bytes


def _link(
    root: Path,
    plan: list[tuple[str, Path, list[tuple[str, int, int]], int]],
    results: Iterable[_Unit],
    progress: Callable[[int], None] | None,
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
    for chain in layout.chain_names(root):  # every segment gone: only the head record is left to tell
        if chain not in by_chain and layout.read_head(root, chain) is not None:
            by_chain[chain] = []
    return Report([_verify_chain(root, chain, segs) for chain, segs in sorted(by_chain.items())])


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

    def __init__(self, rep: ChainReport, head: dict[str, Any] | None, seqs: _Seqs) -> None:
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


def _verify_chain(root: Path, chain: str, segs: Segs) -> ChainReport:
    rep = ChainReport(chain, segments=len(segs))
    w = _Chain(rep, _head(root, chain), _Seqs(segs))
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
    _check_head(w, segs[-1][0] if segs else Path("-"), counts[-1] if segs else 0)
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
