"""check_signature (guard/audit/seal.py) verifies Ed25519 with cryptography (OpenSSL); it checks only records
and events of the earlier, per-event signed format (events are now covered by signed Merkle checkpoints).

Its verdicts are compared with libsodium's (crypto_sign_open), an independent implementation: valid
signatures, every single-bit flip, a non-canonical s, another key or message. Where the two libraries'
rules differ (OpenSSL checks the cofactorless equation without libsodium's screens of R and of the key),
a signature that one accepts and the other refuses needs the private key or a key of small order, which is
no key Guard makes or an auditor trusts; both cases are shown so the docs cannot drift from the code.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from nacl.bindings import (
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_sign,
    crypto_sign_ed25519_sk_to_curve25519,
    crypto_sign_open,
    crypto_sign_seed_keypair,
)
from nacl.exceptions import BadSignatureError

from guard.audit.seal import check_signature

L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19


def libsodium(pk: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        crypto_sign_open(sig + msg, pk)
        return True
    except (BadSignatureError, ValueError):
        return False


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def enc(y: int, sign: int = 0) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    pk, sk = crypto_sign_seed_keypair(hashlib.sha256(b"guard test key").digest())
    return pk, sk


def judged(pk: bytes, sig: bytes, msg: bytes) -> bool:
    """check_signature's verdict, asserted equal to libsodium's."""
    ours = check_signature(pk, msg.hex(), b64(sig))
    assert ours == libsodium(pk, sig, msg), (sig.hex(), msg.hex())
    return ours


def test_verdicts_equal_libsodiums_for_valid_and_altered_signatures(key: tuple[bytes, bytes]) -> None:
    pk, sk = key
    other = crypto_sign_seed_keypair(os.urandom(32))[0]
    for i in range(4):
        msg = hashlib.sha256(b"event %d" % i).digest()
        sig = crypto_sign(msg, sk)[:64]
        assert judged(pk, sig, msg)
        assert not judged(other, sig, msg)
        assert not judged(pk, sig, hashlib.sha256(msg).digest())
        for bit in range(512):
            bad = bytearray(sig)
            bad[bit // 8] ^= 1 << (bit % 8)
            assert not judged(pk, bytes(bad), msg)
        s = int.from_bytes(sig[32:], "little")
        assert not judged(pk, sig[:32] + (s + L).to_bytes(32, "little"), msg)  # the same s, not reduced
    for bad_sig in ("", "not base64!", b64(b"\0" * 63), b64(b"\0" * 65)):
        assert not check_signature(pk, "00" * 32, bad_sig)
    assert not check_signature(pk, "not hex", b64(crypto_sign(b"\0" * 32, sk)[:64]))


def test_where_the_libraries_differ_it_takes_the_private_key_or_a_small_order_key(key: tuple[bytes, bytes]) -> None:
    """R = the identity with s = h*a (a the secret scalar) holds the cofactorless equation: OpenSSL accepts
    it, libsodium refuses R of small order. A key of small order (the identity) verifies R = [r]B, s = r
    under OpenSSL; libsodium refuses the key. Every other small-order or non-canonical R is refused by both."""
    pk, sk = key
    a = crypto_sign_ed25519_sk_to_curve25519(sk)
    msg = hashlib.sha256(b"small order").digest()
    y8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
    for y in (0, 1, P - 1, y8, P - y8, P, P + 1):
        for sign in (0, 1):
            R = enc(y, sign)
            h = crypto_core_ed25519_scalar_reduce(hashlib.sha512(R + pk + msg).digest())
            sig = R + crypto_core_ed25519_scalar_mul(h, a)  # takes the private key
            assert not libsodium(pk, sig, msg)
            assert check_signature(pk, msg.hex(), b64(sig)) == ((y, sign) == (1, 0)), (y, sign)
    ident = enc(1)
    r = crypto_core_ed25519_scalar_reduce(os.urandom(64))
    sig = crypto_scalarmult_ed25519_base_noclamp(r) + r
    assert check_signature(ident, (b"\0" * 32).hex(), b64(sig))  # a key nobody should trust
    assert not libsodium(ident, sig, b"\0" * 32)
