"""Tamper matrix: each kind of tampering is found at the right place with the right reason, and the report
is the same with one process, with a pool of two (units stitched by the parent), and on the line-by-line
reference path."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import guard.audit.verify as v
from guard.audit import layout, logtree, note
from guard.audit.cli import register  # noqa: F401 - the CLI module imports cleanly
from guard.audit.seal import Signer, event_hash, load_public_keys
from guard.audit.verify import ChainReport, verify_dir
from guard.cli import main

SMALL = 3000  # unit size that cuts the test journal (about 1 KB a line) into units of about three lines


def _lines(seg: Path) -> list[bytes]:
    return seg.read_bytes().splitlines(keepends=True)


def _put(seg: Path, lines: list[bytes]) -> None:
    seg.write_bytes(b"".join(lines))


def _dump(e: dict[str, Any]) -> bytes:
    return json.dumps(e, separators=(",", ":")).encode() + b"\n"


def _verify(
    root: Path, jobs: int = 1, signatures: str = "all", chunk: int | None = None, fast: bool = True
) -> dict[str, Any]:
    old = v._CHUNK, v._FAST
    v._CHUNK, v._FAST = chunk or old[0], fast
    try:
        return verify_dir(root, load_public_keys([root / "keys"]), jobs=jobs, signatures=signatures).to_dict()
    finally:
        v._CHUNK, v._FAST = old


def _same_everywhere(root: Path, signatures: str) -> dict[str, Any]:
    """The one-process report, checked equal to a pool of two on small units and to the line-by-line path.

    With every signature checked the unit size cannot matter either; in checkpoint mode the units' last
    events are signed, so the pool is compared with one process on the same units.
    """
    one = _verify(root, 1, signatures)
    assert _verify(root, 1, signatures, fast=False) == one
    small = _verify(root, 1, signatures, SMALL)
    assert _verify(root, 2, signatures, SMALL) == small
    assert _verify(root, 2, signatures, SMALL, fast=False) == small
    if signatures == "all":
        assert small == one
    return one


def _check(root: Path) -> ChainReport:
    _same_everywhere(root, "checkpoints")
    rep = verify_dir(root, load_public_keys([root / "keys"]), jobs=1)
    assert rep.to_dict() == _same_everywhere(root, "all")
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


# Each tamper edits a journal and returns what verify must report: "intact", "torn", or the first broken
# point (file, line, seq, reason) with None where the place is not pinned down.
Expect = Any


def untouched(root: Path) -> Expect:
    return "intact"


def edited_field(root: Path) -> Expect:
    seg = _segs(root)[1]
    ls = _lines(seg)
    e = json.loads(ls[2])
    e["model"] = "something-else"
    ls[2] = _dump(e)
    _put(seg, ls)
    return seg.name, 3, e["seq"], "hash_mismatch"


def edited_field_with_recomputed_hash(root: Path) -> Expect:
    seg = _segs(root)[1]
    ls = _lines(seg)
    e = json.loads(ls[2])
    e["decisions"]["access"]["effect"] = "deny"
    e["hash"] = event_hash(e)  # events are not signed one by one: the next event's link breaks
    ls[2] = _dump(e)
    _put(seg, ls)
    return seg.name, 4, e["seq"] + 1, "broken_link"


def rewritten_and_relinked_without_the_key(root: Path) -> Expect:
    """Every event from one on edited, re-hashed and re-linked (no key needed for that): the first signed
    checkpoint of the tree after the edit no longer matches, reported at its event."""
    segs = _segs(root)
    prev: Any = None
    first: Any = None
    last_cp = ""
    for si, seg in enumerate(segs):
        out = []
        for i, raw in enumerate(_lines(seg)):
            e = json.loads(raw)
            if si < 1 or (si == 1 and i < 2):
                out.append(raw)
                prev = e["hash"]
                last_cp = e["hash"] if e["type"] == "audit.checkpoint" else last_cp
                continue
            if first is None:
                first = e["seq"]
                e["model"] = "rewritten"
            if e["type"] == "audit.checkpoint":  # the checkpoint events follow too: only the signed notes cannot
                e["checkpoint"]["head"] = prev
                e["checkpoint"]["prev_checkpoint"] = last_cp
            e["prev"] = prev
            e["hash"] = prev = event_hash(e)
            if e["type"] == "audit.checkpoint":
                last_cp = e["hash"]
            out.append(_dump(e))
        _put(seg, out)
    sizes = sorted(r["size"] for r in logtree.read_notes(root, "w1") if r["size"] >= first)
    for seg in segs:
        for i, raw in enumerate(_lines(seg)):
            if json.loads(raw)["seq"] == sizes[0]:
                return seg.name, i + 1, sizes[0], "bad_signature"
    raise AssertionError("no checkpoint after the edit")


def checkpoint_note_signature_altered(root: Path) -> Expect:
    path = layout.chains_dir(root) / "w1" / logtree.LATEST
    text = path.read_text()
    tail = text.rstrip("\n").rsplit(" ", 1)
    blob = bytearray(base64.b64decode(tail[1]))
    blob[10] ^= 1
    path.write_text(tail[0] + " " + base64.b64encode(bytes(blob)).decode() + "\n")
    return None, None, None, "bad_signature"


def checkpoint_notes_signed_by_another_key(root: Path) -> Expect:
    rogue = note.Signer(logtree.origin_for("w1"), Ed25519PrivateKey.generate())
    d = layout.chains_dir(root) / "w1"
    recs = logtree.read_notes(root, "w1")
    lines = []
    for r in recs:
        cp = note.parse_checkpoint(note.parse(r["note"]).text)
        r["note"] = cp.sign([rogue])
        lines.append(json.dumps(r) + "\n")
    (d / logtree.NOTES).write_text("".join(lines))
    (d / logtree.LATEST).write_text(recs[-1]["note"])
    return None, None, None, "unknown_key"


def checkpoint_of_the_tree_size_grown(root: Path) -> Expect:
    """A signed checkpoint from a later state of the log put back after cutting whole segments."""
    _segs(root)[-1].unlink()
    return None, None, None, "truncated"


def deleted_line(root: Path) -> Expect:
    seg = _segs(root)[1]
    ls = _lines(seg)
    gone = json.loads(ls[2])
    del ls[2]
    _put(seg, ls)
    return seg.name, 3, gone["seq"] + 1, "seq_gap"


def swapped_lines(root: Path) -> Expect:
    seg = _segs(root)[1]
    ls = _lines(seg)
    ls[2], ls[3] = ls[3], ls[2]
    _put(seg, ls)
    return seg.name, 3, None, "broken_link"


def truncated_tail(root: Path) -> Expect:
    seg = _segs(root)[-1]
    _put(seg, _lines(seg)[:-3])  # whole lines cut, final checkpoint included: only the signed head record knows
    return None, None, None, "truncated"


def forged_line_signed_with_another_key(root: Path) -> Expect:
    seg = _segs(root)[1]
    ls = _lines(seg)
    real = json.loads(ls[2])
    forged = {k: v for k, v in real.items() if k not in ("hash", "sig")}
    forged["model"] = "forged"
    forged["hash"] = event_hash(forged)  # claims the real key_id
    forged["sig"] = Signer(Ed25519PrivateKey.generate()).sign(bytes.fromhex(forged["hash"]))
    ls.insert(2, _dump(forged))
    _put(seg, ls)
    return seg.name, 3, real["seq"], "bad_signature"


def forged_line_under_its_own_key_id(root: Path) -> Expect:
    seg = _segs(root)[1]
    ls = _lines(seg)
    real = json.loads(ls[2])
    forged = {k: v for k, v in real.items() if k not in ("hash", "sig", "key_id")}
    line, _ = Signer(Ed25519PrivateKey.generate()).seal_line(forged, real["chain"], real["seq"], real["prev"])
    ls.insert(2, line)
    _put(seg, ls)
    return seg.name, 3, real["seq"], "unknown_key"


def removed_segment(root: Path) -> Expect:
    segs = _segs(root)
    segs[2].unlink()
    first_after = json.loads(_lines(segs[3])[0])
    return segs[3].name, 1, first_after["seq"], "seq_gap"


def removed_last_segment(root: Path) -> Expect:
    _segs(root)[-1].unlink()
    return None, None, None, "truncated"


def removed_head_record(root: Path) -> Expect:
    (layout.chains_dir(root) / "w1" / logtree.LATEST).unlink()
    return None, None, None, "truncated"


def removed_every_checkpoint_record(root: Path) -> Expect:
    (layout.chains_dir(root) / "w1" / logtree.LATEST).unlink()
    (layout.chains_dir(root) / "w1" / logtree.NOTES).unlink()
    return None, None, None, "truncated"


def every_segment_removed(root: Path) -> Expect:
    for seg in layout.segments(root, "w1"):
        seg.unlink()
    return None, None, None, "truncated"


def chain_resealed_with_an_unknown_key(root: Path) -> Expect:
    segs = _segs(root)
    rogue = Signer(Ed25519PrivateKey.generate())
    prev: Any = None
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
    assert start
    return (*start, "unknown_key")


def torn_final_line(root: Path) -> Expect:
    with open(_segs(root)[-1], "ab") as f:
        f.write(b'{"schema_version":"1.0","id":"01')
    return "torn"


def torn_line_in_the_middle(root: Path) -> Expect:
    seg = _segs(root)[1]
    ls = _lines(seg)
    ls[-1] = ls[-1][:40]  # the last event of a segment cut, the chain goes on in the next segment
    _put(seg, ls)
    return seg.name, len(ls), None, "truncated"


def checkpoint_count_edited(root: Path) -> Expect:
    seg = _segs(root)[2]
    ls = _lines(seg)
    i = next(i for i, raw in enumerate(ls) if json.loads(raw)["type"] == "audit.checkpoint")
    e = json.loads(ls[i])
    e["checkpoint"]["count"] += 1
    ls[i] = _dump(e)
    _put(seg, ls)
    return seg.name, i + 1, e["seq"], "hash_mismatch"


def _reseal(root: Path, seg_no: int, line_no: int, change: Callable[[dict[str, Any]], None]) -> tuple[str, int, int]:
    """Seal the chain again with the real key from a point on, ``change`` applied to the first event there
    (a writer gone wrong: every line is authentic, the chain is not)."""
    signer = Signer.from_file(root / "keys" / "signing-key.pem")
    prev: Any = None
    shift, at = 0, None
    for si, seg in enumerate(_segs(root)):
        if si < seg_no:
            continue
        out = []
        for i, raw in enumerate(_lines(seg)):
            e = json.loads(raw)
            if si == seg_no and i < line_no:
                out.append(raw)
                prev = e["hash"]
                continue
            body = {k: v for k, v in e.items() if k not in ("hash", "sig")}
            if at is None:
                at = (seg.name, i + 1, e["seq"])
                change(body)
                shift = body["seq"] - e["seq"]
            line, prev = signer.seal_line(body, e["chain"], e["seq"] + shift, prev)
            out.append(line)
        _put(seg, out)
    assert at
    return at


def resealed_checkpoint_with_a_wrong_count(root: Path) -> Expect:
    ls = _lines(_segs(root)[2])
    i = next(i for i, raw in enumerate(ls) if json.loads(raw)["type"] == "audit.checkpoint")
    name, line, seq = _reseal(root, 2, i, lambda e: e["checkpoint"].__setitem__("count", e["checkpoint"]["count"] + 1))
    return name, line, seq, "broken_link"


def resealed_with_a_seq_jump(root: Path) -> Expect:
    name, line, seq = _reseal(root, 2, 3, lambda e: e.__setitem__("seq", e["seq"] + 2))
    return name, line, seq + 2, "seq_gap"


def resealed_with_a_repeated_seq(root: Path) -> Expect:
    name, line, seq = _reseal(root, 2, 3, lambda e: e.__setitem__("seq", e["seq"] - 1))
    return name, line, seq - 1, "broken_link"


TAMPERS = [
    untouched,
    edited_field,
    edited_field_with_recomputed_hash,
    rewritten_and_relinked_without_the_key,
    checkpoint_note_signature_altered,
    checkpoint_notes_signed_by_another_key,
    checkpoint_of_the_tree_size_grown,
    removed_every_checkpoint_record,
    deleted_line,
    swapped_lines,
    truncated_tail,
    forged_line_signed_with_another_key,
    forged_line_under_its_own_key_id,
    removed_segment,
    removed_last_segment,
    removed_head_record,
    every_segment_removed,
    chain_resealed_with_an_unknown_key,
    torn_final_line,
    torn_line_in_the_middle,
    checkpoint_count_edited,
    resealed_checkpoint_with_a_wrong_count,
    resealed_with_a_seq_jump,
    resealed_with_a_repeated_seq,
]


def _matches(c: ChainReport, expect: Expect) -> bool:
    if expect in ("intact", "torn"):
        return c.status == expect and c.broken is None
    got = (c.broken.file, c.broken.line, c.broken.seq, c.broken.reason) if c.broken else None
    return got is not None and all(x is None or x == y for x, y in zip(expect, got, strict=False))


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_tamper_matrix(journal_dir: Path, tamper: Callable[[Path], Expect]) -> None:
    """Every kind of tampering, at the right place; with one process, a pool, and line by line alike."""
    expect = tamper(journal_dir)
    c = _check(journal_dir)
    assert _matches(c, expect), (expect, c)


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_tamper_matrix_cli_jobs_1_and_2_agree(
    journal_dir: Path,
    tamper: Callable[[Path], Expect],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`guard audit verify --json --jobs 1` and `--jobs 2` (small units, so the pool runs): same exit code,
    same report, in both signature modes."""
    tamper(journal_dir)
    monkeypatch.setattr(v, "_CHUNK", SMALL)
    for mode in ("all", "checkpoints"):
        out = []
        for jobs in ("1", "2"):
            rc = main(
                [
                    "audit",
                    "verify",
                    str(journal_dir),
                    "--trust-local-keys",
                    "--json",
                    "--jobs",
                    jobs,
                    "--signatures",
                    mode,
                ]
            )
            doc = json.loads(capsys.readouterr().out)
            doc.pop("seconds")
            out.append((rc, doc))
        assert out[0] == out[1]
        assert out[0][0] == (0 if out[0][1]["ok"] else 1)


