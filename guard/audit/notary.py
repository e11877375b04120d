"""Notary: trusted time and witness cosignatures for each chain's checkpoints, off the request path.

One thread (beside the forwarder, in worker 0) watches every chain's latest signed checkpoint
(``chains/<chain>/checkpoint``, written by the journal once it is durable). For each new one it asks the TSA
(``audit.timestamp``) for an RFC 3161 token over the note bytes as the log signed them, and the witnesses
(``audit.witnesses``) for cosignatures, sending each the consistency proof from the size it last cosigned.
The outcome is appended to ``chains/<chain>/witnessed.log`` (fdatasync'd), one JSON object a line::

    {"size": N, "checkpoint": "<note as the log signed it>", "cosignatures": "— w1 ...\\n— w2 ...\\n",
     "witnesses": {"w1": <cosignature time>, ...}, "failed": {"w2": "<why>"}, "tsr": "<base64 DER>" | null,
     "timestamp_error": "<why>" | null, "time": "<RFC 3339>"}

The checkpoint itself is never held back: a TSA or witness that fails is counted
(``guard_audit_notary_failures_total{kind}``), logged, recorded in the line, reported by verify, and asked
again with the next checkpoint (a witness jumps straight to it; the proof covers everything in between).
If the notary falls behind, it takes the newest checkpoint. With ``notary_on_failure: block`` the notary is
also unhealthy (``/readyz`` 503) until a checkpoint gets its token and its quorum.

Consistency proofs are made from the compact range stored with each checkpoint (``checkpoints.jsonl``) and the
leaves after it, read from the segments; only the leaves since the smallest size a witness holds are kept.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from guard import telemetry as tm
from guard.audit import layout, logtree
from guard.audit import note as notes
from guard.audit.merkle import CompactRange, node_hash, subtree_root
from guard.audit.settings import AuditSettings

log = logging.getLogger("guard.audit.notary")
RECORDS = "witnessed.log"
MAX_TAIL = 1 << 20  # leaf hashes kept for witnesses that lag (32 MiB of hashes)


def _nodes(size: int, hashes: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
    """(first leaf, end, hash) of each perfect subtree of a compact range, leftmost first."""
    out: list[tuple[int, int, bytes]] = []
    lo = 0
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            out.append((lo, lo + (1 << bit), hashes[len(out)]))
            lo += 1 << bit
    return out


def consistency_proof_from(base: CompactRange, after: Sequence[bytes], new_size: int) -> list[bytes]:
    """PROOF(m, D[0:n]) (RFC 9162 2.1.4.1) from the compact range of the tree at m and the leaf hashes
    D[m:n]: every node of the proof left of m is a subtree of the compact range, every other lies in D[m:n]."""
    old = base.size
    if not 0 <= old <= new_size <= old + len(after):
        raise ValueError(f"no consistency proof from {old} to {new_size} with {len(after)} leaves after {old}")
    if old == 0 or old == new_size:
        return []
    nodes = _nodes(old, base.hashes)

    def mth(lo: int, hi: int) -> bytes:
        if lo >= old:
            return subtree_root(after, lo - old, hi - old)
        parts = [h for a, b, h in nodes if lo <= a and b <= hi]
        if hi > old or not parts:
            raise AssertionError("a proof node straddles the old size")
        r = parts[-1]
        for h in reversed(parts[:-1]):
            r = node_hash(h, r)
        return r

    out: list[bytes] = []

    def sub(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                out.append(mth(lo, hi))
            return
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            sub(m, lo, lo + k, whole)
            out.append(mth(lo + k, hi))
        else:
            sub(m - k, lo + k, hi, False)
            out.append(mth(lo, lo + k))

    sub(old, 0, new_size, True)
    return out


class ChainLeaves:
    """A chain's tree as the notary needs it: the compact range at ``base.size`` and the leaves after it."""

    def __init__(self, root: Path, chain: str) -> None:
        self.root, self.chain = root, chain
        self.base = CompactRange()
        self.tail: list[bytes] = []
        self._seg: Path | None = None
        self._off = 0
        self._lock = threading.Lock()  # the witnesses' requests ask for proofs at once

    @property
    def size(self) -> int:
        return self.base.size + len(self.tail)

    def start_at(self, size: int) -> None:
        """Start from the stored compact range of a checkpoint of ``size`` (its root checked against the note
        the journal signed), else from the beginning of the chain."""
        self.base, self.tail, self._seg, self._off = CompactRange(), [], None, 0
        if size <= 0:
            return
        for rec in reversed(logtree.read_notes(self.root, self.chain)):
            if rec.get("size") != size:
                continue
            try:
                cr = CompactRange(size, [base64.b64decode(h) for h in rec["range"]])
                cp = notes.parse_checkpoint(notes.parse(str(rec["note"])).text)
            except (KeyError, TypeError, ValueError):
                continue
            if cp.size == size and cp.root == cr.root():
                self.base = cr
                self._seek(size + 1)
                return

    def _seek(self, seq: int) -> None:
        """Position the reader at the segment that holds ``seq`` (its first line; ``read_to`` skips)."""
        segs = layout.segments(self.root, self.chain)
        pick = segs[0] if segs else None
        for s in segs:
            m = layout.SEGMENT_RE.match(s.name)
            if m and int(m.group(1)) <= seq:
                pick = s
        self._seg, self._off = pick, 0

    def read_to(self, n: int) -> None:
        """Read leaves until the tree has ``n``; ValueError when the chain holds fewer events."""
        if self.size >= n:
            return
        segs = layout.segments(self.root, self.chain)
        if self._seg is None and segs:
            self._seg, self._off = segs[0], 0
        i = segs.index(self._seg) if self._seg in segs else 0
        for seg in segs[i:]:
            if seg != self._seg:
                self._seg, self._off = seg, 0
            for _, end, line in layout.iter_lines(seg, self._off):
                self._off = end
                try:
                    seq = orjson.loads(line)["seq"]
                except (ValueError, KeyError, TypeError):
                    continue
                if seq == self.size + 1:
                    self.tail.append(logtree.line_leaf(line))
                    if self.size >= n:
                        return
        raise ValueError(f"chain {self.chain} holds {self.size} events, not {n}")

    def range_at(self, size: int) -> CompactRange:
        cr = self.base.copy()
        for leaf in self.tail[: size - self.base.size]:
            cr.append(leaf)
        return cr

    def root_at(self, size: int) -> bytes:
        self.read_to(size)
        return self.range_at(size).root()

    def proof(self, old: int, new: int) -> list[bytes]:
        if old == 0 or old == new:
            return []
        with self._lock:
            # a witness behind what is kept, or ahead of what was read (a first request after a start): from the
            # compact range stored with the checkpoint of its size, not from the beginning of the chain
            if old < self.base.size or old > self.size:
                self.start_at(old)
            self.read_to(new)
            b = self.base.size
            return consistency_proof_from(self.range_at(old), self.tail[old - b : new - b], new)

    def forget_before(self, size: int) -> None:
        """Drop the leaves before ``size`` (every witness holds at least that size)."""
        with self._lock:
            if not self.base.size < size <= self.size:
                return
            drop = size - self.base.size
            self.base = self.range_at(size)
            self.tail = self.tail[drop:]


