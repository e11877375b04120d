"""`guard audit witness`, `guard audit witness-keygen`: run a tlog-witness for Guard logs (docs/witness.md)."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    w = sub.add_parser("witness", help="run a witness (C2SP tlog-witness) that cosigns Guard checkpoints")
    w.add_argument("--listen", required=True, help="HOST:PORT, e.g. 127.0.0.1:7380")
    w.add_argument("--key", required=True, type=Path, help="the witness's Ed25519 private key (witness-keygen)")
    w.add_argument("--name", help="the witness's key name (default: the name in witness.vkey beside --key)")
    w.add_argument(
        "--logs", required=True, type=Path, help="log verifier keys, one per line: <vkey> [origin ...] (prefix*)"
    )
    w.add_argument("--state", type=Path, help="folder for the last checkpoint per log (default: beside --key)")
    w.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate chain (PEM)")
    w.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    w.set_defaults(func=cmd_witness)

    lk = sub.add_parser("log-key", help="the line for a witness's --logs file that trusts this Guard's checkpoints")
    lk.add_argument("--public-key", required=True, type=Path, help="the journal's public key (PEM)")
    lk.add_argument("--origin", default="guard-audit/*", help="origins it signs (default every chain: guard-audit/*)")
    lk.set_defaults(func=cmd_log_key)

    k = sub.add_parser("witness-keygen", help="write a witness key and its verifier key (vkey) for Guard's config")
    k.add_argument("--out", required=True, type=Path)
    k.add_argument("--name", default=f"{socket.gethostname()}/guard-witness", help="key name (schema-less URL)")
    k.set_defaults(func=cmd_witness_keygen)


def add_verify_args(v: Any) -> None:
    v.add_argument(
        "--witness-key",
        action="append",
        default=[],
        help="a witness's vkey, or a file of them (repeatable): check witnessed.log against the journal",
    )
    v.add_argument(
        "--witness-quorum",
        type=int,
        help="cosignatures the newest witnessed checkpoint needs (default: every --witness-key)",
    )
    v.add_argument("--tsa-ca", type=Path, help="the TSA's root certificate (PEM): check every checkpoint's token")
    v.add_argument("--require-timestamps", action="store_true", help="a checkpoint without a token fails")
    v.add_argument(
        "--max-unwitnessed",
        type=int,
        help="events allowed after the newest witnessed checkpoint "
        "(about checkpoint_events plus the notary's lag; default: no limit, only reported)",
    )


def add_receipt_args(proof: Any, verify_receipt: Any) -> None:
    proof.add_argument(
        "--witnessed",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="K",
        help="prove inclusion in the first checkpoint K witnesses cosigned (default 1); the receipt "
        "carries their cosignatures and the checkpoint's RFC 3161 token",
    )
    verify_receipt.add_argument(
        "--witness-key",
        action="append",
        default=[],
        help="a witness's vkey, or a file of them (repeatable): require its cosignature",
    )
    verify_receipt.add_argument("--witness-quorum", type=int, help="cosignatures required (default: every key)")


def receipt_witnesses(rec: dict[str, Any], values: list[str], quorum: int | None) -> str:
    """The summary's witness part; ProofError when the quorum of valid cosignatures is not there."""
    from guard.audit.proofs import ProofError
    from guard.audit.verify_notary import load_witness_keys
    from guard.audit.witnessed_receipts import check_receipt_witnesses

    try:
        keys = load_witness_keys(values)
    except (OSError, ValueError) as e:
        raise ProofError(f"witness keys: {e}") from None
    signed = check_receipt_witnesses(rec, keys, len(keys) if quorum is None else quorum)
    return f", cosigned by {', '.join(sorted(signed))}"


def notary_report(args: argparse.Namespace, root: Path, log_keys: list[Any]) -> dict[str, Any] | None:
    """The witnessed.log part of verify's report, when witness keys or a TSA CA were given."""
    if not args.witness_key and not args.tsa_ca:
        return None
    from guard.audit.tsa import load_cas
    from guard.audit.verify_notary import check_dir, load_witness_keys

    try:
        wkeys = load_witness_keys(args.witness_key)
        cas = load_cas(args.tsa_ca) if args.tsa_ca else None
    except (OSError, ValueError) as e:
        return {"ok": False, "error": str(e)}
    quorum = len(wkeys) if args.witness_quorum is None else args.witness_quorum
    rep = check_dir(root, log_keys, wkeys, quorum, cas, args.require_timestamps, args.max_unwitnessed)
    for c in rep["chains"]:
        for p in c["problems"]:
            print(f"{c['chain']}: witnessed.log: {p['reason']} {json.dumps(p)}", file=sys.stderr)
    return rep


def _err(msg: str) -> int:
    print(f"guard audit: {msg}", file=sys.stderr)
    return 2


def cmd_log_key(args: argparse.Namespace) -> int:
    from guard.audit import note as notes
    from guard.audit.seal import load_public_keys

    try:
        keys = list(load_public_keys([args.public_key]).values())
    except (OSError, ValueError) as e:
        return _err(str(e))
    if len(keys) != 1:
        return _err(f"{args.public_key}: expected one public key")
    name = args.origin.rstrip("*").rstrip("/") or "guard-audit"
    print(f"{notes.Verifier.for_key(name, keys[0])} {args.origin}")
    return 0


def cmd_witness_keygen(args: argparse.Namespace) -> int:
    from guard.audit.witness import witness_keygen

    try:
        priv, vkey = witness_keygen(args.out, args.name)
    except (OSError, ValueError) as e:
        return _err(str(e))
    print(json.dumps({"key": str(priv), "vkey": vkey}))
    return 0


def cmd_witness(args: argparse.Namespace) -> int:
    from guard.audit.cosign import NoteError, WitnessKey
    from guard.audit.note import raw_public
    from guard.audit.witness import Witness, load_logs, load_witness_key, serve

    try:
        key = load_witness_key(args.key)
        logs = load_logs(args.logs)
    except (OSError, ValueError) as e:
        return _err(str(e))
    name = args.name
    vkey_file = args.key.with_name("witness.vkey")
    if name is None:
        try:
            k = WitnessKey.parse(vkey_file.read_text())
        except (OSError, NoteError) as e:
            return _err(f"--name not given and {vkey_file} unusable: {e}")
        if k.public != raw_public(key.public_key()):
            return _err(f"{vkey_file} is not the vkey of {args.key}")
        name = k.name
    if not logs:
        return _err(f"{args.logs}: no log keys")
    if ":" not in args.listen:
        return _err("--listen is HOST:PORT")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.tls_cert) != bool(args.tls_key):
        return _err("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    serve(args.listen, Witness(name, key, logs, args.state or args.key.parent / "witness-state"), tls)
    return 0