def test_untouched_journal_is_intact(journal_dir: Path) -> None:
    c = _check(journal_dir)
    assert c.status == "intact" and c.closed and c.events == 46 + c.checkpoints and c.checkpoints == 5
    assert c.signed_size == c.events and c.unsigned_tail == 0
    assert not (layout.chains_dir(journal_dir) / "w1" / "HEAD.json").exists()
    assert all("sig" not in json.loads(raw) for seg in _segs(journal_dir) for raw in _lines(seg))


def test_edited_field_is_a_hash_mismatch(journal_dir: Path) -> None:
    expect = edited_field(journal_dir)
    assert _broken(journal_dir) == expect


def test_edited_field_with_recomputed_hash_is_a_broken_link(journal_dir: Path) -> None:
    expect = edited_field_with_recomputed_hash(journal_dir)
    assert _broken(journal_dir) == expect


def test_deleted_line_is_a_seq_gap(journal_dir: Path) -> None:
    expect = deleted_line(journal_dir)
    assert _broken(journal_dir) == expect


def test_swapped_lines_are_a_broken_link(journal_dir: Path) -> None:
    f, line, _, reason = swapped_lines(journal_dir)
    got = _broken(journal_dir)
    assert (got[0], got[1], got[3]) == (f, line, reason)


def test_truncated_tail_is_truncated(journal_dir: Path) -> None:
    truncated_tail(journal_dir)
    assert _broken(journal_dir)[3] == "truncated"


