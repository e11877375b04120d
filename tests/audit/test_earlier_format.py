"""A journal written by the earlier format (every event signed, a signed HEAD.json; tests/audit/data/earlier-format
was written by that code, with a test key) still verifies as it is, through cryptography one signature at a
time; tampering is still found; the current writer continues such a chain, and its first signed checkpoint
covers the old signed lines too (a receipt for one of them verifies)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from guard.audit import layout
from guard.audit.journal import Journal
from guard.audit.proofs import receipt, verify_receipt
from guard.audit.seal import event_hash, load_public_keys
from guard.audit.verify import verify_dir
from tests.audit.conftest import fill, make_settings

DATA = Path(__file__).parent / "data" / "earlier-format"


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(DATA, tmp_path / "j")
    return tmp_path / "j" / "audit", tmp_path / "j" / "keys"


def test_an_earlier_format_journal_verifies_and_tampering_is_found(tmp_path: Path) -> None:
    root, keys_dir = _copy(tmp_path)
    keys = load_public_keys([keys_dir])
    lines = [json.loads(x) for s in layout.segments(root, "w1") for x in s.read_bytes().splitlines()]
    assert lines and all("sig" in e for e in lines) and (layout.chains_dir(root) / "w1" / "HEAD.json").exists()
    for signatures in ("all", "checkpoints"):
        c = verify_dir(root, keys, jobs=1, signatures=signatures).chains[0]
        assert c.status == "intact" and c.closed and c.events == len(lines), c
    seg = layout.segments(root, "w1")[1]
    raw = seg.read_bytes().splitlines(keepends=True)
    e = json.loads(raw[1])
    e["model"] = "edited"
    e["hash"] = event_hash(e)  # re-hashed: its own signature no longer holds
    raw[1] = json.dumps(e, separators=(",", ":")).encode() + b"\n"
    seg.write_bytes(b"".join(raw))
    b = verify_dir(root, keys, jobs=1).chains[0].broken
    assert b is not None and (b.file, b.line, b.reason) == (seg.name, 2, "bad_signature"), b
    root2, _ = _copy(tmp_path / "cut")
    last = layout.segments(root2, "w1")[-1]
    last.write_bytes(b"".join(last.read_bytes().splitlines(keepends=True)[:-2]))
    b = verify_dir(root2, keys, jobs=1).chains[0].broken
    assert b is not None and b.reason == "truncated"


def test_the_current_writer_continues_an_earlier_format_chain(tmp_path: Path) -> None:
    root, keys_dir = _copy(tmp_path)
    keys = load_public_keys([keys_dir])
    old = sum(1 for s in layout.segments(root, "w1") for _ in s.read_bytes().splitlines())
    j = Journal(make_settings(root, signing_key=keys_dir / "signing-key.pem", checkpoint_events=4), "w1")
    fill(j, 6)
    j.close()
    c = verify_dir(root, keys, jobs=1).chains[0]
    assert c.status == "intact" and c.closed and c.events > old and c.signed_size == c.events, c
    rec = receipt(root, "guard-audit/w1", 2)  # an event of the earlier format, signed on its own too
    assert rec["tree_size"] >= old
    event = next(
        json.loads(x)
        for s in layout.segments(root, "w1")
        for x in s.read_bytes().splitlines()
        if json.loads(x)["seq"] == 3
    )
    assert "sig" in event
    verify_receipt(rec, list(keys.values()), event=event)
