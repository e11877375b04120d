"""`guard audit verify --witness-key VKEY --witness-quorum K --tsa-ca PEM`: check ``witnessed.log``.

For each chain, every record of ``witnessed.log`` (guard/audit/notary.py) is checked against the journal
itself, not against the stored checkpoints (whoever holds the log key could re-sign those):

- the checkpoint is signed by one of the journal's keys, for this chain's origin (``witness_bad_checkpoint``);
- the journal's own tree at that size has that root (``witness_root_mismatch``: the history was rewritten
  after the witnesses saw it), and the chain holds that many events (``witness_beyond_chain``: cut back);
- the cosignatures by the given witness keys verify; the newest record needs ``quorum`` of them
  (``witness_quorum_missing``; older records are counted);
- after ``guard audit prune``, the tree is recomputed from the compact range stored with the smallest signed
  checkpoint at or after the cut; records of smaller sizes are counted (``pruned_unchecked``), their
  cosignatures still checked;
- with ``--tsa-ca``, each token verifies over the checkpoint bytes and chains to that CA
  (``timestamp_invalid``); a record without one is counted and reported (``timestamp_missing`` fails only
  with ``--require-timestamps``);
- ``unwitnessed_events``: events after the newest checkpoint with the quorum (records deleted from the end of
  ``witnessed.log`` show here); ``--max-unwitnessed N`` fails above N (``witness_lag``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.audit import layout, logtree
from guard.audit import note as notes
from guard.audit.cosign import WitnessKey, cosigners
from guard.audit.merkle import CompactRange
from guard.audit.notary import read_records


def load_witness_keys(values: list[str]) -> list[WitnessKey]:
    """vkeys given as text, or files holding one vkey a line."""
    out: list[WitnessKey] = []
    for v in values:
        p = Path(v)
        lines = p.read_text().split() if "+" not in v and p.exists() else [v]
        out += [WitnessKey.parse(x) for x in lines if x.strip()]
    return out


def _first_seq(root: Path, chain: str) -> int:
    for seg in layout.segments(root, chain):
        for _, _, line in layout.iter_lines(seg):
            try:
                return int(orjson.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
    return 1


def _start(root: Path, chain: str, first: int, log_keys: list[Ed25519PublicKey]) -> CompactRange | None:
    """Where the tree can be recomputed from: the empty tree, or after ``guard audit prune`` removed the
    leaves before ``first``, the stored compact range of the smallest signed checkpoint at or after the cut
    (its root must be the one the journal's key signed)."""
    if first <= 1:
        return CompactRange()
    best: CompactRange | None = None
    for rec in logtree.read_notes(root, chain):
        size = rec.get("size")
        if not isinstance(size, int) or size < first - 1 or (best is not None and size >= best.size):
            continue
        try:
            cr = CompactRange(size, [base64.b64decode(h) for h in rec["range"]])
            cp, _ = notes.open_checkpoint_with_keys(str(rec["note"]), log_keys, logtree.origin_for(chain))
        except (KeyError, TypeError, ValueError):
            continue
        if cp.size == size and cp.root == cr.root():
            best = cr
    return best


def _roots(root: Path, chain: str, sizes: set[int], start: CompactRange) -> tuple[dict[int, bytes], int]:
    """The journal's tree root at each of ``sizes`` (from ``start`` on) and how many leaves the chain holds,
    recomputed from the segments."""
    tree = start.copy()
    out: dict[int, bytes] = {tree.size: tree.root()} if tree.size in sizes else {}
    for seg in layout.segments(root, chain):
        for _, _, line in layout.iter_lines(seg):
            try:
                seq = orjson.loads(line)["seq"]
            except (ValueError, KeyError, TypeError):
                continue
            if seq != tree.size + 1:
                continue
            tree.append(logtree.line_leaf(line))
            if tree.size in sizes:
                out[tree.size] = tree.root()
    return out, tree.size


def check_chain(
    root: Path,
    chain: str,
    log_keys: list[Ed25519PublicKey],
    witness_keys: list[WitnessKey],
    quorum: int,
    tsa_cas: list[Any] | None = None,
    require_timestamps: bool = False,
    max_unwitnessed: int | None = None,
) -> dict[str, Any]:
    recs = read_records(root, chain)
    rep: dict[str, Any] = {
        "chain": chain,
        "records": len(recs),
        "problems": [],
        "witnessed_size": 0,
        "cosigners": {},
        "timestamps": {"valid": 0, "missing": 0, "invalid": 0},
        "below_quorum": 0,
    }
    if not recs:
        if quorum:
            rep["problems"].append({"reason": "witness_quorum_missing", "detail": "no witnessed checkpoint"})
        rep["ok"] = not rep["problems"]
        return rep
    sizes = {int(r["size"]) for r in recs if isinstance(r, dict) and isinstance(r.get("size"), int)}
    first = _first_seq(root, chain)
    start = _start(root, chain, first, log_keys)
    roots, events = _roots(root, chain, sizes, start) if start is not None else ({}, first - 1)
    rep["events"] = events
    rep["pruned_unchecked"] = 0  # records of sizes whose leaves `guard audit prune` removed
    origin = logtree.origin_for(chain)
    newest_quorum: tuple[int, dict[str, int]] | None = None
    for i, r in enumerate(recs, 1):
        where = {"record": i}
        if not isinstance(r, dict) or not isinstance(r.get("size"), int):
            rep["problems"].append({**where, "reason": "witness_record_unreadable"})
            continue
        note = str(r.get("checkpoint", ""))
        try:
            cp, _ = notes.open_checkpoint_with_keys(note, log_keys, origin)
        except notes.NoteError as e:
            rep["problems"].append({**where, "reason": "witness_bad_checkpoint", "detail": str(e)})
            continue
        if cp.size != r["size"]:
            rep["problems"].append({**where, "reason": "witness_bad_checkpoint", "detail": "size differs"})
            continue
        if start is None or cp.size < start.size:
            rep["pruned_unchecked"] += 1  # its cosignatures are still checked; its root can no longer be
        elif cp.size > events:
            rep["problems"].append({**where, "reason": "witness_beyond_chain", "size": cp.size, "events": events})
        elif cp.size and roots.get(cp.size) != cp.root:
            rep["problems"].append({**where, "reason": "witness_root_mismatch", "size": cp.size})
        try:
            signed = cosigners(note + str(r.get("cosignatures", "")), witness_keys)
        except notes.NoteError:
            signed = {}
        if len(signed) >= quorum:
            newest_quorum = (cp.size, signed)
        else:
            rep["below_quorum"] += 1
        if tsa_cas is not None:
            _check_token(rep, where, r, note.encode(), tsa_cas, require_timestamps)
    last = recs[-1]
    if quorum and (newest_quorum is None or not isinstance(last, dict) or newest_quorum[0] != last.get("size")):
        rep["problems"].append(
            {
                "reason": "witness_quorum_missing",
                "size": last.get("size") if isinstance(last, dict) else None,
                "quorum": quorum,
            }
        )
    if newest_quorum:
        rep["witnessed_size"], rep["cosigners"] = newest_quorum
    rep["unwitnessed_events"] = max(0, events - rep["witnessed_size"])
    if max_unwitnessed is not None and rep["unwitnessed_events"] > max_unwitnessed:
        rep["problems"].append(
            {"reason": "witness_lag", "unwitnessed_events": rep["unwitnessed_events"], "max": max_unwitnessed}
        )
    rep["ok"] = not rep["problems"]
    return rep


def _check_token(
    rep: dict[str, Any], where: dict[str, Any], r: dict[str, Any], data: bytes, cas: list[Any], required: bool
) -> None:
    from guard.audit.tsa import check_token

    tsr = r.get("tsr")
    if not tsr:
        rep["timestamps"]["missing"] += 1
        if required:
            rep["problems"].append({**where, "reason": "timestamp_missing", "detail": r.get("timestamp_error")})
        return
    try:
        token = base64.b64decode(str(tsr), validate=True)
    except ValueError:
        token = b""
    res = check_token(token, data, cas)
    if res.ok:
        rep["timestamps"]["valid"] += 1
        rep["timestamps"]["last"] = res.gen_time.isoformat() if res.gen_time else None
    else:
        rep["timestamps"]["invalid"] += 1
        rep["problems"].append({**where, "reason": "timestamp_invalid", "detail": res.reason})


def check_dir(
    root: Path,
    log_keys: list[Ed25519PublicKey],
    witness_keys: list[WitnessKey],
    quorum: int,
    tsa_cas: list[Any] | None = None,
    require_timestamps: bool = False,
    max_unwitnessed: int | None = None,
) -> dict[str, Any]:
    chains = [
        check_chain(root, c, log_keys, witness_keys, quorum, tsa_cas, require_timestamps, max_unwitnessed)
        for c in layout.chain_names(root)
    ]
    return {
        "ok": all(c["ok"] for c in chains),
        "quorum": quorum,
        "witnesses": [k.name for k in witness_keys],
        "chains": chains,
    }