def read_records(root: Path, chain: str) -> list[Any]:
    """Each line of witnessed.log parsed; None for a line that is not JSON."""
    try:
        data = (layout.chains_dir(root) / chain / RECORDS).read_bytes()
    except OSError:
        return []
    out: list[Any] = []
    for raw in data.split(b"\n"):
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append(None)
    return out


def append_record(root: Path, chain: str, rec: dict[str, Any]) -> None:
    path = layout.chains_dir(root) / chain / RECORDS
    data = json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Notary:
    """``start()`` / ``stop()``: timestamps and cosignatures for the checkpoints of every chain in audit.dir."""

    def __init__(self, settings: AuditSettings, poll_s: float = 0.2, retry_s: float = 5.0) -> None:
        from guard.audit.witnessing import Cosigner

        self.settings, self.root, self.poll_s, self.retry_s = settings, Path(settings.dir), poll_s, retry_s
        self._retry_at: dict[str, float] = {}
        self.cosigner = Cosigner(settings.witnesses) if settings.witnesses else None
        self.quorum = settings.quorum
        self.done: dict[str, int] = {}  # chain -> size of the last checkpoint handled
        self.trees: dict[str, ChainLeaves] = {}
        self.healthy = True
        self.last: dict[str, dict[str, Any]] = {}  # chain -> the last record written
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard-tsa")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        for chain in layout.chain_names(self.root):  # what was handled before a restart
            recs = [r for r in read_records(self.root, chain) if isinstance(r, dict)]
            if recs:
                self.done[chain] = int(recs[-1].get("size", 0))
                self.last[chain] = recs[-1]
        self._thread = threading.Thread(target=self._run, name="guard-audit-notary", daemon=True)
        self._thread.start()

    def stop(self, final_pass: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if final_pass:  # the final checkpoints written at close
            self.run_once()
        if self.cosigner is not None:
            self.cosigner.close()
        self._pool.shutdown(wait=False)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_once()
            except Exception:  # never let the thread die: the next poll tries again
                log.exception("audit notary")

    def run_once(self) -> int:
        """Handle the newest checkpoint of each chain if it is new; returns how many were handled."""
        n = 0
        with self._lock:
            for chain in layout.chain_names(self.root):
                text = logtree.read_latest(self.root, chain)
                if not text:
                    continue
                try:
                    cp = notes.parse_checkpoint(notes.parse(text).text)
                except notes.NoteError:
                    continue
                done = self.done.get(chain, 0)
                due = time.monotonic() >= self._retry_at.get(chain, 0)
                retry = cp.size == done and due and self._incomplete(chain)
                if cp.size > done or retry:  # a failed checkpoint is tried again every retry_s till a new one comes
                    self.notarize(chain, text, cp.size)
                    n += 1
        return n

    def _token(self, data: bytes) -> tuple[str | None, str | None]:
        """(base64 token, None) or (None, why not)."""
        from guard.audit.tsa import TsaError, request_token

        assert self.settings.timestamp is not None
        try:
            return base64.b64encode(request_token(data, self.settings.timestamp)).decode(), None
        except (TsaError, OSError, ValueError) as e:
            return None, str(e)[:300]

    def _incomplete(self, chain: str) -> bool:
        rec = self.last.get(chain)
        if rec is None:
            return False
        no_token = self.settings.timestamp is not None and not rec.get("tsr")
        return no_token or (self.cosigner is not None and len(rec.get("witnesses") or {}) < self.quorum)

    def _tree(self, chain: str) -> ChainLeaves:
        t = self.trees.get(chain)
        if t is None:
            t = self.trees[chain] = ChainLeaves(self.root, chain)
            t.start_at(self.done.get(chain, 0))
        return t

    def notarize(self, chain: str, note: str, size: int) -> dict[str, Any]:
        data = note.encode()
        rec: dict[str, Any] = {
            "size": size,
            "checkpoint": note,
            "cosignatures": "",
            "witnesses": {},
            "failed": {},
            "tsr": None,
            "timestamp_error": None,
            "time": _now(),
        }
        ok = True
        ts = self.settings.timestamp
        token = self._pool.submit(self._token, data) if ts is not None else None  # beside the witnesses
        if self.cosigner is not None:
            tree = self._tree(chain)
            res = self.cosigner.cosign(data, lambda old: tree.proof(old, size))
            rec["cosignatures"] = res.note[len(data) :].decode()
            rec["witnesses"], rec["failed"] = res.signed, res.failed
            tm.WITNESS_SECONDS.observe(res.seconds)
            if len(res.signed) < self.quorum:
                tm.NOTARY_FAILURES.labels("witness").inc()
                log.warning(
                    "audit checkpoint %s@%d: %d of %d witness cosignatures (%s)",
                    chain,
                    size,
                    len(res.signed),
                    self.quorum,
                    "; ".join(f"{k}: {v}" for k, v in res.failed.items()),
                )
                ok = False
            held = [s for s in (c.sizes.get(logtree.origin_for(chain)) for c in self.cosigner.clients) if s]
            if held and len(held) == len(self.cosigner.clients):
                tree.forget_before(min(held))
            if len(tree.tail) > MAX_TAIL:  # a witness down for long: it gets its proof from the stored range later
                tree.forget_before(size)
        if token is not None:
            tsr, err = token.result()
            rec["tsr"], rec["timestamp_error"] = tsr, err
            if err is not None:
                tm.NOTARY_FAILURES.labels("timestamp").inc()
                log.warning("audit checkpoint %s@%d: no timestamp: %s", chain, size, err)
                ok = False
        append_record(self.root, chain, rec)
        self.done[chain] = size
        self._retry_at[chain] = time.monotonic() + self.retry_s
        self.last[chain] = rec
        tm.NOTARIZED.inc()
        if self.settings.notary_on_failure == "block":
            self.healthy = ok
        return rec
