"""`guard audit proof|verify-receipt|consistency`: receipts and proofs of the Merkle log (guard.audit.proofs).

    guard audit proof DIR --log LOG --index I            the receipt of one event, from the journal on disk
    guard audit proof DIR --request-id RID               ... of the record a request's receipt header names
    guard audit verify-receipt RECEIPT.json --key PUB    checks it offline with only the public key
                               [--event EVENT.json]      ... and that this event is the leaf it proves
    guard audit consistency OLD NEW --journal DIR --key PUB
                                                         both checkpoints signed, and the newer tree extends
                                                         the older one (a consistency proof from the journal)
Exit codes: 0 ok, 1 does not verify, 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from guard.audit.seal import load_public_keys


def register(sub: Any) -> None:
    p = sub.add_parser("proof", help="an event's receipt: inclusion proof to the signed checkpoint covering it")
    p.add_argument("dir", type=Path, help="the journal folder")
    p.add_argument("--log", help="log id (the x-guard-audit-leaf header's part before the last /)")
    p.add_argument("--index", type=int, help="leaf index (the header's last part; the event's seq - 1)")
    p.add_argument(
        "--request-id",
        help="instead of --log/--index: the request's x-guard-request-id (its exchange.started, or exchange.denied"
        " for a refusal: the record a receipt header names; for answers that carry none)",
    )
    p.add_argument("--with-event", action="store_true", help="add the event itself (its journal line) as 'event'")
    p.set_defaults(func=cmd_proof)

    r = sub.add_parser("verify-receipt", help="check a receipt offline with only the public key")
    r.add_argument("receipt", type=Path, help="receipt JSON (from GET /audit/v1/proof or `guard audit proof`)")
    r.add_argument("--key", required=True, action="append", type=Path, help="public key PEM or folder (repeatable)")
    r.add_argument("--event", type=Path, help="the event (JSON, as the journal or an export holds it) to match")
    r.set_defaults(func=cmd_verify_receipt)

    from guard.audit import witness_cli

    witness_cli.add_receipt_args(p, r)

    c = sub.add_parser("consistency", help="check that a newer signed checkpoint extends an older one")
    c.add_argument("old", type=Path, help="a signed checkpoint (note text)")
    c.add_argument("new", type=Path, help="a later signed checkpoint of the same log")
    c.add_argument("--journal", required=True, type=Path, help="the journal folder the proof is computed from")
    c.add_argument("--key", required=True, action="append", type=Path, help="public key PEM or folder (repeatable)")
    c.set_defaults(func=cmd_consistency)


def _err(msg: str) -> int:
    print(f"guard audit: {msg}", file=sys.stderr)
    return 2


def cmd_proof(args: argparse.Namespace) -> int:
    from guard.audit.logtree import chain_of
    from guard.audit.proofs import ProofError, receipt

    if args.request_id is not None:
        if args.log is not None or args.index is not None:
            return _err("proof: --request-id or --log/--index, not both")
        found = find_leaf(args.dir, args.request_id)
        if found is None:
            print(
                f"guard audit proof: no exchange.started or exchange.denied record of request {args.request_id!r}",
                file=sys.stderr,
            )
            return 1
        args.log, args.index = found
    elif args.log is None or args.index is None:
        return _err("proof: --log and --index, or --request-id")
    try:
        if args.witnessed:
            from guard.audit.witnessed_receipts import witnessed_receipt

            rec = witnessed_receipt(args.dir, args.log, args.index, args.witnessed)
        else:
            rec = receipt(args.dir, args.log, args.index)
    except ProofError as e:
        print(f"guard audit proof: {e}", file=sys.stderr)
        return 1
    if args.with_event:
        rec["event"] = _event_at(args.dir, chain_of(args.log) or "", args.index + 1)
    print(json.dumps(rec, indent=2, ensure_ascii=False))
    return 0


def find_leaf(root: Path, request_id: str) -> tuple[str, int] | None:
    """(log id, leaf index) of the record a receipt header names for ``request_id``: its ``exchange.started``
    (an answered request) or ``exchange.denied`` (a refusal), searched in every chain of the journal."""
    from guard.audit import layout
    from guard.audit.logtree import origin_for

    needle = json.dumps(request_id, ensure_ascii=False)[1:-1].encode()  # a cheap filter before parsing
    for chain in layout.chain_names(root):
        for seg in layout.segments(root, chain):
            for _, _, line in layout.iter_lines(seg):
                if needle not in line:
                    continue
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                seq = e.get("seq")
                if (
                    e.get("request_id") == request_id
                    and e.get("type") in ("exchange.started", "exchange.denied")
                    and isinstance(seq, int)
                    and seq > 0
                ):
                    return origin_for(chain), seq - 1
    return None


def _event_at(root: Path, chain: str, seq: int) -> Any:
    from guard.audit import layout

    for seg in layout.segments(root, chain):
        for _, _, line in layout.iter_lines(seg):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("seq") == seq:
                return e
    return None


def _keys(paths: list[Path]) -> list[Any] | None:
    try:
        keys = list(load_public_keys(paths).values())
    except (OSError, ValueError) as e:
        _err(f"cannot load public keys: {e}")
        return None
    if not keys:
        _err("no public keys found")
        return None
    return keys


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    from guard.audit.proofs import ProofError, verify_receipt

    keys = _keys(args.key)
    if keys is None:
        return 2
    try:
        rec = json.loads(args.receipt.read_text())
        event = json.loads(args.event.read_text()) if args.event else rec.get("event")
    except (OSError, ValueError) as e:
        return _err(f"cannot read: {e}")
    try:
        summary = verify_receipt(rec, keys, event if isinstance(event, dict) else None)
        if args.witness_key:
            from guard.audit.witness_cli import receipt_witnesses

            summary += receipt_witnesses(rec, args.witness_key, args.witness_quorum)
    except ProofError as e:
        print(f"RECEIPT DOES NOT VERIFY: {e}")
        return 1
    print(f"RECEIPT VERIFIED: {summary}" + (" (event matches the leaf)" if isinstance(event, dict) else ""))
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    from guard.audit.proofs import ProofError, check_consistency

    keys = _keys(args.key)
    if keys is None:
        return 2
    try:
        old_text, new_text = args.old.read_text(), args.new.read_text()
    except OSError as e:
        return _err(f"cannot read: {e}")
    try:
        old, new, proof = check_consistency(args.journal, old_text, new_text, keys)
    except ProofError as e:
        print(f"NOT CONSISTENT: {e}")
        return 1
    print(
        json.dumps(
            {
                "consistent": True,
                "log": old.origin,
                "old_size": old.size,
                "new_size": new.size,
                "consistency_proof": [base64.b64encode(h).decode() for h in proof],
            },
            indent=2,
        )
    )
    return 0
