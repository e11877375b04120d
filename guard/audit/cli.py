"""`guard audit keygen|verify|export|prune|tail` (and proof|verify-receipt|consistency: guard.audit.cli_proofs).

``verify`` needs only the journal files and the public key(s). Keys that Guard published beside the
journal (``DIR/keys``) are not evidence (whoever could edit the journal could replace them), so they are
used only when asked with ``--trust-local-keys``, and the report says so.
Exit codes: 0 ok, 1 tampered / check failed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from guard.audit import layout
from guard.audit.cli_evidence import _verify_pack, cmd_pack, cmd_prune, cmd_tail
from guard.audit.content_keys import ContentKeys
from guard.audit.export import FORMATS, Filter, run_export
from guard.audit.progress import Progress, estimate_events
from guard.audit.seal import Signer, keygen, load_public_keys


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("audit", help="audit journal: keygen, verify, export, pack, prune, tail")
    sub = p.add_subparsers(dest="audit_command", required=True)

    k = sub.add_parser("keygen", help="write an Ed25519 signing key and its public key")
    k.add_argument("--out", required=True, type=Path, help="folder for signing-key.pem and <key_id>.pub.pem")
    k.set_defaults(func=cmd_keygen)

    v = sub.add_parser(
        "verify",
        help="check hashes, chain links, sequence, the Merkle tree against its signed checkpoints, torn lines "
        "(of a journal DIR, or of an evidence pack .zip)",
    )
    v.add_argument("dir", type=Path, help="the journal folder, or an evidence pack (.zip) from `guard audit pack`")
    v.add_argument(
        "--public-key", action="append", type=Path, default=[], help="public key PEM or a folder of them (repeatable)"
    )
    v.add_argument(
        "--trust-local-keys",
        action="store_true",
        help="use the public keys published in DIR/keys (not independent evidence)",
    )
    v.add_argument("--json", action="store_true", help="machine-readable report")
    v.add_argument(
        "--manifest",
        type=Path,
        help="also check an export's manifest, its file, and that the journal holds exactly those events for its range",
    )
    v.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="processes; chains and segments are checked in parallel and stitched in order, with the "
        "same report for any number (default: all CPUs; 1: in this process)",
    )
    v.add_argument(
        "--signatures",
        choices=("all", "checkpoints"),
        default="all",
        help="for events of the earlier, per-event signed format only: all checks each one's signature "
        "(default); checkpoints only those of checkpoint events and unit ends (still detects any change: "
        "audit/INTEGRITY.md). Events of the current format are covered by the signed Merkle checkpoints",
    )
    v.add_argument(
        "--checkpoint",
        action="append",
        type=Path,
        default=[],
        help="a signed checkpoint kept outside the journal (an earlier receipt's, a witness's): the journal "
        "must hold that very tree, or the chain is reported as a fork (repeatable)",
    )
    from guard.audit import witness_cli

    witness_cli.add_verify_args(v)
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("export", help="export a time range with a signed manifest")
    e.add_argument("dir", type=Path)
    e.add_argument("--since", required=True)
    e.add_argument("--until", required=True)
    e.add_argument("--principal")
    e.add_argument("--model", help="model name or glob")
    e.add_argument("--decision", choices=("allow", "deny"))
    e.add_argument("--format", choices=FORMATS, default="jsonl")
    e.add_argument("-o", "--output", type=Path, help="export file (default stdout; manifest in the cwd)")
    e.add_argument(
        "--signing-key",
        type=Path,
        help="key that signs the manifest "
        "(default: audit.signing_key of the configuration, else DIR/keys/signing-key.pem)",
    )
    e.add_argument(
        "--config",
        type=Path,
        help="guard.yaml: where the signing and content keys are (default ./guard.yaml or /etc/guard/guard.yaml "
        "when its audit.dir is DIR)",
    )
    e.add_argument("--content-keys", type=Path, help="folder of content keys (default: audit.retention.key_dir)")
    e.add_argument(
        "--sealed",
        action="store_true",
        help="leave captured texts encrypted, as the journal holds them (jsonl lines then keep their hashes)",
    )
    e.set_defaults(func=cmd_export)

    pk = sub.add_parser("pack", help="evidence pack: filtered events, signed manifests, summary and keys in one zip")
    pk.add_argument("dir", type=Path)
    pk.add_argument("--since", required=True)
    pk.add_argument("--until", required=True)
    pk.add_argument("--principal")
    pk.add_argument("--model", help="model name or glob")
    pk.add_argument("--decision", choices=("allow", "deny", "allowed", "denied", "blocked"))
    for name in ("group", "upstream", "api", "type", "screen", "finding", "rule"):
        pk.add_argument(f"--{name}")
    pk.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        default=[],
        help="further formats beside events.jsonl (repeatable)",
    )
    pk.add_argument("-o", "--output", type=Path, required=True, help="the pack (.zip)")
    pk.add_argument(
        "--signing-key",
        type=Path,
        help="key that signs the manifests "
        "(default: audit.signing_key of the configuration, else DIR/keys/signing-key.pem)",
    )
    pk.add_argument("--config", type=Path, help="guard.yaml: names the policy in force in the summary")
    pk.add_argument("--no-verify", action="store_true", help="do not verify the journal for the summary")
    pk.set_defaults(func=cmd_pack)

    r = sub.add_parser(
        "prune",
        help="retention: remove whole segments older than a time, leaving a signed record "
        "from which verify resumes each chain",
    )
    r.add_argument("dir", type=Path)
    r.add_argument(
        "--before",
        help="date or RFC 3339 time: segments whose every event is older go "
        "(default: now minus audit.retention.metadata_days, 183 unless configured)",
    )
    r.add_argument(
        "--content-before",
        help="date: content keys of days before it are destroyed, so captured texts of those days can no longer "
        "be read (default: now minus audit.retention.content_days, 30 unless configured)",
    )
    r.add_argument("--now", help="RFC 3339 time the retention periods count back from (default: the clock)")
    r.add_argument("--config", type=Path, help="guard.yaml: audit.retention, audit.signing_key (default as for export)")
    r.add_argument("--content-keys", type=Path, help="folder of content keys (default: audit.retention.key_dir)")
    r.add_argument(
        "--signing-key",
        type=Path,
        help="the journal's signing key, which signs the prune record "
        "(default: audit.signing_key of the configuration, else DIR/keys/signing-key.pem)",
    )
    r.add_argument(
        "--public-key",
        action="append",
        type=Path,
        default=[],
        help="public keys of earlier signing keys, to verify the journal first (repeatable)",
    )
    r.add_argument(
        "--ignore-sinks",
        action="store_true",
        help="remove even what a sink's cursor has not passed (those events never reach it)",
    )
    r.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    r.set_defaults(func=cmd_prune)

    t = sub.add_parser("tail", help="print the latest events and follow new ones")
    t.add_argument("dir", type=Path)
    t.add_argument("-n", "--lines", type=int, default=10, help="events to show first (default 10)")
    t.add_argument("--once", action="store_true", help="print and exit instead of following")
    t.add_argument("--format", choices=("json", "ocsf", "cef"), default="json")
    t.add_argument("--interval", type=float, default=0.5, help="seconds between polls when following")
    t.add_argument(
        "--content-keys",
        type=Path,
        help="folder of content keys: captured texts shown in clear (default: shown as <encrypted>)",
    )
    t.set_defaults(func=cmd_tail)
    witness_cli.register(sub)

    from guard.audit import cli_proofs

    cli_proofs.register(sub)


def _err(msg: str) -> int:
    print(f"guard audit: {msg}", file=sys.stderr)
    return 2


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        priv, pub, kid = keygen(args.out)
    except OSError as e:
        return _err(f"{args.out}: {e.strerror}")
    print(json.dumps({"key_id": kid, "signing_key": str(priv), "public_key": str(pub)}))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from guard.audit.verify import verify_dir

    root: Path = args.dir
    if root.is_file():
        return _verify_pack(args)
    if not layout.chains_dir(root).is_dir():
        return _err(f"{root}: no audit journal here (expected {layout.chains_dir(root)})")
    sources = list(args.public_key)
    if args.trust_local_keys:
        sources.append(root / "keys")
    if not sources:
        return _err(
            "verify needs --public-key PEM|DIR (the key Guard signs with); "
            "--trust-local-keys uses the keys beside the journal, which prove nothing on their own"
        )
    try:
        keys = load_public_keys(sources)
    except (OSError, ValueError) as e:
        return _err(f"cannot load public keys: {e}")
    if not keys:
        return _err("no public keys found")
    if args.jobs is not None and args.jobs < 1:
        return _err("--jobs must be 1 or more")
    t0 = time.perf_counter()
    try:
        kept = [p.read_text() for p in args.checkpoint]
    except OSError as e:
        return _err(f"cannot read a checkpoint: {e}")
    progress = Progress("verify", estimate_events(root))
    report = verify_dir(root, keys, jobs=args.jobs, progress=progress, signatures=args.signatures, checkpoints=kept)
    progress.finish(report.events)
    doc = report.to_dict()
    doc["keys"] = {"trusted": sorted(keys), "source": "local (not independent)" if args.trust_local_keys else "given"}
    doc["signatures"] = args.signatures
    if args.manifest:
        from guard.audit import locate
        from guard.audit.export import check_manifest

        try:
            settings = locate.audit_settings(root, None)[0]
        except locate.LocateError:
            settings = None
        ck = ContentKeys(locate.content_key_dir(root, None, settings))
        problems = check_manifest(args.manifest, keys, root, ck)
        doc["manifest"] = {"file": str(args.manifest), "ok": not problems, "problems": problems}
    from guard.audit.witness_cli import notary_report

    notary = notary_report(args, root, list(keys.values()))
    if notary is not None:
        doc["notary"] = notary
    doc["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_report(doc)
    ok = report.ok and doc.get("manifest", {}).get("ok", True) and doc.get("notary", {}).get("ok", True)
    return 0 if ok else 1


def _print_report(doc: dict[str, Any]) -> None:
    for c in doc["chains"]:
        line = (
            f"{c['chain']}: {c['status']}, {c['events']} events, seq {c['first_seq']}..{c['last_seq']}, "
            f"{c['segments']} segments, {c['checkpoints']} checkpoints, {'closed' if c['closed'] else 'open'}"
        )
        print(line)
        b = c.get("broken")
        if b:
            print(f"  BROKEN at {b['file']}:{b['line']} seq {b['seq']}: {b['reason']} {b['detail']}".rstrip())
        if c.get("pruned"):
            pr = c["pruned"]
            print(
                f"  pruned: {pr['events']} events through seq {pr['through_seq']} (older than {pr['before']}), "
                f"removed by `guard audit prune` under a signed record"
            )
        if c.get("unsigned_tail"):
            n, size = c["unsigned_tail"], c["signed_size"]
            print(f"  {n} events after the last signed checkpoint (size {size}): linked, not yet signed")
        for t in c["torn"]:
            note = "acknowledged by the writer's restart" if t["acknowledged"] else "end of chain (crash mid-write)"
            print(f"  torn line at {t['file']}:{t['line']} ({t['bytes']} bytes): {note}; not tampering")
    mf = doc.get("manifest")
    if mf:
        print(f"manifest {mf['file']}: " + ("export complete and unaltered" if mf["ok"] else "; ".join(mf["problems"])))
    verdict = "INTACT" if doc["ok"] else "TAMPERED"
    print(f"{verdict}: {doc['events']} events in {len(doc['chains'])} chains, {doc['seconds']}s")


def cmd_export(args: argparse.Namespace) -> int:
    from guard.audit import locate

    if not layout.chains_dir(args.dir).is_dir():
        return _err(f"{args.dir}: no audit journal here")
    try:
        settings, source = locate.audit_settings(args.dir, args.config)
        key = locate.signing_key(args.dir, args.signing_key, settings, source, "export signs its manifest")
        flt = Filter(args.since, args.until, args.principal, args.model, args.decision)
        signer = Signer.from_file(key)
    except (ValueError, OSError, locate.LocateError) as e:
        return _err(str(e))
    ck = None if args.sealed else ContentKeys(locate.content_key_dir(args.dir, args.content_keys, settings))
    progress = Progress("export", estimate_events(args.dir))
    m = run_export(args.dir, flt, args.format, args.output, signer, ck, progress)
    print(json.dumps({"exported": m["counts"]["exported"], "manifest": m["manifest_path"]}), file=sys.stderr)
    return 0
