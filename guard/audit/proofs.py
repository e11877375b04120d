"""Receipts and proofs from a journal on disk: inclusion of one event (leaf) in a signed checkpoint, and
consistency between two signed checkpoints of one chain; and their offline verification with only the
public key (``verify_receipt``, ``check_consistency``).

A receipt (JSON, what ``GET /audit/v1/proof`` and ``guard audit proof`` return):

    {"log": "<origin>", "index": i, "leaf_hash": "<base64>", "tree_size": n,
     "inclusion_proof": ["<base64>", ...], "checkpoint": "<signed note>"}

``index`` is the event's ``seq - 1``; ``leaf_hash`` = SHA-256(0x00 || the event's canonical body).
"""

from __future__ import annotations

import base64
import bisect
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.audit import layout, leafcache
from guard.audit import note as notes
from guard.audit.logtree import NOTES, chain_of, line_leaf, newest_note, read_notes
from guard.audit.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from guard.audit.seal import body_of, canonical

_CACHE_FROM = 256  # perfect aligned subtrees of at least this many leaves are remembered


class ProofError(ValueError):
    """No such log or leaf, no checkpoint covers it yet, or a receipt that does not verify."""


class Leaves:
    """The leaf hashes of one chain read from its segments, extended on each ``refresh`` (append-only files:
    only what was added is read), with the roots of large aligned subtrees remembered."""

    def __init__(self, root: Path, chain: str, use_cache: bool = True) -> None:
        self.root, self.chain = root, chain
        self.blob = bytearray()
        self._offsets: dict[str, int] = {}
        self._memo: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()
        self.notes: list[tuple[int, str]] = []  # stored checkpoints (size, note), sorted by size
        self._notes_at = 0
        self.use_cache = use_cache
        self.cached = 0  # leaves taken from the leaf cache

    def __len__(self) -> int:
        return len(self.blob) // 32

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.blob[32 * i : 32 * i + 32])

    def refresh(self) -> int:
        """Read what was appended; a closed segment read from its start comes from (and goes to) its leaf
        cache (guard.audit.leafcache)."""
        with self._lock:
            segs = layout.segments(self.root, self.chain)
            for n, seg in enumerate(segs):
                start = self._offsets.get(seg.name, 0)
                whole, first = start == 0 and n < len(segs) - 1, len(self)
                if whole and self.use_cache:
                    cached = leafcache.load(seg, first)
                    if cached is not None:
                        self.blob += cached
                        self.cached += len(cached) // 32
                        self._offsets[seg.name] = seg.stat().st_size
                        continue
                for _, end, line in layout.iter_lines(seg, start):
                    self._offsets[seg.name] = end
                    try:
                        seq = orjson.loads(line)["seq"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    if seq == len(self) + 1:
                        self.blob += line_leaf(line)
                if whole:
                    leafcache.store(seg, first, bytes(self.blob[32 * first :]))
            self._read_notes()
            return len(self)

    def _read_notes(self) -> None:
        """The checkpoint records appended since the last call (whole lines only)."""
        try:
            with open(layout.chains_dir(self.root) / self.chain / NOTES, "rb") as f:
                f.seek(self._notes_at)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._notes_at += end
        for raw in data[:end].split(b"\n"):
            try:
                rec = orjson.loads(raw) if raw.strip() else None
            except orjson.JSONDecodeError:
                continue
            size, text = (rec.get("size"), rec.get("note")) if isinstance(rec, dict) else (None, None)
            if isinstance(size, int) and isinstance(text, str):
                bisect.insort(self.notes, (size, text))

    def covering(self, index: int) -> tuple[int, str] | None:
        """The smallest stored checkpoint whose tree holds leaf ``index``."""
        i = bisect.bisect_left(self.notes, (index + 1, ""))
        return self.notes[i] if i < len(self.notes) else None

    def subroot(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return self[lo]
        perfect = n & (n - 1) == 0 and lo % n == 0
        if perfect and n >= _CACHE_FROM and (lo, hi) in self._memo:
            return self._memo[(lo, hi)]
        k = 1 << ((n - 1).bit_length() - 1)
        r = node_hash(self.subroot(lo, lo + k), self.subroot(lo + k, hi))
        if perfect and n >= _CACHE_FROM:
            self._memo[(lo, hi)] = r
        return r


_READERS: dict[tuple[str, str], Leaves] = {}


def leaves_of(root: Path, chain: str, use_cache: bool = True) -> Leaves:
    key = (str(root), chain)
    r = _READERS.get(key)
    if r is None:
        r = _READERS[key] = Leaves(Path(root), chain, use_cache)
    r.refresh()
    return r


def covering_note(root: Path, chain: str, index: int) -> tuple[int, str] | None:
    """The first stored checkpoint whose tree holds leaf ``index``: (size, note)."""
    best: tuple[int, str] | None = None
    for rec in read_notes(root, chain):
        size, text = rec.get("size"), rec.get("note")
        if not (isinstance(size, int) and size > index and isinstance(text, str)):
            continue
        if best is None or size < best[0]:
            best = (size, text)
    if best is None:
        text = newest_note(root, chain)
        try:
            size = notes.parse_checkpoint(notes.parse(text).text).size if text else 0
        except notes.NoteError:
            size = 0
        if text and size > index:
            best = (size, text)
    return best


def receipt(root: Path, log: str, index: int) -> dict[str, Any]:
    """The inclusion proof of leaf ``index`` of log ``log`` to the first checkpoint that covers it."""
    chain = chain_of(log)
    if chain is None or not (layout.chains_dir(root) / chain).is_dir():
        raise ProofError(f"no audit log {log!r}")
    if index < 0:
        raise ProofError("index must be >= 0")
    return checked(root, chain, lambda leaves: _receipt(root, chain, log, index, leaves))


def checked(root: Path, chain: str, build: Callable[[Leaves], dict[str, Any]]) -> dict[str, Any]:
    """``build``'s receipt from the chain's leaves; when leaves came from the leaf cache and the proof does
    not lead to the checkpoint's root (a stale or altered cache), the cache is dropped and the receipt built
    again from the segments."""
    leaves = leaves_of(root, chain)
    rec = build(leaves)
    if leaves.cached and not _holds(rec):
        leafcache.drop(root, chain)
        _READERS.pop((str(root), chain), None)
        rec = build(leaves_of(root, chain, use_cache=False))
    return rec


def _holds(rec: dict[str, Any]) -> bool:
    """Whether the receipt's proof leads to its checkpoint's root (the signature is the verifier's job)."""
    try:
        cp = notes.parse_checkpoint(notes.parse(rec["checkpoint"]).text)
    except (notes.NoteError, ValueError):
        return False
    proof = [base64.b64decode(h) for h in rec["inclusion_proof"]]
    return verify_inclusion(rec["index"], rec["tree_size"], base64.b64decode(rec["leaf_hash"]), proof, cp.root)


def _receipt(root: Path, chain: str, log: str, index: int, leaves: Leaves) -> dict[str, Any]:
    found = leaves.covering(index) or covering_note(root, chain, index)
    if found is None:
        raise ProofError(f"no signed checkpoint covers leaf {index} of {log} yet")
    size, text = found
    return receipt_doc(log, index, size, text, leaves, "its checkpoint")


def receipt_doc(log: str, index: int, size: int, checkpoint: str, leaves: Leaves, what: str) -> dict[str, Any]:
    """A receipt: leaf ``index`` of ``log`` proven included in the tree of ``size`` that ``checkpoint`` signs
    (``what`` names that checkpoint in the error when the journal holds fewer events)."""
    if len(leaves) < size:
        raise ProofError(f"the journal of {log} holds {len(leaves)} events; {what} covers {size}")
    proof = inclusion_proof(leaves, index, size, leaves.subroot)  # type: ignore[arg-type]
    return {
        "log": log,
        "index": index,
        "leaf_hash": base64.b64encode(leaves[index]).decode(),
        "tree_size": size,
        "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
        "checkpoint": checkpoint,
    }


def event_leaf(event: dict[str, Any]) -> bytes:
    """The Merkle leaf hash of a journal event as stored (its canonical body: without ``hash`` and ``sig``)."""
    return leaf_hash(canonical(body_of(event)))


def _b64(s: Any) -> bytes:
    try:
        return base64.b64decode(str(s), validate=True)
    except ValueError:
        raise ProofError("not base64") from None


def verify_receipt(rec: dict[str, Any], keys: Iterable[Ed25519PublicKey], event: dict[str, Any] | None = None) -> str:
    """Check a receipt offline: the checkpoint is signed by one of ``keys`` under the log's own name, and the
    leaf is at ``index`` of the tree it signs; with ``event``, that the event is the leaf (and names that
    log's chain and seq). Returns a one-line summary; raises ProofError saying what does not hold."""
    try:
        log, index, size = str(rec["log"]), rec["index"], rec["tree_size"]
        leaf, path = _b64(rec["leaf_hash"]), [_b64(h) for h in rec["inclusion_proof"]]
        text = str(rec["checkpoint"])
    except (KeyError, TypeError) as e:
        raise ProofError(f"not a receipt: {e}") from None
    try:
        cp, _ = notes.open_checkpoint_with_keys(text, keys, origin=log)
    except notes.NoteError as e:
        raise ProofError(f"checkpoint: {e}") from None
    if cp.size != size:
        raise ProofError(f"the receipt says tree size {size}; the signed checkpoint says {cp.size}")
    if not verify_inclusion(index, size, leaf, path, cp.root):
        raise ProofError("the inclusion proof does not lead to the signed root")
    if event is not None:
        if event_leaf(event) != leaf:
            raise ProofError("the event is not the leaf the receipt proves")
        if chain_of(log) != event.get("chain") or event.get("seq") != index + 1:
            raise ProofError("the event names another chain or seq")
    return f"leaf {index} of {log} is in its signed tree of {size} events"


def check_consistency(
    root: Path, old_text: str, new_text: str, keys: Iterable[Ed25519PublicKey]
) -> tuple[notes.Checkpoint, notes.Checkpoint, list[bytes]]:
    """Both checkpoints signed by ``keys`` for one log, and a consistency proof computed from the journal
    that the newer tree extends the older one. Raises ProofError (a fork: the proof does not verify)."""
    keys = list(keys)
    try:
        old, _ = notes.open_checkpoint_with_keys(old_text, keys)
        new, _ = notes.open_checkpoint_with_keys(new_text, keys)
    except notes.NoteError as e:
        raise ProofError(f"checkpoint: {e}") from None
    if old.origin != new.origin:
        raise ProofError(f"checkpoints of two logs: {old.origin} and {new.origin}")
    if old.size > new.size:
        old, new = new, old
    chain = chain_of(old.origin)
    if chain is None:
        raise ProofError(f"not a Guard audit log: {old.origin}")
    leaves = leaves_of(root, chain)
    if len(leaves) < new.size:
        raise ProofError(f"the journal holds {len(leaves)} events; the newer checkpoint covers {new.size}")
    proof = consistency_proof(leaves, old.size, new.size, leaves.subroot)  # type: ignore[arg-type]
    if not verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise ProofError(
            f"not consistent: the tree of {new.size} events does not extend the signed tree of {old.size} (a fork)"
        )
    return old, new, proof
