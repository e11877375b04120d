"""`guard audit witness` (C2SP tlog-witness) run as a real process on loopback, driven with httpx, and Guard's
client side (guard.audit.witnessing) against two of them."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import struct
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import merkle
from guard.audit import note as notes
from guard.audit.cosign import (
    DASH,
    NoteError,
    Signature,
    WitnessKey,
    check_cosignature,
    cosign,
    cosigned_message,
    cosigners,
    parse_signature_line,
    witness_vkey,
)
from guard.audit.note import raw_public as raw
from guard.audit.settings import WitnessSettings
from guard.audit.witnessing import Cosigner
from tests.audit.witness_helpers import TestLog, start_witness

ORIGIN = "guard.test/log/w0"


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url + "/add-checkpoint", content=body, timeout=10)


@pytest.fixture
def log() -> TestLog:
    lg = TestLog(ORIGIN)
    lg.add(10)
    return lg


@pytest.fixture
def witness(tmp_path: Path, log: TestLog):
    w = start_witness(tmp_path, "witness.test/w1", [log.vkey])
    yield w
    w.stop()


def test_the_witness_cosigns_a_consistent_history_and_refuses_every_other(witness, log: TestLog) -> None:
    key = WitnessKey.parse(witness.vkey)
    r = post(witness.url, log.body(0))
    assert r.status_code == 200, r.text
    note = log.checkpoint() + r.content
    assert set(cosigners(note, [key])) == {witness.name}
    # the cosignature covers exactly this checkpoint: moved onto another one it does not verify
    other = TestLog(ORIGIN, log.key)
    other.add(10, "forked")
    assert cosigners(other.checkpoint() + r.content, [key]) == {}

    log.add(7)
    r = post(witness.url, log.body(10))
    assert r.status_code == 200, r.text
    # stale old size: 409 with the size the witness holds, as text/x.tlog.size
    r = post(witness.url, log.body(10))
    assert r.status_code == 409 and r.text == "17\n" and r.headers["content-type"].startswith("text/x.tlog.size")
    # the same size again with the same root is fine (idempotent), with another root it is a fork: 409
    assert post(witness.url, log.body(17)).status_code == 200
    fork = TestLog(ORIGIN, log.key)
    fork.add(17, "rewritten")
    r = post(witness.url, fork.body(17))
    assert r.status_code == 409
    # a larger forked tree with its own (internally valid) proof from 17: the proof does not reach the old root
    fork.add(5, "rewritten")
    r = post(witness.url, fork.body(17))
    assert r.status_code == 422, r.text
    # the real log's proof with a checkpoint whose root was changed
    log.add(5)
    cp = log.checkpoint()
    good = log.body(17)
    assert post(witness.url, good.replace(cp, fork.checkpoint(22))).status_code == 422
    # a smaller tree: old above the size is malformed; old equal to the smaller size is stale
    assert post(witness.url, log.body(17, 12)).status_code == 400
    assert post(witness.url, fork.body(12, 12)).status_code == 409
    # a monitor or auditor reads what the witness holds, freshly cosigned
    latest = httpx.get(f"{witness.url}/checkpoint/{ORIGIN}", timeout=10)
    assert latest.status_code == 200 and latest.text.startswith(log.text(17).decode())
    assert set(cosigners(latest.text, [key])) == {witness.name}
    assert httpx.get(f"{witness.url}/checkpoint/guard.test/log/other", timeout=10).status_code == 404
    # both forks were kept as evidence, with the log's signature on them
    reasons = [x["reason"] for x in witness.refused]
    assert any("fork" in str(x) for x in reasons) and "inconsistent" in reasons
    # nothing refused moved the witness: the real log goes on from 17
    assert post(witness.url, good).status_code == 200


def test_unknown_logs_bad_signatures_and_malformed_requests_are_refused(witness, log: TestLog) -> None:
    stranger = TestLog("guard.test/log/other")
    stranger.add(3)
    assert post(witness.url, stranger.body(0)).status_code == 404
    impostor = Ed25519PrivateKey.generate()  # signs with the log's name but another key
    assert post(witness.url, log.body(0, key=impostor)).status_code == 403
    body = bytearray(log.body(0))
    body[body.rindex(b" ") + 5] ^= 0x01  # one bit of the log's signature
    assert post(witness.url, bytes(body)).status_code in (400, 403)
    for bad in (
        b"",
        b"old 0\n",
        b"old 01\n\n" + log.checkpoint(),
        b"new 0\n\n" + log.checkpoint(),
        b"old 0\nnot base64!\n\n" + log.checkpoint(),
        b"old 0\n" + b"AAAA\n\n" + log.checkpoint(),
        b"old 0\n\n" + log.text(),
        b"old -1\n\n" + log.checkpoint(),
        b"old 0\n\n" + log.checkpoint().replace(b"\n10\n", b"\n010\n"),
    ):
        assert post(witness.url, bad).status_code == 400, bad
    too_many = b"old 3\n" + (base64.b64encode(bytes(32)) + b"\n") * 64 + b"\n" + log.checkpoint()
    assert post(witness.url, too_many).status_code == 400
    assert post(witness.url, b"x" * 200_000).status_code == 413
    # none of it touched the state: a first real request is accepted from 0
    assert post(witness.url, log.body(0)).status_code == 200


def test_the_witness_keeps_its_state_across_restarts(witness, log: TestLog) -> None:
    assert post(witness.url, log.body(0)).status_code == 200
    witness.restart()
    r = post(witness.url, log.body(0))
    assert r.status_code == 409 and r.text == "10\n"
    fork = TestLog(ORIGIN, log.key)
    fork.add(10, "after restart")
    assert post(witness.url, fork.body(10)).status_code == 409
    log.add(1)
    assert post(witness.url, log.body(10)).status_code == 200


def test_a_damaged_state_file_refuses_instead_of_starting_over(witness, log: TestLog) -> None:
    assert post(witness.url, log.body(0)).status_code == 200
    (state,) = [p for p in (witness.dir / "witness-state").glob("*.json")]
    state.write_text(state.read_text()[:-20])  # torn by a failing disk, or edited
    fork = TestLog(ORIGIN, log.key)
    fork.add(3, "after the damage")
    assert post(witness.url, fork.body(0)).status_code == 500  # not taken for "never saw this log"
    assert post(witness.url, log.body(10)).status_code == 500


def test_racing_requests_never_roll_the_witness_back(witness, log: TestLog) -> None:
    """The check of `old` and the write are one step: of requests that all start from 10, exactly one wins."""
    assert post(witness.url, log.body(0)).status_code == 200
    log.add(20)
    bodies = [log.body(10, n) for n in range(11, 31)]
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        codes = list(ex.map(lambda b: post(witness.url, b).status_code, bodies))
    assert codes.count(200) == 1 and codes.count(409) == 19
    won = 11 + codes.index(200)
    r = post(witness.url, log.body(0))
    assert r.text == f"{won}\n"


def test_guard_collects_a_quorum_from_two_witnesses(tmp_path: Path, log: TestLog) -> None:
    w1 = start_witness(tmp_path, "witness.test/w1", [log.vkey])
    w2 = start_witness(tmp_path, "witness.test/w2", [f"{log.vkey} guard.test/log/*"])
    try:
        c = Cosigner([WitnessSettings(url=w.url, key=w.vkey) for w in (w1, w2)])
        res = c.cosign(log.checkpoint(), log.proof)
        assert set(res.signed) == {w1.name, w2.name}, res.failed
        keys = [WitnessKey.parse(w.vkey) for w in (w1, w2)]
        assert set(cosigners(res.note, keys)) == {w1.name, w2.name}
        log.add(5)
        res = c.cosign(log.checkpoint(), log.proof)
        assert len(res.signed) == 2, res.failed
        # a fresh client (Guard restarted, knows nothing of the witnesses' sizes) learns them from the 409
        c2 = Cosigner([WitnessSettings(url=w.url, key=w.vkey) for w in (w1, w2)])
        log.add(3)
        res = c2.cosign(log.checkpoint(), log.proof)
        assert len(res.signed) == 2, res.failed
        # a rewritten history gets no cosignature, from either witness
        fork = TestLog(ORIGIN, log.key)
        fork.add(25, "rewritten")
        res = c2.cosign(fork.checkpoint(), fork.proof)
        assert res.signed == {} and set(res.failed) == {w1.name, w2.name}
        assert cosigners(res.note, keys) == {}
        # a witness that is down is reported, the other still signs
        w2.stop()
        log.add(1)
        res = c2.cosign(log.checkpoint(), log.proof)
        assert set(res.signed) == {w1.name} and "unreachable" in res.failed[w2.name]
        c.close()
        c2.close()
    finally:
        w1.stop()
        w2.stop()


def test_a_witness_key_that_is_not_the_configured_one_does_not_count(tmp_path: Path, log: TestLog) -> None:
    w1 = start_witness(tmp_path, "witness.test/w1", [log.vkey])
    try:
        other = witness_vkey("witness.test/w1", Ed25519PrivateKey.generate())  # same name, another key
        res = Cosigner([WitnessSettings(url=w1.url, key=other)]).cosign(log.checkpoint(), log.proof)
        assert res.signed == {} and "no valid cosignature" in res.failed["witness.test/w1"]
    finally:
        w1.stop()


# ------------------------------------------------------------------------------------------- cosignature format
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WKEY = WitnessKey("witness.example.com/w1", raw(KEY.public_key()))
TEXT = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def test_a_cosignature_is_the_c2sp_v1_format() -> None:
    line = cosign(TEXT, WKEY.name, KEY, 1679315147)
    sig = parse_signature_line(line)
    assert line.startswith(DASH + " witness.example.com/w1 ")
    assert sig.hash == __import__("hashlib").sha256(b"witness.example.com/w1\n\x04" + WKEY.public).digest()[:4]
    assert struct.unpack(">Q", sig.sig[:8])[0] == 1679315147 and len(sig.sig) == 72
    msg = b"cosignature/v1\ntime 1679315147\n" + TEXT
    assert cosigned_message(TEXT, 1679315147) == msg
    KEY.public_key().verify(sig.sig[8:], msg)  # raises if not
    assert check_cosignature(TEXT, sig, WKEY) == 1679315147
    assert WitnessKey.parse(WKEY.vkey) == WKEY
    # the example note of the spec parses (its log line and cosignature line)
    ex = (
        TEXT
        + b"\n"
        + (
            "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo"
            "+zyWE+xeMcTOAYQ8=\n"
            "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0x"  # noqa: E501
            "Ue+mbIUBkBIfZ+qnA==\n"
        ).encode()
    )
    n = notes.parse(ex)
    text, sigs = n.text.encode(), n.signatures
    assert text == TEXT and [s.name for s in sigs] == ["example.com/behind-the-sofa", "witness.example.com/w1"]
    assert struct.unpack(">Q", sigs[1].sig[:8])[0] == 1679315147


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_mutated_cosignature_never_verifies(data: st.DataObject) -> None:
    ts = 1_700_000_000
    good = parse_signature_line(cosign(TEXT, WKEY.name, KEY, ts))
    blob = bytearray(good.hash + good.sig)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "timestamp", "text", "name", "key"]))
    text, name, key = TEXT, good.name, WKEY
    if kind == "flip":
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "timestamp":  # another time under the same signature
        blob[4:12] = struct.pack(">Q", data.draw(st.integers(0, 2**64 - 1).filter(lambda t: t != ts)))
    elif kind == "text":
        i = data.draw(st.integers(0, len(TEXT) - 1))
        t = bytearray(TEXT)
        t[i] = data.draw(st.integers(0, 255).filter(lambda b: b != TEXT[i]))
        text = bytes(t)
    elif kind == "name":
        names = st.text("abcdefghijklmnopqrstuvwxyz./", min_size=1, max_size=30)
        name = data.draw(names.filter(lambda n: n != good.name))
        key = WitnessKey(name, WKEY.public)  # a key of that name: the key id then differs from the line's
    else:
        key = WitnessKey(WKEY.name, raw(Ed25519PrivateKey.generate().public_key()))
    sig = Signature(name, bytes(blob[:4]), bytes(blob[4:]))
    assert check_cosignature(text, sig, key) is None
    if kind != "text":
        note = TEXT + b"\n" + sig.line().encode()
        with contextlib.suppress(NoteError):  # a line too short for a key id: the whole note is refused
            assert cosigners(note, [key]) == {}


def test_witness_settings_name_the_file_line_and_key_of_a_bad_value(tmp_path: Path) -> None:
    from guard.audit.settings import AuditSettings
    from guard.config import ConfigError, load_yaml, validate

    good = witness_vkey("w.example/1", KEY)
    cases = {
        "witnesses:\n  - {url: 'http://127.0.0.1:1', key: 'w.example/1+00000000+BAAA'}\n": r"a.yaml:2: witnesses.0.key: .*witness key",  # noqa: E501
        f"witnesses:\n  - {{url: 'http://127.0.0.1:1', key: '{good.replace('+BA', '+AQ', 1)}'}}\n": r"a.yaml:2: witnesses.0.key: ",  # noqa: E501
        f"witnesses:\n  - {{url: 'ftp://x', key: '{good}'}}\n": r"a.yaml:2: witnesses.0.url: ",
        f"witnesses:\n  - {{url: 'http://x', key: '{good}'}}\nwitness_quorum: 2\n": r"a.yaml:\d: .*witness_quorum 2",
        "witness_quorum: 0\n": r"a.yaml:1: witness_quorum: ",
        "timestamp: {url: 'http://tsa'}\n": r"a.yaml:1: timestamp.ca: ",
        "timestamp: {url: 'http://tsa', ca: x.pem, hash: md5}\n": r"a.yaml:1: timestamp.hash: ",
        "notary_on_failure: maybe\n": r"a.yaml:1: notary_on_failure: ",
    }
    for text, pattern in cases.items():
        f = tmp_path / "a.yaml"
        f.write_text(text)
        data, lines = load_yaml(f)
        with pytest.raises(ConfigError, match=pattern):
            validate(AuditSettings, data, f, lines)
    f.write_text(f"witnesses:\n  - {{url: 'http://x', key: '{good}'}}\ntimestamp: {{url: 'http://t', ca: c.pem}}\n")
    data, lines = load_yaml(f)
    s = validate(AuditSettings, data, f, lines)
    s.resolve(tmp_path)
    assert s.quorum == 1 and s.timestamp is not None and s.timestamp.ca == tmp_path / "c.pem"


def test_a_request_sent_in_small_chunks_is_read_whole(witness, log: TestLog) -> None:
    """A body that arrives in pieces (chunked, slowly) is read to its end before it is judged."""
    import time as _time

    def pieces():
        body = log.body(0)
        for i in range(0, len(body), 7):
            _time.sleep(0.002)
            yield body[i : i + 7]

    r = httpx.post(witness.url + "/add-checkpoint", content=pieces(), timeout=10)
    assert r.status_code == 200, r.text

    def huge():
        for _ in range(200):
            yield b"x" * 1024

    assert httpx.post(witness.url + "/add-checkpoint", content=huge(), timeout=10).status_code == 413


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_never_move_the_witness_off_the_log(witness, log: TestLog, data: st.DataObject) -> None:
    """Whatever a request's bytes are changed into, the witness either refuses it or stays on the log's
    own history: the root it holds is always the genuine log's root at the size it holds."""
    if not log.leaves[10:]:
        log.add(30)
    held = post(witness.url, log.body(0, 10))  # first 200; then 409 naming the size it holds
    assert held.status_code in (200, 409)
    size = int(held.text) if held.status_code == 409 else 10
    body = bytearray(log.body(size, 40) if size < 40 else log.body(40, 40))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "old", "swap"]))
    # positions are drawn without bounds that depend on the body: its length follows the size the witness
    # holds, which earlier examples changed (hypothesis needs the same draws for the same choices)
    pos = st.integers(0, 1 << 20)
    if kind == "flip":
        i = data.draw(pos) % len(body)
        body[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        body = body[: data.draw(pos) % len(body)]
    elif kind == "insert":
        i = data.draw(pos) % (len(body) + 1)
        body[i:i] = data.draw(st.binary(min_size=1, max_size=40))
    elif kind == "old":
        first = body.index(b"\n")
        old = data.draw(st.integers(0, 59))
        body[:first] = f"old {old if old < size else old + 1}".encode()  # any size but the one held
    else:
        lines = bytes(body).split(b"\n")
        i, j = data.draw(pos) % len(lines), data.draw(pos) % len(lines)
        if lines[i] == lines[j]:
            return
        lines[i], lines[j] = lines[j], lines[i]
        body = bytearray(b"\n".join(lines))
    r = post(witness.url, bytes(body))
    assert r.status_code in (200, 400, 403, 404, 409, 422), r.status_code
    state = [json.loads(p.read_text()) for p in (witness.dir / "witness-state").glob("*.json")]
    for st_ in state:
        assert base64.b64decode(st_["root"]) == merkle.root(log.leaves[: st_["size"]]), (kind, r.status_code)


def test_over_https_guard_verifies_the_witness_certificate(tmp_path: Path, pki_dir: Path, log: TestLog) -> None:
    """`--tls-cert/--tls-key`: the witness serves HTTPS; Guard's client checks its certificate against the
    configured `ca` and gets nothing from a witness it cannot verify."""
    tls = (pki_dir / "server.pem", pki_dir / "server-key.pem")
    w = start_witness(tmp_path, "witness.test/tls", [log.vkey], tls=tls)
    try:
        assert w.url.startswith("https://localhost:")
        res = Cosigner([WitnessSettings(url=w.url, key=w.vkey, ca=pki_dir / "ca.pem")]).cosign(
            log.checkpoint(), log.proof
        )
        assert set(res.signed) == {w.name}, res.failed
        # without the CA (system store) the certificate is not trusted: no cosignature, the reason says so
        log.add(2)
        res = Cosigner([WitnessSettings(url=w.url, key=w.vkey, timeout_s=5)]).cosign(log.checkpoint(), log.proof)
        assert res.signed == {} and "CERTIFICATE_VERIFY_FAILED" in res.failed[w.name], res.failed
        # plain HTTP to the TLS port is no way around it
        plain = w.url.replace("https://", "http://")
        res = Cosigner([WitnessSettings(url=plain, key=w.vkey, timeout_s=5)]).cosign(log.checkpoint(), log.proof)
        assert res.signed == {}
    finally:
        w.stop()
