"""Retention tiers: what `guard audit prune` deletes, and when (the command is here; guard.audit.cli registers it).

Two periods, counted back from now (``--now`` overrides the clock):

- **content** (``audit.retention.content_days``, default 30): the content keys of UTC days before the cut-off
  are destroyed (guard.audit.content_keys). The captured texts of those days (``capture: redacted|full``)
  stay in the journal as ciphertext nobody can open; every hash, link, checkpoint and signature still
  verifies, since they commit to the ciphertext. Done even when the metadata prune below is refused: it
  removes nothing the chain's proofs depend on.
- **metadata** (``audit.retention.metadata_days``, default 183): whole segments whose every event is older
  than the cut-off are removed under a signed ``PRUNED.json`` record (guard.audit.prune), refused unless the
  journal verifies and every sink has delivered them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from guard.audit.content_keys import ContentKeys, cutoff_day, parse_day
from guard.audit.export import parse_time
from guard.audit.prune import PruneError, prune
from guard.audit.seal import Signer
from guard.audit.settings import RetentionSettings


class RetentionError(Exception):
    """The metadata prune was refused (nothing of it removed); ``report`` says what was shredded anyway."""

    def __init__(self, msg: str, report: dict[str, Any]) -> None:
        super().__init__(msg)
        self.report = report


def _ns(ts: str | None) -> int:
    if not ts:
        return time.time_ns()
    d = datetime.fromisoformat(parse_time(ts).replace("Z", "+00:00"))
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000


def apply_retention(
    root: Path,
    signer: Signer,
    keys: dict[str, Any],
    *,
    retention: RetentionSettings | None = None,
    key_dir: Path | None = None,
    before: str | None = None,
    content_before: str | None = None,
    now: str | None = None,
    dry_run: bool = False,
    ignore_sinks: bool = False,
) -> dict[str, Any]:
    """Shred expired content keys, then prune expired metadata; returns both reports."""
    r = retention or RetentionSettings()
    now_ns = _ns(now)
    day = parse_day(content_before) if content_before else cutoff_day(now_ns, r.content_days)
    if before:
        meta_before = parse_time(before)
    else:
        t = datetime.fromtimestamp(now_ns / 1e9, UTC) - timedelta(days=r.metadata_days)
        meta_before = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ck = ContentKeys(key_dir or root / "keys" / "content")
    shredded = ck.shred_before(day, dry_run=dry_run)
    content = {
        "before": day,
        "key_dir": str(ck.dir),
        "periods_shredded": shredded,
        "shredded_through": (shredded[-1] if shredded else ck.shredded_through()) or None,
    }
    try:
        rep = prune(root, meta_before, signer, keys, dry_run=dry_run, ignore_sinks=ignore_sinks)
    except PruneError as e:
        raise RetentionError(
            f"{e} (content keys of days before {day} destroyed: {len(shredded)})", {"content": content}
        ) from None
    rep["content"] = content
    return rep


def _usage(msg: str) -> int:
    print(f"guard audit: {msg}", file=sys.stderr)
    return 2


def cmd_prune(args: argparse.Namespace) -> int:
    from guard.audit import layout, locate
    from guard.audit.seal import load_public_keys

    if not layout.chains_dir(args.dir).is_dir():
        return _usage(f"{args.dir}: no audit journal here")
    try:
        settings, source = locate.audit_settings(args.dir, args.config)
        key = locate.signing_key(args.dir, args.signing_key, settings, source, "prune signs its record")
        signer = Signer.from_file(key)
        keys = {signer.key_id: signer.public, **load_public_keys(args.public_key)}
        rep = apply_retention(
            args.dir,
            signer,
            keys,
            retention=(settings.retention if settings else None),
            key_dir=locate.content_key_dir(args.dir, args.content_keys, settings),
            before=args.before,
            content_before=args.content_before,
            now=args.now,
            dry_run=args.dry_run,
            ignore_sinks=args.ignore_sinks,
        )
    except (ValueError, OSError, locate.LocateError) as e:
        return _usage(str(e))
    except RetentionError as e:
        print(f"guard audit prune: {e}", file=sys.stderr)
        return 1
    print(json.dumps(rep, indent=2))
    return 0