def test_forged_line_signed_with_another_key_is_a_bad_signature(journal_dir: Path) -> None:
    expect = forged_line_signed_with_another_key(journal_dir)
    assert _broken(journal_dir) == expect


def test_forged_line_under_its_own_key_id_is_an_unknown_key(journal_dir: Path) -> None:
    expect = forged_line_under_its_own_key_id(journal_dir)
    assert _broken(journal_dir) == expect


def test_removed_segment_is_a_seq_gap(journal_dir: Path) -> None:
    expect = removed_segment(journal_dir)
    assert _broken(journal_dir) == expect


def test_removed_last_segment_is_truncated(journal_dir: Path) -> None:
    removed_last_segment(journal_dir)
    assert _broken(journal_dir)[3] == "truncated"


def test_removed_head_record_is_truncated(journal_dir: Path) -> None:
    removed_head_record(journal_dir)
    assert _broken(journal_dir)[3] == "truncated"


def test_chain_resealed_with_an_unknown_key_is_an_unknown_key(journal_dir: Path) -> None:
    expect = chain_resealed_with_an_unknown_key(journal_dir)
    assert _broken(journal_dir) == expect


def test_torn_final_line_is_reported_as_torn_not_tampering(journal_dir: Path) -> None:
    torn_final_line(journal_dir)
    seg = _segs(journal_dir)[-1]
    c = _check(journal_dir)
    assert c.status == "torn" and c.broken is None
    assert c.torn == [{"file": seg.name, "line": len(_lines(seg)), "bytes": 32, "acknowledged": False}]
    assert main(["audit", "verify", str(journal_dir), "--trust-local-keys"]) == 0


