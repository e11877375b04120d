"""Tamper matrix: each kind of tampering is found at the right place with the right reason."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import layout
from guard.audit.cli import register  # noqa: F401 - the CLI module imports cleanly
from guard.audit.seal import Signer, event_hash, load_public_keys
from guard.audit.verify import ChainReport, verify_dir
from guard.cli import main


def _lines(seg: Path) -> list[bytes]:
    return seg.read_bytes().splitlines(keepends=True)


def _put(seg: Path, lines: list[bytes]) -> None:
    seg.write_bytes(b"".join(lines))


def _dump(e: dict[str, Any]) -> bytes:
    return json.dumps(e, separators=(",", ":")).encode() + b"\n"


def _check(root: Path) -> ChainReport:
    rep = verify_dir(root, load_public_keys([root / "keys"]), jobs=1)
    assert len(rep.chains) == 1
    return rep.chains[0]


def _broken(root: Path) -> tuple[str, int, Any, str]:
    c = _check(root)
    assert c.status == "tampered" and c.broken, c
    return c.broken.file, c.broken.line, c.broken.seq, c.broken.reason


def _segs(root: Path) -> list[Path]:
    s = layout.segments(root, "w1")
    assert len(s) >= 4
    return s


def test_untouched_journal_is_intact(journal_dir: Path) -> None:
    c = _check(journal_dir)
    assert c.status == "intact" and c.closed and c.events == 46 + c.checkpoints and c.checkpoints == 5


def test_edited_field_is_a_hash_mismatch(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[1]
    ls = _lines(seg)
    e = json.loads(ls[2])
    e["model"] = "something-else"
    ls[2] = _dump(e)
    _put(seg, ls)
    assert _broken(journal_dir) == (seg.name, 3, e["seq"], "hash_mismatch")


def test_edited_field_with_recomputed_hash_is_a_bad_signature(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[1]
    ls = _lines(seg)
    e = json.loads(ls[2])
    e["decisions"]["access"]["effect"] = "deny"
    e["hash"] = event_hash(e)
    ls[2] = _dump(e)
    _put(seg, ls)
    assert _broken(journal_dir) == (seg.name, 3, e["seq"], "bad_signature")


def test_deleted_line_is_a_seq_gap(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[1]
    ls = _lines(seg)
    gone = json.loads(ls[2])
    del ls[2]
    _put(seg, ls)
    assert _broken(journal_dir) == (seg.name, 3, gone["seq"] + 1, "seq_gap")


def test_swapped_lines_are_a_broken_link(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[1]
    ls = _lines(seg)
    ls[2], ls[3] = ls[3], ls[2]
    _put(seg, ls)
    f, line, seq, reason = _broken(journal_dir)
    assert (f, line, reason) == (seg.name, 3, "broken_link")


def test_truncated_tail_is_truncated(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[-1]
    ls = _lines(seg)
    _put(seg, ls[:-3])  # whole lines cut, final checkpoint included: only the signed head record knows
    assert _broken(journal_dir)[3] == "truncated"


def test_forged_line_signed_with_another_key_is_a_bad_signature(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[1]
    ls = _lines(seg)
    real = json.loads(ls[2])
    forged = {k: v for k, v in real.items() if k not in ("hash", "sig")}
    forged["model"] = "forged"
    forged["hash"] = event_hash(forged)  # claims the real key_id
    forged["sig"] = Signer(Ed25519PrivateKey.generate()).sign(bytes.fromhex(forged["hash"]))
    ls.insert(2, _dump(forged))
    _put(seg, ls)
    assert _broken(journal_dir) == (seg.name, 3, real["seq"], "bad_signature")


def test_forged_line_under_its_own_key_id_is_an_unknown_key(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[1]
    ls = _lines(seg)
    real = json.loads(ls[2])
    forged = {k: v for k, v in real.items() if k not in ("hash", "sig", "key_id")}
    line, _ = Signer(Ed25519PrivateKey.generate()).seal_line(forged, real["chain"], real["seq"], real["prev"])
    ls.insert(2, line)
    _put(seg, ls)
    assert _broken(journal_dir) == (seg.name, 3, real["seq"], "unknown_key")


def test_removed_segment_is_a_seq_gap(journal_dir: Path) -> None:
    segs = _segs(journal_dir)
    segs[2].unlink()
    first_after = json.loads(_lines(segs[3])[0])
    assert _broken(journal_dir) == (segs[3].name, 1, first_after["seq"], "seq_gap")


def test_removed_last_segment_is_truncated(journal_dir: Path) -> None:
    _segs(journal_dir)[-1].unlink()
    assert _broken(journal_dir)[3] == "truncated"


def test_removed_head_record_is_truncated(journal_dir: Path) -> None:
    (layout.chains_dir(journal_dir) / "w1" / "HEAD.json").unlink()
    assert _broken(journal_dir)[3] == "truncated"


def test_chain_resealed_with_an_unknown_key_is_an_unknown_key(journal_dir: Path) -> None:
    segs = _segs(journal_dir)
    rogue = Signer(Ed25519PrivateKey.generate())
    prev = None
    start = None
    for si, seg in enumerate(segs[1:], 1):
        out = []
        for i, raw in enumerate(_lines(seg)):
            e = json.loads(raw)
            if si == 1 and i < 2:
                out.append(raw)
                prev = e["hash"]
                continue
            start = start or (seg.name, i + 1, e["seq"])
            body = {k: v for k, v in e.items() if k not in ("hash", "sig", "key_id")}
            line, prev = rogue.seal_line(body, e["chain"], e["seq"], prev)
            out.append(line)
        _put(seg, out)
    assert _broken(journal_dir) == (*start, "unknown_key")


def test_torn_final_line_is_reported_as_torn_not_tampering(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[-1]
    with open(seg, "ab") as f:
        f.write(b'{"schema_version":"1.0","id":"01')
    c = _check(journal_dir)
    assert c.status == "torn" and c.broken is None
    assert c.torn == [{"file": seg.name, "line": len(_lines(seg)), "bytes": 32, "acknowledged": False}]
    assert main(["audit", "verify", str(journal_dir), "--trust-local-keys"]) == 0


def test_torn_line_in_the_middle_not_acknowledged_by_the_writer_is_truncated(journal_dir: Path) -> None:
    seg = _segs(journal_dir)[1]
    ls = _lines(seg)
    ls[-1] = ls[-1][:40]  # the last event of a segment cut, the chain goes on in the next segment
    _put(seg, ls)
    f, line, _, reason = _broken(journal_dir)
    assert (f, line, reason) == (seg.name, len(ls), "truncated")


def test_cli_exit_codes_and_json_report(journal_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = tmp_path / "pub"
    shutil.copytree(journal_dir / "keys", pub)
    for p in pub.glob("signing-key*"):
        p.unlink()
    assert main(["audit", "verify", str(journal_dir), "--public-key", str(pub), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["chains"][0]["status"] == "intact" and doc["keys"]["source"] == "given"
    assert main(["audit", "verify", str(journal_dir)]) == 2  # no trusted key given
    assert main(["audit", "verify", str(tmp_path / "nothing"), "--public-key", str(pub)]) == 2
    other = tmp_path / "other"
    Signer(Ed25519PrivateKey.generate())
    from guard.audit.seal import keygen

    _, other_pub, _ = keygen(other)
    assert main(["audit", "verify", str(journal_dir), "--public-key", str(other_pub), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["chains"][0]["broken"]["reason"] == "unknown_key"
    seg = layout.segments(journal_dir, "w1")[0]
    ls = _lines(seg)
    del ls[1]
    _put(seg, ls)
    assert main(["audit", "verify", str(journal_dir), "--public-key", str(pub)]) == 1
    assert "seq_gap" in capsys.readouterr().out


def test_key_rotation_verifies_with_both_public_keys(tmp_path: Path) -> None:
    from guard.audit.journal import Journal
    from guard.audit.seal import keygen

    from .conftest import fill, make_settings

    k1, p1, _ = keygen(tmp_path / "k1")
    k2, p2, _ = keygen(tmp_path / "k2")
    root = tmp_path / "audit"
    j = Journal(make_settings(root, signing_key=k1), "w1")
    fill(j, 5)
    j.close()
    j = Journal(make_settings(root, signing_key=k2), "w1")
    fill(j, 5)
    j.close()
    rep = verify_dir(root, load_public_keys([p1, p2]), jobs=1)
    assert rep.ok and len(rep.chains[0].key_ids) == 2
    rep = verify_dir(root, load_public_keys([p2]), jobs=1)
    assert rep.chains[0].broken and rep.chains[0].broken.reason == "unknown_key"


def test_parallel_verification_matches_serial(journal_dir: Path) -> None:
    import guard.audit.verify as v

    keys = load_public_keys([journal_dir / "keys"])
    old = v._CHUNK
    v._CHUNK = 2048  # many chunks, so the process pool runs
    try:
        a = verify_dir(journal_dir, keys, jobs=2).to_dict()
    finally:
        v._CHUNK = old
    b = verify_dir(journal_dir, keys, jobs=1).to_dict()
    assert a == b and a["ok"]


def _broken_fast(root: Path) -> tuple[str, int, Any, str]:
    c = verify_dir(root, load_public_keys([root / "keys"]), jobs=1, signatures="checkpoints").chains[0]
    assert c.status == "tampered" and c.broken, c
    return c.broken.file, c.broken.line, c.broken.seq, c.broken.reason


def test_checkpoint_signature_mode_still_detects_every_kind_of_tampering(journal_dir: Path) -> None:
    assert verify_dir(journal_dir, load_public_keys([journal_dir / "keys"]), jobs=1, signatures="checkpoints").ok
    seg = _segs(journal_dir)[1]
    original = seg.read_bytes()
    ls = _lines(seg)
    e = json.loads(ls[2])
    e["model"] = "x"
    ls[2] = _dump(e)
    _put(seg, ls)
    assert _broken_fast(journal_dir) == (seg.name, 3, e["seq"], "hash_mismatch")
    e["hash"] = event_hash(e)  # re-hashed without the key: the next link breaks
    ls[2] = _dump(e)
    _put(seg, ls)
    assert _broken_fast(journal_dir)[3] == "broken_link"
    # a whole stretch re-hashed and re-linked up to the end of the segment: the signed segment end fails
    prev = json.loads(ls[1])["hash"]
    out = ls[:2]
    for raw in ls[2:]:
        x = json.loads(raw)
        x["prev"] = prev
        if x["seq"] == e["seq"]:
            x["model"] = "x"
        x["hash"] = prev = event_hash(x)
        out.append(_dump(x))
    _put(seg, out)
    assert _broken_fast(journal_dir)[3] in ("bad_signature", "broken_link")
    assert _broken(journal_dir)[3] == "bad_signature"
    seg.write_bytes(original)
    ls = _lines(seg)
    del ls[2]
    _put(seg, ls)
    assert _broken_fast(journal_dir)[3] == "seq_gap"


def test_every_segment_of_a_chain_removed_is_truncated(journal_dir: Path) -> None:
    for seg in layout.segments(journal_dir, "w1"):
        seg.unlink()
    rep = verify_dir(journal_dir, load_public_keys([journal_dir / "keys"]), jobs=1)
    assert not rep.ok and rep.chains[0].broken and rep.chains[0].broken.reason == "truncated"


def test_a_bad_signing_key_file_is_a_journal_error_that_does_not_echo_it(tmp_path: Path) -> None:
    from guard.audit.journal import Journal, JournalError

    from .conftest import make_settings

    bad = tmp_path / "key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRETISH\n-----END PRIVATE KEY-----\n")
    with pytest.raises(JournalError) as e:
        Journal(make_settings(tmp_path / "a", signing_key=bad), "w1")
    assert "SECRETISH" not in str(e.value)
