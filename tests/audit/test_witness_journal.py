"""Checkpoints of a real journal get RFC 3161 tokens from a local openssl TSA and cosignatures from two
`guard audit witness` processes on loopback; a rewritten history is refused by both and verify reports it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from guard import telemetry as tm
from guard.audit import event as ev
from guard.audit import logtree, merkle
from guard.audit.cosign import WitnessKey, cosigners
from guard.audit.journal import Journal
from guard.audit.notary import Notary, consistency_proof_from, read_records
from guard.audit.seal import Signer
from guard.audit.settings import TimestampSettings, WitnessSettings
from guard.audit.tsa import load_cas, request_token
from guard.audit.verify_notary import check_dir
from tests.audit.conftest import make_settings, sample
from tests.audit.tsa_server import LocalTsa
from tests.audit.witness_helpers import start_witness

CHAIN = "w1"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300), st.data())
def test_proofs_from_a_compact_range_equal_the_reference(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(0, new))
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(new)]
    base = merkle.CompactRange()
    for x in leaves[:old]:
        base.append(x)
    assert consistency_proof_from(base, leaves[old:], new) == merkle.consistency_proof(leaves, old, new)
    if old and old < new:
        assert merkle.verify_consistency(
            old, new, merkle.root(leaves[:old]), merkle.root(leaves), consistency_proof_from(base, leaves[old:], new)
        )


def _log_line(signer_key: Ed25519PrivateKey) -> str:
    from guard.audit import note as notes

    return f"{notes.Verifier.for_key(logtree.origin_for(CHAIN), signer_key.public_key())} guard-audit/*"


def _write(root: Path, key: Ed25519PrivateKey, n: int, tag: str = "", **kw: object) -> None:
    j = Journal(make_settings(root, checkpoint_events=10, **kw), CHAIN, signer=Signer(key))
    j.append_sync(ev.guard_started("0.1.0"))
    for i in range(n):
        j.append_sync(sample(i, model=f"gpt-4o{tag}"))
    j.close()


@pytest.fixture
def pki(tmp_path: Path):
    key = Ed25519PrivateKey.generate()
    w1 = start_witness(tmp_path, "witness.test/w1", [_log_line(key)])
    w2 = start_witness(tmp_path, "witness.test/w2", [_log_line(key)])
    with LocalTsa(tmp_path / "tsa") as tsa:
        yield key, w1, w2, tsa
    w1.stop()
    w2.stop()


def _settings(root: Path, w1, w2, tsa, **kw: object):
    return make_settings(
        root,
        checkpoint_events=10,
        witnesses=[WitnessSettings(url=w.url, key=w.vkey) for w in (w1, w2)],
        timestamp=TimestampSettings(url=tsa.url, ca=tsa.ca),
        **kw,
    )


def test_checkpoints_get_two_cosignatures_and_a_token_and_a_fork_is_refused_and_reported(tmp_path: Path, pki) -> None:
    key, w1, w2, tsa = pki
    root = tmp_path / "audit"
    s = _settings(root, w1, w2, tsa)
    notary = Notary(s)
    _write(root, key, 25)
    assert notary.run_once() == 1
    _write(root, key, 12)  # the same chain goes on after a restart: the witnesses get a consistency proof
    assert notary.run_once() == 1
    recs = read_records(root, CHAIN)
    last = recs[-1]
    size = logtree.noted_size(root, CHAIN)
    assert last["size"] == size and set(last["witnesses"]) == {w1.name, w2.name}, last["failed"]
    wkeys = [WitnessKey.parse(w.vkey) for w in (w1, w2)]
    assert set(cosigners(last["checkpoint"] + last["cosignatures"], wkeys)) == {w1.name, w2.name}
    assert last["tsr"] and last["timestamp_error"] is None

    rep = check_dir(root, [key.public_key()], wkeys, 2, load_cas(tsa.ca))
    assert rep["ok"], rep
    chain = rep["chains"][0]
    assert chain["witnessed_size"] == size and chain["timestamps"]["valid"] == 2

    # the CLI says the same, with only the public keys, the witness vkeys and the TSA's CA
    pub = tmp_path / "log.pub.pem"
    pub.write_bytes(Signer(key).public_pem())
    cmd = [
        sys.executable,
        "-m",
        "guard.cli",
        "audit",
        "verify",
        str(root),
        "--public-key",
        str(pub),
        "--json",
        "--witness-key",
        w1.vkey,
        "--witness-key",
        w2.vkey,
        "--tsa-ca",
        str(tsa.ca),
        "--jobs",
        "1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    doc = json.loads(out.stdout)["notary"]
    assert doc["ok"] and doc["chains"][0]["cosigners"].keys() == {w1.name, w2.name}, doc

    # A rewritten history: the same chain, the same key, the same length, other events.
    forked = tmp_path / "forked"
    _write(forked, key, 25, tag="-rewritten")
    _write(forked, key, 12, tag="-rewritten")
    assert logtree.noted_size(forked, CHAIN) == size
    fork_notary = Notary(_settings(forked, w1, w2, tsa))
    assert fork_notary.run_once() == 1
    frec = read_records(forked, CHAIN)[-1]
    assert frec["witnesses"] == {} and set(frec["failed"]) == {w1.name, w2.name}, frec
    assert all("409" in why for why in frec["failed"].values())  # same size, another root
    assert w1.refused and w2.refused  # both kept the signed fork as evidence
    # verify of the forked journal: no quorum on its checkpoint ...
    rep = check_dir(forked, [key.public_key()], wkeys, 2)
    assert not rep["ok"] and "witness_quorum_missing" in {p["reason"] for p in rep["chains"][0]["problems"]}
    # ... and with the genuine cosigned records put beside it, they do not match its tree
    shutil.copy(root / "chains" / CHAIN / "witnessed.log", forked / "chains" / CHAIN / "witnessed.log")
    rep = check_dir(forked, [key.public_key()], wkeys, 2)
    assert "witness_root_mismatch" in {p["reason"] for p in rep["chains"][0]["problems"]}, rep
    out = subprocess.run([*cmd[:5], str(forked), *cmd[6:]], capture_output=True, text=True)
    assert out.returncode == 1 and "witness_root_mismatch" in out.stderr
    assert not json.loads(out.stdout)["notary"]["ok"]

    # the auditor takes what a witness holds now and asks whether each journal holds that very tree
    latest = tmp_path / "latest.note"
    latest.write_text(httpx.get(f"{w1.url}/checkpoint/{logtree.origin_for(CHAIN)}", timeout=10).text)
    held = ["--public-key", str(pub), "--jobs", "1", "--checkpoint", str(latest)]
    assert subprocess.run([*cmd[:5], str(root), *held], capture_output=True).returncode == 0
    out = subprocess.run([*cmd[:5], str(forked), *held], capture_output=True, text=True)
    assert out.returncode == 1 and "fork" in out.stdout + out.stderr, out.stdout[-2000:]

    # A rewritten history that is shorter: both witnesses hold a larger tree, nothing is cosigned
    short = tmp_path / "short"
    _write(short, key, 25, tag="-short")
    short_notary = Notary(_settings(short, w1, w2, tsa))
    assert short_notary.run_once() == 1
    srec = read_records(short, CHAIN)[-1]
    assert srec["witnesses"] == {} and all("larger tree" in why for why in srec["failed"].values()), srec
    short_notary.stop(final_pass=False)
    # A rewritten history that is longer: not an extension of what they cosigned (422 from each)
    longer = tmp_path / "longer"
    _write(longer, key, 60, tag="-longer")
    long_notary = Notary(_settings(longer, w1, w2, tsa))
    assert long_notary.run_once() == 1
    lrec = read_records(longer, CHAIN)[-1]
    assert lrec["size"] > size and lrec["witnesses"] == {}, lrec
    assert all(why.startswith("422") for why in lrec["failed"].values()), lrec["failed"]
    long_notary.stop(final_pass=False)

    # Records deleted from the end of witnessed.log: what follows the newest one left is reported, and
    # fails with --max-unwitnessed
    trimmed = tmp_path / "trimmed"
    shutil.copytree(root, trimmed)
    wl = trimmed / "chains" / CHAIN / "witnessed.log"
    wl.write_text(wl.read_text().splitlines(keepends=True)[0])
    rep = check_dir(trimmed, [key.public_key()], wkeys, 2)
    assert rep["ok"] and rep["chains"][0]["unwitnessed_events"] == size - read_records(root, CHAIN)[0]["size"]
    rep = check_dir(trimmed, [key.public_key()], wkeys, 2, max_unwitnessed=0)
    assert [p["reason"] for p in rep["chains"][0]["problems"]] == ["witness_lag"]
    assert check_dir(root, [key.public_key()], wkeys, 2, max_unwitnessed=0)["ok"]

    # A journal cut back below what the witnesses cosigned
    cut = tmp_path / "cut"
    _write(cut, key, 25)
    shutil.copy(root / "chains" / CHAIN / "witnessed.log", cut / "chains" / CHAIN / "witnessed.log")
    rep = check_dir(cut, [key.public_key()], wkeys, 2)
    assert "witness_beyond_chain" in {p["reason"] for p in rep["chains"][0]["problems"]}
    notary.stop(final_pass=False)
    fork_notary.stop(final_pass=False)


def test_a_tsa_or_witness_outage_keeps_the_checkpoint_and_is_counted_and_reported(tmp_path: Path, pki) -> None:
    key, w1, w2, tsa = pki
    root = tmp_path / "audit"
    notary = Notary(_settings(root, w1, w2, tsa, notary_on_failure="block"), retry_s=0.0)
    wkeys = [WitnessKey.parse(w.vkey) for w in (w1, w2)]
    before = {k: _count(k) for k in ("timestamp", "witness")}
    tsa.fail = True
    w2.stop()
    _write(root, key, 15)
    assert notary.run_once() == 1
    rec = read_records(root, CHAIN)[-1]
    assert rec["size"] == logtree.noted_size(root, CHAIN)  # the checkpoint is there, signed by the log
    assert rec["tsr"] is None and "503" in rec["timestamp_error"]
    assert set(rec["witnesses"]) == {w1.name} and "unreachable" in rec["failed"][w2.name]
    assert _count("timestamp") == before["timestamp"] + 1 and _count("witness") == before["witness"] + 1
    assert not notary.healthy  # block: /readyz reports the notary
    rep = check_dir(root, [key.public_key()], wkeys, 2, load_cas(tsa.ca))
    reasons = {p["reason"] for p in rep["chains"][0]["problems"]}
    assert "witness_quorum_missing" in reasons and rep["chains"][0]["timestamps"]["missing"] == 1
    assert check_dir(root, [key.public_key()], wkeys, 1, load_cas(tsa.ca))["ok"]  # a quorum of one holds
    assert not check_dir(root, [key.public_key()], wkeys, 1, load_cas(tsa.ca), require_timestamps=True)["ok"]
    # both come back: the same checkpoint is tried again without waiting for traffic ...
    tsa.fail = False
    w2.restart()
    assert notary.run_once() == 1
    rec = read_records(root, CHAIN)[-1]
    assert rec["size"] == logtree.noted_size(root, CHAIN)
    assert rec["tsr"] and set(rec["witnesses"]) == {w1.name, w2.name}, rec["failed"]
    assert notary.healthy
    assert notary.run_once() == 0  # complete: not asked again
    # ... and the next checkpoint gets everything with a consistency proof from that size
    _write(root, key, 5)
    assert notary.run_once() == 1
    rec = read_records(root, CHAIN)[-1]
    assert rec["tsr"] and set(rec["witnesses"]) == {w1.name, w2.name}, rec["failed"]
    assert check_dir(root, [key.public_key()], wkeys, 2, load_cas(tsa.ca))["ok"]
    notary.stop(final_pass=False)


def test_a_forged_token_or_cosignature_in_the_records_is_reported(tmp_path: Path, pki) -> None:
    key, w1, w2, tsa = pki
    root = tmp_path / "audit"
    notary = Notary(_settings(root, w1, w2, tsa))
    _write(root, key, 12)
    notary.run_once()
    notary.stop(final_pass=False)
    wkeys = [WitnessKey.parse(w.vkey) for w in (w1, w2)]
    path = root / "chains" / CHAIN / "witnessed.log"
    good = path.read_text()
    rec = json.loads(good)
    # a token taken for another checkpoint (a real one, from the same TSA)
    other = request_token(b"another checkpoint\n", TimestampSettings(url=tsa.url, ca=tsa.ca))
    path.write_text(json.dumps({**rec, "tsr": base64.b64encode(other).decode()}) + "\n")
    rep = check_dir(root, [key.public_key()], wkeys, 2, load_cas(tsa.ca))
    assert [p["detail"] for p in rep["chains"][0]["problems"]] == ["imprint_mismatch"]
    # a token from a TSA the auditor does not trust
    with LocalTsa(tmp_path / "rogue", name="Rogue") as rogue:
        path.write_text(good)
        rep = check_dir(root, [key.public_key()], wkeys, 2, load_cas(rogue.ca))
        assert [p["detail"] for p in rep["chains"][0]["problems"]] == ["untrusted_tsa"]
    # a cosignature line edited: the quorum is no longer there
    lines = rec["cosignatures"].splitlines(keepends=True)
    bad = lines[0][:-6] + ("A" if lines[0][-6] != "A" else "B") + lines[0][-5:]
    path.write_text(json.dumps({**rec, "cosignatures": bad + lines[1]}) + "\n")
    rep = check_dir(root, [key.public_key()], wkeys, 2)
    assert {p["reason"] for p in rep["chains"][0]["problems"]} == {"witness_quorum_missing"}
    # a checkpoint re-signed by another key for the same origin
    from guard.audit import note as notes

    cp = notes.parse_checkpoint(notes.parse(rec["checkpoint"]).text)
    forged = cp.sign([notes.Signer(logtree.origin_for(CHAIN), Ed25519PrivateKey.generate())])
    path.write_text(json.dumps({**rec, "checkpoint": forged}) + "\n")
    rep = check_dir(root, [key.public_key()], wkeys, 2)
    assert "witness_bad_checkpoint" in {p["reason"] for p in rep["chains"][0]["problems"]}


def _count(kind: str) -> float:
    for m in tm.NOTARY_FAILURES.collect():
        for s in m.samples:
            if s.name.endswith("_total") and s.labels.get("kind") == kind:
                return s.value
    return 0.0


def test_after_a_prune_the_kept_records_are_still_checked_against_the_journal(tmp_path: Path, pki) -> None:
    """`guard audit prune` removes old segments: the tree is recomputed from the signed checkpoint at the cut,
    records of pruned sizes are counted as such, and a later rewrite is still a root mismatch."""
    from cryptography.hazmat.primitives import serialization

    from guard.audit import layout
    from guard.cli import main

    key, w1, w2, tsa = pki
    root = tmp_path / "audit"
    notary = Notary(_settings(root, w1, w2, tsa, segment_max_bytes=8192))
    wkeys = [WitnessKey.parse(w.vkey) for w in (w1, w2)]
    for _ in range(3):  # three runs of the chain, each notarized
        _write(root, key, 30, segment_max_bytes=8192)
        assert notary.run_once() == 1
    notary.stop(final_pass=False)
    segs = layout.segments(root, CHAIN)
    assert len(segs) >= 6
    pem = tmp_path / "signing-key.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cut = json.loads(next(layout.iter_lines(segs[len(segs) // 2]))[2])["time"]
    assert main(["audit", "prune", str(root), "--before", cut, "--signing-key", str(pem), "--ignore-sinks"]) == 0
    assert not segs[0].exists()
    rep = check_dir(root, [key.public_key()], wkeys, 2)
    chain = rep["chains"][0]
    assert rep["ok"], rep
    assert chain["pruned_unchecked"] >= 1 and chain["witnessed_size"] == logtree.noted_size(root, CHAIN)
    # an event after the cut rewritten (its hash and every later link recomputed would not help: the leaf
    # changes the tree): the newest cosigned root no longer matches
    last = layout.segments(root, CHAIN)[-1]
    data = last.read_bytes()
    assert b'"gpt-4o"' in data
    last.write_bytes(data.replace(b'"gpt-4o"', b'"gpt-4x"', 1))
    rep = check_dir(root, [key.public_key()], wkeys, 2)
    assert "witness_root_mismatch" in {p["reason"] for p in rep["chains"][0]["problems"]}, rep


def test_a_witness_that_lags_gets_its_proof_from_the_stored_range_of_its_size(
    tmp_path: Path, pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no leaves kept in memory (MAX_TAIL 0), a witness that was down is caught up from the compact range
    stored with the checkpoint it last cosigned, not from the whole chain."""
    import guard.audit.notary as nt

    key, w1, w2, tsa = pki
    monkeypatch.setattr(nt, "MAX_TAIL", 0)
    root = tmp_path / "audit"
    notary = Notary(_settings(root, w1, w2, tsa))
    _write(root, key, 15)
    assert notary.run_once() == 1
    w2.stop()
    for n in (7, 9):
        _write(root, key, n)
        assert notary.run_once() == 1
    w2.restart()
    _write(root, key, 4)
    assert notary.run_once() == 1
    rec = read_records(root, CHAIN)[-1]
    assert set(rec["witnesses"]) == {w1.name, w2.name}, rec["failed"]
    notary.stop(final_pass=False)
