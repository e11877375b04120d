"""`guard audit pack|prune|tail` and the check of an evidence pack (registered by guard.audit.cli)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from typing import Any

from guard.audit import layout
from guard.audit.content_keys import ContentKeys, reveal
from guard.audit.export import Filter
from guard.audit.formats import as_text, to_cef, to_ocsf
from guard.audit.seal import Signer, load_public_keys


def _err(msg: str) -> int:
    print(f"guard audit: {msg}", file=sys.stderr)
    return 2


def _verify_pack(args: argparse.Namespace) -> int:
    from guard.audit.pack import pack_keys, verify_pack

    try:
        keys = load_public_keys(list(args.public_key))
        if args.trust_local_keys:
            keys = {**pack_keys(args.dir), **keys}
    except (OSError, ValueError) as e:
        return _err(f"cannot load public keys: {e}")
    if not keys:
        return _err(
            "verifying a pack needs --public-key PEM|DIR (the journal's key); --trust-local-keys uses "
            "the keys inside the pack, which prove nothing on their own"
        )
    doc = verify_pack(args.dir, keys)
    doc["keys"] = {"trusted": sorted(keys), "source": "pack (not independent)" if args.trust_local_keys else "given"}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for chain, c in sorted(doc["chains"].items()):
            print(f"{chain}: {c['events']} events, seq {c['first_seq']}..{c['last_seq']}, {c['links']} links checked")
        for p in doc["problems"]:
            print(f"  {p}")
        print(
            f"{'INTACT' if doc['ok'] else 'TAMPERED'}: pack {args.dir}, {doc['events']} events, "
            "every event's hash and signature and every manifest checked"
        )
    return 0 if doc["ok"] else 1


def cmd_pack(args: argparse.Namespace) -> int:
    from guard.audit import locate
    from guard.audit.pack import build_pack, policy_version_from_config
    from guard.audit.verify import verify_dir

    if not layout.chains_dir(args.dir).is_dir():
        return _err(f"{args.dir}: no audit journal here")
    try:
        try:  # the signing key where the configuration says it is (its audit.dir must be this journal)
            settings, source = locate.audit_settings(args.dir, args.config)
        except locate.LocateError:
            settings, source = None, ""
        key = locate.signing_key(args.dir, args.signing_key, settings, source, "pack signs its manifests")
        extra = {k: getattr(args, k) for k in ("group", "upstream", "api", "type", "screen", "finding", "rule")}
        flt = Filter(args.since, args.until, args.principal, args.model, args.decision, **extra)
        signer = Signer.from_file(key)
        keys = {**load_public_keys([args.dir / "keys"]), signer.key_id: signer.public}
        policy = policy_version_from_config(args.config)
    except (ValueError, OSError, locate.LocateError) as e:
        return _err(str(e))
    report = None if args.no_verify else verify_dir(args.dir, keys, signatures="checkpoints").to_dict()
    data, summary = build_pack(
        args.dir, flt, args.format, signer, policy_version=policy, verification=report, extra_keys=keys
    )
    args.output.write_bytes(data)
    print(
        json.dumps(
            {
                "pack": str(args.output),
                "events": summary["counts"]["events"],
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ),
        file=sys.stderr,
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from guard.audit.retention import cmd_prune as run

    return run(args)


ENCRYPTED = "<encrypted>"  # what tail shows for captured texts unless given the content keys


def _shown(e: dict[str, Any], keys: ContentKeys | None) -> dict[str, Any]:
    """The event as tail prints it: captured texts (``content.sealed``) opened with ``keys`` (or marked
    ``shredded``), else replaced by a marker; never the ciphertext. For reading, not verifying."""
    c = e.get("content")
    if not isinstance(c, dict) or "sealed" not in c:
        return e
    if keys is not None and isinstance(c["sealed"], dict):
        return reveal(e, keys)
    return {**e, "content": {**c, "sealed": ENCRYPTED}}


def _fmt(e: dict[str, Any], fmt: str, keys: ContentKeys | None = None) -> str:
    e = _shown(e, keys)
    return as_text(to_ocsf(e) if fmt == "ocsf" else to_cef(e) if fmt == "cef" else e)


def cmd_tail(args: argparse.Namespace) -> int:
    from guard.audit.forwarder import Reader

    if not layout.chains_dir(args.dir).is_dir():
        return _err(f"{args.dir}: no audit journal here")
    keys = None
    if args.content_keys is not None:  # asked for: captured texts in clear
        if not args.content_keys.is_dir():
            return _err(f"{args.content_keys}: no content key folder here")
        keys = ContentKeys(args.content_keys)
    events = [e for _, _, e in layout.iter_events(args.dir)]
    events.sort(key=lambda e: e.get("time", ""))
    for e in events[-args.lines :] if args.lines > 0 else []:
        print(_fmt(e, args.format, keys), flush=True)
    if args.once:
        return 0
    reader = Reader(args.dir, None)
    pos: dict[str, dict[str, Any]] = {}
    for chain in layout.chain_names(args.dir):
        segs = layout.segments(args.dir, chain)
        if segs:
            pos[chain] = {"segment": segs[-1].name, "offset": segs[-1].stat().st_size, "seq": 0}
    reader.seek(pos)
    try:
        while True:
            batch = reader.read(1000)
            for e in batch:
                print(_fmt(e, args.format, keys), flush=True)
            if not batch:
                time.sleep(args.interval)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
