"""The console's evidence pack: guard.audit.pack with the filters of the export form."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.datastructures import FormData

from guard.audit.pack import build_pack
from guard.audit.seal import Signer


def signer_of(c: Any) -> Signer:
    s = c.runtime.config.audit
    return Signer.from_file(s.signing_key or c.root / "keys" / "signing-key.pem")


def make_pack(c: Any, form: FormData) -> tuple[bytes, dict[str, Any], dict[str, str]]:
    """The pack's bytes, its summary, and the filters as the audit record names them. The journal is
    verified first (every hash, link and checkpoint; signatures of checkpoints and unit ends: see
    `guard audit verify --signatures checkpoints`) and the result goes into the summary."""
    from guard.audit.verify import verify_dir
    from guard.console.pages import pack_filter, query_echo

    flt, fmts, q = pack_filter(form)
    keys = c.keys()
    journal = getattr(c.runtime, "journal", None)
    if journal is not None and getattr(journal, "healthy", False):
        # this worker's latest events signed now, so the pack carries their inclusion proofs (other workers'
        # chains sign on their own cadence); an unhealthy journal: the pack names the events none covers
        with contextlib.suppress(Exception):
            journal.checkpoint_now()
    report = verify_dir(c.root, keys, jobs=1, signatures="checkpoints").to_dict()
    c.index.save_verify(report_time(), report)
    data, summary = build_pack(
        c.root, flt, fmts, signer_of(c), policy_version=c.policy.version, verification=report, extra_keys=keys
    )
    return data, summary, query_echo(q)


def report_time() -> str:
    from guard.audit.event import utc_now

    return utc_now()
