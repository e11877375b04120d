"""RFC 3161 tokens for checkpoints (guard/audit/tsa.py) from a real TSA on loopback: `openssl ts -reply` with a
key and certificates openssl made for the test. Tokens Guard accepts also verify with `openssl ts -verify`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit.settings import TimestampSettings
from guard.audit.tsa import TsaError, build_request, check_token, load_cas, request_token
from tests.audit.tsa_server import LocalTsa

NOTE = b"guard-audit/w1\n42\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\xe2\x80\x94 guard-audit/w1 AAAA\n"


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory):
    with LocalTsa(tmp_path_factory.mktemp("tsa")) as t:
        yield t


@pytest.fixture(scope="module")
def token(tsa: LocalTsa) -> bytes:
    return request_token(NOTE, TimestampSettings(url=tsa.url, ca=tsa.ca))


def test_a_token_covers_exactly_the_checkpoint_and_chains_to_the_configured_ca(
    tsa: LocalTsa, token: bytes, tmp_path: Path
) -> None:
    cas = load_cas(tsa.ca)
    ok = check_token(token, NOTE, cas)
    assert ok.ok and ok.gen_time is not None and ok.tsa == "CN=Test TSA Signer"
    assert check_token(token, NOTE + b" ", cas).reason == "imprint_mismatch"
    assert check_token(token, NOTE[:-1], cas).reason == "imprint_mismatch"
    with LocalTsa(tmp_path / "rogue", name="Rogue") as rogue:
        assert check_token(token, NOTE, load_cas(rogue.ca)).reason == "untrusted_tsa"
        # a token from a TSA the auditor does not trust, over the right bytes, is refused too
        theirs = request_token(NOTE, TimestampSettings(url=rogue.url, ca=rogue.ca))
        assert check_token(theirs, NOTE, cas).reason == "untrusted_tsa"
        with pytest.raises(TsaError, match="untrusted_tsa"):  # Guard checks what it gets before keeping it
            request_token(NOTE, TimestampSettings(url=rogue.url, ca=tsa.ca))
    # the same token checked by OpenSSL's own verifier
    (tmp_path / "tsr.der").write_bytes(token)
    (tmp_path / "checkpoint.txt").write_bytes(NOTE)
    p = subprocess.run(
        [
            "openssl",
            "ts",
            "-verify",
            "-data",
            str(tmp_path / "checkpoint.txt"),
            "-in",
            str(tmp_path / "tsr.der"),
            "-CAfile",
            str(tsa.ca),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and "Verification: OK" in p.stdout, p.stderr


def test_a_failing_tsa_raises_and_a_nonce_is_sent(tsa: LocalTsa) -> None:
    query, nonce = build_request(NOTE)
    assert nonce is not None and len(query) > 40
    tsa.fail = True
    try:
        with pytest.raises(TsaError, match="503"):
            request_token(NOTE, TimestampSettings(url=tsa.url, ca=tsa.ca))
    finally:
        tsa.fail = False
    with pytest.raises(TsaError):  # nothing listens
        request_token(NOTE, TimestampSettings(url="http://127.0.0.1:9", ca=tsa.ca, timeout_s=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_token_never_attests_anything_else(tsa: LocalTsa, token: bytes, data: st.DataObject) -> None:
    b = bytearray(token)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    else:
        b += data.draw(st.binary(min_size=1, max_size=16))
    cas = load_cas(tsa.ca)
    res = check_token(bytes(b), NOTE, cas)
    # Some bytes are not covered by the CMS signature (SignedData's version, SignerInfo's signatureAlgorithm,
    # which OpenSSL takes from the key): changing them may leave the token valid, but never what it attests.
    orig = check_token(token, NOTE, cas)
    assert not res.ok or (res.gen_time, res.tsa) == (orig.gen_time, orig.tsa), res
