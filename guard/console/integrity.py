"""Integrity for the console: `guard audit verify` run in the background with progress, and the checks an
event page makes on the journal line itself (never on the index)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from guard.audit import layout
from guard.audit.event import utc_now
from guard.audit.seal import canonical, check_signature, load_public_keys
from guard.console.index import Index


def trusted_keys(audit_dir: Path, extra: list[Path]) -> dict[str, Any]:
    """The journal's own published public keys and any configured ones. Guard holds the signing key, so its
    published keys are the ones its events verify with; an auditor checks a pack with their own copy."""
    srcs = [p for p in [Path(audit_dir) / "keys", *extra] if p.exists()]
    return load_public_keys(srcs) if srcs else {}


class Verifier:
    """One verification at a time, in a thread; its progress and last result are kept for the pages."""

    def __init__(self, root: Path, index: Index, keys: Any) -> None:
        self.root, self.index, self._keys = root, index, keys
        self.lock = threading.Lock()
        self.running = False
        self.done = 0
        self.total = 0
        self.started_at = ""
        self.error = ""
        self.report: dict[str, Any] | None = None

    def start(self) -> bool:
        """Start a run; False when one is already running."""
        with self.lock:
            if self.running:
                return False
            self.running, self.done, self.error, self.started_at = True, 0, "", utc_now()
        self.total = self.index.count()
        threading.Thread(target=self._run, name="console-verify", daemon=True).start()
        return True

    def _run(self) -> None:
        from guard.audit.verify import verify_dir

        try:

            def progress(n: int) -> None:
                self.done = n

            report = verify_dir(self.root, self._keys(), jobs=1, progress=progress).to_dict()
            self.report = report
            self.index.save_verify(utc_now(), report)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.running = False

    def progress(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "done": self.done,
            "total": self.total,
            "started": self.started_at,
            "error": self.error,
        }


def read_line(root: Path, chain: str, segment: str, offset: int) -> bytes | None:
    """The journal's line at ``offset`` of ``segment`` (what the index points at), or None."""
    if layout.safe_chain(chain) != chain or not layout.SEGMENT_RE.match(segment):
        return None
    path = layout.chains_dir(root) / chain / segment
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(1 << 20)
    except OSError:
        return None
    nl = data.find(b"\n")
    return data[:nl] if nl >= 0 else None


def check_event(
    line: bytes, keys: dict[str, Any], chain: str, seq: int, prev_line: bytes | None, root: Path | None = None
) -> dict[str, Any]:
    """What can be said of one journal line on its own: parsed, hash, signature (its own, in the earlier
    format; else its inclusion in the chain's signed checkpoint, with ``root``), position, link to the line
    before it. ``problems`` is empty when all hold."""
    out: dict[str, Any] = {"problems": [], "event": None}
    try:
        e = json.loads(line)
        h, sig, kid = e["hash"], e.get("sig"), e["key_id"]
    except (ValueError, KeyError, TypeError):
        out["problems"].append("the journal line at the indexed place is not an event (index stale or journal changed)")
        return out
    out["event"] = e
    if e.get("chain") != chain or e.get("seq") != seq:
        out["problems"].append(f"the journal line is chain {e.get('chain')} seq {e.get('seq')}, not {chain} seq {seq}")
    body = {k: v for k, v in e.items() if k not in ("hash", "sig")}
    try:
        out["hash_ok"] = hashlib.sha256(canonical(body)).hexdigest() == h
    except (TypeError, ValueError, UnicodeError):
        out["hash_ok"] = False
    if not out["hash_ok"]:
        out["problems"].append("hash_mismatch: the event's content does not hash to its stored hash")
    key = keys.get(kid)
    if sig is None:
        out["sig_ok"] = key is not None and root is not None and _included(root, chain, seq, e, keys)
    else:
        out["sig_ok"] = bool(key is not None and check_signature(key, h, sig))
    if key is None:
        out["problems"].append(f"unknown_key: no trusted public key {kid!r}")
    elif not out["sig_ok"] and sig is None:
        out["problems"].append("bad_signature: no signed checkpoint covers it yet, or its inclusion proof fails")
    elif not out["sig_ok"]:
        out["problems"].append("bad_signature: the signature does not verify with the trusted key")
    if seq == 1:
        out["link_ok"] = e.get("prev") == "0" * 64
    elif prev_line is not None:
        try:
            out["link_ok"] = json.loads(prev_line).get("hash") == e.get("prev")
        except ValueError:
            out["link_ok"] = False
    else:
        out["link_ok"] = None  # the event before it is not in the journal (pruned) or not indexed
    if out["link_ok"] is False:
        out["problems"].append(f"broken_link: prev does not match the hash of seq {seq - 1}")
    return out


def _included(root: Path, chain: str, seq: int, e: dict[str, Any], keys: dict[str, Any]) -> bool:
    """The event is leaf ``seq - 1`` of a checkpoint of its chain signed by a trusted key."""
    from guard.audit.logtree import origin_for
    from guard.audit.proofs import ProofError, receipt, verify_receipt

    try:
        verify_receipt(receipt(root, origin_for(chain), seq - 1), list(keys.values()), event=e)
    except ProofError:
        return False
    return True


def chain_overview(root: Path, index: Index) -> list[dict[str, Any]]:
    """Per chain: indexed events, last seq, last checkpoint and its time, HEAD record, last verification."""
    state = index.verify_state()
    out = []
    for chain in layout.chain_names(root):
        last = index.query("SELECT MAX(seq), COUNT(*) FROM events WHERE chain = ?", (chain,))[0]
        cp = index.query(
            "SELECT seq, time FROM events WHERE chain = ? AND type = 'audit.checkpoint' ORDER BY seq DESC LIMIT 1",
            (chain,),
        )
        head = layout.read_head(root, chain) or {}
        v = state.get(chain)
        verified_to = v["last_seq"] if v is not None else None
        out.append(
            {
                "chain": chain,
                "last_seq": last[0],
                "events": last[1],
                "checkpoint": (cp[0]["seq"], cp[0]["time"]) if cp else None,
                "head": {"seq": head.get("seq"), "time": head.get("time")} if head else None,
                "verify": dict(v) if v is not None else None,
                "verified_to": verified_to,
            }
        )
    return out


def wait_idle(v: Verifier, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while v.running and time.monotonic() < end:
        time.sleep(0.05)