def test_torn_line_in_the_middle_not_acknowledged_by_the_writer_is_truncated(journal_dir: Path) -> None:
    f, line, _, reason = torn_line_in_the_middle(journal_dir)
    got = _broken(journal_dir)
    assert (got[0], got[1], got[3]) == (f, line, reason)


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
    assert main(["audit", "verify", str(journal_dir), "--public-key", str(pub), "--jobs", "0"]) == 2


def test_several_chains_are_checked_in_parallel_each_with_its_own_verdict(tmp_path: Path) -> None:
    from guard.audit import event as ev
    from guard.audit.journal import Journal

    from .conftest import fill, make_settings

    root = tmp_path / "audit"
    for name in ("w1", "w2", "w3"):
        j = Journal(make_settings(root, segment_max_bytes=4096), name)
        j.append_sync(ev.guard_started("0.1.0"))
        fill(j, 25)
        j.close()
    seg = layout.segments(root, "w2")[2]
    ls = _lines(seg)
    del ls[1]
    _put(seg, ls)
    with open(layout.segments(root, "w3")[-1], "ab") as f:
        f.write(b'{"schema_version"')
    for mode in ("all", "checkpoints"):
        chains = {c["chain"]: c for c in _same_everywhere(root, mode)["chains"]}
        assert [chains[c]["status"] for c in ("w1", "w2", "w3")] == ["intact", "tampered", "torn"]
        assert (chains["w2"]["broken"]["file"], chains["w2"]["broken"]["line"]) == (seg.name, 2)
        assert chains["w2"]["broken"]["reason"] == "seq_gap" and chains["w1"]["events"] == 26 + 3


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


def _broken_fast(root: Path) -> tuple[str, int, Any, str]:
    c = ChainReport(**_same_everywhere(root, "checkpoints")["chains"][0])
    assert c.status == "tampered" and c.broken, c
    b = c.broken
    return b["file"], b["line"], b["seq"], b["reason"]  # type: ignore[index]


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
    assert _broken(journal_dir)[3] in ("bad_signature", "broken_link")  # a signed root, or the next segment
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
