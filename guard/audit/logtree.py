"""Each chain is a Merkle log (RFC 6962 hashing, guard.audit.merkle): leaf ``seq - 1`` is
SHA-256(0x00 || the event's canonical body), the body being the event without ``hash`` (and ``sig``).
Signed checkpoints (C2SP tlog-checkpoint notes, guard.audit.note) are stored beside the segments:

    <dir>/chains/<chain>/checkpoints.log     every checkpoint, one JSON object a line:
                                             {"size": N, "note": "<signed note>", "range": [<base64 hash>...]}
    <dir>/chains/<chain>/checkpoint          the latest signed note, replaced atomically

``range`` (the compact range of the tree at N, unsigned) only lets a writer resume without rereading the
chain: it is used when its root equals the signed root. ``Tree`` is the writer's side (a mixin of
guard.audit.journal.Journal): the tree follows sealing, a second one follows durability, a failed write rolls
the first back to the second.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import layout
from guard.audit import note as notes
from guard.audit.merkle import CompactRange, leaf_hash

ORIGIN_PREFIX = "guard-audit"
NOTES = "checkpoints.log"
LATEST = "checkpoint"


def origin_for(chain: str) -> str:
    """The log id of a chain: the checkpoint origin, the note key name and the receipt's log part."""
    return f"{ORIGIN_PREFIX}/{chain}"


def chain_of(origin: str) -> str | None:
    prefix = ORIGIN_PREFIX + "/"
    if not origin.startswith(prefix):
        return None
    chain = origin[len(prefix) :]
    return chain if chain and layout.safe_chain(chain) == chain else None


def body_bytes(line: bytes) -> bytes:
    """The canonical body inside a line Guard wrote: the line up to its ``,"hash":`` member, closed."""
    i = line.rindex(b',"hash":"')
    return line[:i] + b"}"


def line_leaf(line: bytes) -> bytes:
    return leaf_hash(body_bytes(line))


def read_notes(root: Path, chain: str) -> list[dict[str, Any]]:
    """Every stored checkpoint record of a chain (unverified), in file order; unreadable lines are skipped
    by the writer and reported by verify (``read_notes_strict``)."""
    out: list[dict[str, Any]] = []
    for rec in read_notes_strict(root, chain):
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_notes_strict(root: Path, chain: str) -> list[Any]:
    """Each line of checkpoints.log parsed, None where a line is not JSON (torn or edited)."""
    path = layout.chains_dir(root) / chain / NOTES
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out: list[Any] = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append(None)
    return out


def read_latest(root: Path, chain: str) -> str | None:
    try:
        return (layout.chains_dir(root) / chain / LATEST).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _range_of(rec: dict[str, Any]) -> CompactRange | None:
    try:
        return CompactRange(int(rec["size"]), [base64.b64decode(h) for h in rec["range"]])
    except (KeyError, TypeError, ValueError):
        return None


class Tree:
    """Writer side: the mixin that keeps a chain's tree and signs and stores its checkpoints."""

    root: Path
    dir: Path
    chain: str
    _seq: int

    def _tree_open(self, private: Ed25519PrivateKey) -> None:
        self.origin = origin_for(self.chain)
        self._note_signer = notes.Signer(self.origin, private)
        self.tree = CompactRange()
        self._durable_tree = CompactRange()
        self._notes: dict[int, tuple[str, list[str]]] = {}  # checkpoint seq -> (note, range) not yet durable

    def _tree_resume(self, last_seq: int) -> None:
        """The tree of events 1..last_seq: from the newest stored checkpoint whose range matches its signed
        root (verified with our own key), then the events after it read from the segments."""
        verifier = self._note_signer.verifier()
        start: CompactRange | None = None
        for rec in reversed(read_notes(self.root, self.chain)):
            cr = _range_of(rec)
            if cr is None or cr.size > last_seq:
                continue
            try:
                cp, _, _ = notes.open_checkpoint(str(rec.get("note", "")), [verifier])
            except notes.NoteError:
                continue
            if cp.size == cr.size and cp.root == cr.root():
                start = cr
                break
        tree = start or CompactRange()
        if tree.size < last_seq:
            segs = layout.segments(self.root, self.chain)
            firsts = [int(p.name[:16]) for p in segs]
            for i, seg in enumerate(segs):
                if i + 1 < len(segs) and firsts[i + 1] <= tree.size + 1:
                    continue  # every event of this segment is in the resumed tree already
                for _, _, line in layout.iter_lines(seg):
                    try:
                        seq = json.loads(line)["seq"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    if seq == tree.size + 1 and seq <= last_seq:
                        tree.append(line_leaf(line))
        self.tree, self._durable_tree = tree, tree.copy()

    def _tree_sign_now(self) -> None:
        """At open: sign the tree as the disk holds it (a fresh chain: the empty tree) and store it, unless the
        newest stored checkpoint is of that size already; then the latest file is rewritten. Either way a
        write that must succeed before the journal takes events (as a full disk makes it fail)."""
        size = self.tree.size
        if noted_size(self.root, self.chain) == size and (text := newest_note(self.root, self.chain)):
            layout.write_atomic(self.dir / LATEST, text.encode())
            return
        cp = notes.Checkpoint(self.origin, size, self.tree.root())
        self._store_note(size, cp.sign([self._note_signer]), [base64.b64encode(h).decode() for h in self.tree.hashes])

    def _tree_checkpoint(self, seq: int) -> None:
        """Sign the checkpoint of the tree as it is now (its last leaf: the checkpoint event ``seq``); stored
        once that event is durable (``_tree_durable``)."""
        cp = notes.Checkpoint(self.origin, self.tree.size, self.tree.root())
        rng = [base64.b64encode(h).decode() for h in self.tree.hashes]
        self._notes[seq] = (cp.sign([self._note_signer]), rng)

    def _tree_durable(self, leaves: list[bytes], checkpoint_seqs: list[int]) -> None:
        """A batch is durable: follow it with the durable tree and store the notes of its checkpoints."""
        for leaf in leaves:
            self._durable_tree.append(leaf)
        for seq in checkpoint_seqs:
            item = self._notes.pop(seq, None)
            if item is not None:
                self._store_note(seq, *item)

    def _store_note(self, size: int, note: str, rng: list[str]) -> None:
        rec = json.dumps({"size": size, "note": note, "range": rng}, separators=(",", ":")).encode() + b"\n"
        fd = os.open(self.dir / NOTES, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o640)
        try:
            view = memoryview(rec)
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        layout.write_atomic(self.dir / LATEST, note.encode())

    def _tree_rollback(self) -> None:
        """A write failed: the chain goes back to its last durable event, so does the tree."""
        self.tree = self._durable_tree.copy()
        self._notes.clear()


def newest_note(root: Path, chain: str) -> str | None:
    """The latest signed note of a chain: the ``checkpoint`` file, or the last stored record."""
    latest = read_latest(root, chain)
    if latest:
        return latest
    recs = read_notes(root, chain)
    with contextlib.suppress(IndexError):
        return str(recs[-1]["note"])
    return None


def noted_size(root: Path, chain: str) -> int:
    """The tree size of the newest stored checkpoint, unverified (0 when none can be read)."""
    text = newest_note(root, chain)
    try:
        return notes.parse_checkpoint(notes.parse(text).text).size if text else 0
    except notes.NoteError:
        return 0
