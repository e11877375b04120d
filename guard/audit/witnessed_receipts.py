"""Receipts whose checkpoint carries the witnesses' cosignatures (and the TSA's token), verifiable offline.

``guard audit proof --witnessed`` proves a leaf's inclusion in the first checkpoint covering it that witnesses
cosigned (``witnessed.log``), not merely the first one Guard signed: the receipt's ``checkpoint`` is that note
with the cosignature lines appended (a plain signed-note reader ignores them, so ``verify-receipt`` with only
the log key still works), plus ``timestamp_token`` (base64 DER) when the checkpoint has one.
``verify-receipt --witness-key VKEY --witness-quorum K`` also requires K valid cosignatures on that tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guard.audit import layout
from guard.audit import note as notes
from guard.audit.cosign import WitnessKey, cosigners
from guard.audit.logtree import chain_of
from guard.audit.notary import read_records
from guard.audit.proofs import Leaves, ProofError, checked, receipt_doc


def witnessed_receipt(root: Path, log: str, index: int, quorum: int = 1) -> dict[str, Any]:
    """The inclusion proof of leaf ``index`` to the first checkpoint covering it with ``quorum`` cosignatures
    (as the notary recorded them; ``verify-receipt`` checks them)."""
    chain = chain_of(log)
    if chain is None or not (layout.chains_dir(root) / chain).is_dir():
        raise ProofError(f"no audit log {log!r}")
    if index < 0:
        raise ProofError("index must be >= 0")
    best: dict[str, Any] | None = None
    for r in read_records(root, chain):
        if not isinstance(r, dict) or not isinstance(r.get("size"), int) or r["size"] <= index:
            continue
        if len(r.get("witnesses") or {}) >= quorum and (best is None or r["size"] < best["size"]):
            best = r
    if best is None:
        raise ProofError(f"no checkpoint with {quorum} witness cosignature(s) covers leaf {index} of {log} yet")
    size = best["size"]

    def build(leaves: Leaves) -> dict[str, Any]:
        text = str(best["checkpoint"]) + str(best.get("cosignatures") or "")
        return receipt_doc(log, index, size, text, leaves, "the witnessed checkpoint")

    rec = checked(root, chain, build)
    if best.get("tsr"):
        rec["timestamp_token"] = best["tsr"]
    return rec


def check_receipt_witnesses(rec: dict[str, Any], keys: list[WitnessKey], quorum: int) -> dict[str, int]:
    """Witness name -> cosignature time on the receipt's checkpoint; ProofError below ``quorum``. Check the
    receipt itself (log signature, inclusion) with guard.audit.proofs.verify_receipt."""
    try:
        signed = cosigners(str(rec.get("checkpoint", "")), keys)
    except notes.NoteError as e:
        raise ProofError(f"checkpoint: {e}") from None
    if len(signed) < quorum:
        raise ProofError(f"{len(signed)} valid witness cosignature(s), {quorum} required")
    return signed
