"""A chain's signed checkpoints, as ``guard audit verify`` checks them: each note's signature by a trusted
key (the key name is the chain's origin), and then, while the chain is walked, each signed root against the
tree recomputed from the events (guard.audit.verify_chain)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.audit import note as notes
from guard.audit.logtree import origin_for, read_latest, read_notes_strict
from guard.audit.merkle import EMPTY_ROOT, CompactRange
from guard.audit.verify_units import _KEYS

Why = tuple[str, str]  # reason, detail


def check_note(text: str, origin: str, keys: list[Ed25519PublicKey]) -> notes.Checkpoint | Why:
    """The checkpoint in ``text`` when the chain's own key (one of ``keys``) signed it, else why not:
    ``unknown_key`` (no signature by a trusted key) or ``bad_signature`` (malformed, another log, or a
    signature by a trusted key that does not verify)."""
    try:
        n = notes.parse(text)
        cp = notes.parse_checkpoint(n.text)
    except notes.NoteError as e:
        return "bad_signature", f"not a signed checkpoint: {e}"
    if cp.origin != origin:
        return "bad_signature", f"a checkpoint of log {cp.origin!r}, not {origin!r}"
    verifiers = [v for v in notes.verifiers_for_keys(n, keys) if v.name == origin]
    if not verifiers:
        return "unknown_key", "checkpoint not signed by a trusted key"
    try:
        notes.open_note(text, verifiers)
    except notes.NoteError as e:
        return "bad_signature", f"checkpoint signature: {e}"
    return cp


class Notes:
    """The stored checkpoints of one chain (and any an auditor kept: ``external``), verified up front; the
    roots are compared while the tree is rebuilt."""

    def __init__(self, root: Path, chain: str, external: list[str] | None = None) -> None:
        self.origin = origin_for(chain)
        self.keys = [Ed25519PublicKey.from_public_bytes(raw) for raw in _KEYS.values()]
        self.problem: Why | None = None
        self.roots: dict[int, tuple[bytes, bool]] = {}  # size -> (root, from an auditor's copy)
        self.signed_size = 0
        records = read_notes_strict(root, chain)
        latest = read_latest(root, chain)
        self.present = bool(records) or latest is not None
        self.latest_missing = latest is None
        for i, rec in enumerate(records):
            text = rec.get("note") if isinstance(rec, dict) else None
            if not isinstance(text, str):
                if i < len(records) - 1:  # a torn last record is a crash between write and fsync
                    self._problem(("bad_signature", f"checkpoints.log record {i + 1} is not a checkpoint"))
                continue
            self._add(text, False)
        if latest is not None:
            self._add(latest, False)
        for text in external or ():
            try:
                if notes.parse_checkpoint(notes.parse(text).text).origin == self.origin:
                    self._add(text, True)
            except notes.NoteError:
                continue
        empty = self.roots.pop(0, None)  # the empty tree a fresh chain signs at open
        if empty is not None and empty[0] != EMPTY_ROOT:
            self._problem(("bad_signature", "a signed checkpoint of size 0 with a root other than the empty tree's"))
        self._sizes = sorted(self.roots)
        self.next_size = self._sizes[0] if self._sizes else -1
        self.has_any = empty is not None or bool(self._sizes)

    def _problem(self, why: Why) -> None:
        if self.problem is None:
            self.problem = why

    def _add(self, text: str, external: bool) -> None:
        got = check_note(text, self.origin, self.keys)
        if isinstance(got, tuple):
            self._problem(got)
            return
        have = self.roots.get(got.size)
        if have is not None and have[0] != got.root:  # two signed roots for one size: two histories
            self._problem(("fork", f"two signed checkpoints of size {got.size} with different roots"))
            return
        self.roots[got.size] = (got.root, external or (have is not None and have[1]))

    def save(self) -> tuple[list[int], int]:
        return list(self._sizes), self.signed_size

    def restore(self, state: tuple[list[int], int]) -> None:
        self._sizes, self.signed_size = list(state[0]), state[1]
        self.next_size = self._sizes[0] if self._sizes else -1

    def check_root(self, tree: CompactRange) -> Why | None:
        """At ``tree.size`` (a size some checkpoint signed): the signed root must be the tree's."""
        size = tree.size
        want, external = self.roots[size]
        self._sizes.pop(0)
        self.next_size = self._sizes[0] if self._sizes else -1
        if tree.root() != want:
            if external:
                return "fork", f"the first {size} events differ from the checkpoint of size {size} kept outside"
            return "bad_signature", f"the first {size} events are not those the signed checkpoint of size {size} covers"
        self.signed_size = size
        return None

    def finish(self, last_seq: int, tree: CompactRange | None) -> Why | None:
        """After the walk: problems with the notes themselves, then sizes the chain does not reach."""
        if self.problem is not None:
            return self.problem
        top = max(self.roots, default=0)
        if top > last_seq:
            return "truncated", f"a signed checkpoint covers {top} events; the chain ends at {last_seq}"
        if not self.has_any:
            return "truncated", "no signed checkpoint"
        if self.latest_missing:
            return "truncated", "the latest checkpoint file is missing"
        if tree is None:  # pruned without the tree's state: the roots could not be recomputed
            self.signed_size = top
        return None

    def resume_after_prune(self, rec: dict[str, Any]) -> CompactRange | None:
        """The tree at the prune record's seq, from the compact range it holds (signed with it), or None."""
        import base64

        try:
            tree = CompactRange(int(rec["seq"]), [base64.b64decode(h) for h in rec["range"]])
        except (KeyError, TypeError, ValueError):
            return None
        while self._sizes and self._sizes[0] <= tree.size:  # leaves gone: those roots cannot be recomputed
            self._sizes.pop(0)
            self.signed_size = max(self.signed_size, 0)
        self.next_size = self._sizes[0] if self._sizes else -1
        return tree
