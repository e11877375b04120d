"""check_signature gives libsodium's verdicts while ed25519-zebra does the arithmetic (guard/audit/seal.py).

Every signature is judged twice, by check_signature and by libsodium itself (crypto_sign_open), and the
verdicts must agree: valid signatures, every single-bit flip, a non-canonical s, R of small order and R
not canonically encoded, a key of small order. The one documented difference (an R with a torsion
component, which takes the private key to make) is shown too, so the docstring cannot drift from the code.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_sign,
    crypto_sign_ed25519_sk_to_curve25519,
    crypto_sign_open,
    crypto_sign_seed_keypair,
)
from nacl.exceptions import BadSignatureError

from guard.audit import seal
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


def test_the_fast_path_is_the_one_in_use(key: tuple[bytes, bytes]) -> None:
    assert seal._zebra_verify is not None, "py-ed25519-zebra-bindings is a dependency (pyproject.toml)"
    assert seal._prime_order(key[0])


@pytest.mark.parametrize("zebra", [True, False], ids=["ed25519-zebra", "libsodium-only"])
def test_verdicts_equal_libsodiums_for_valid_and_altered_signatures(
    key: tuple[bytes, bytes], zebra: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not zebra:
        monkeypatch.setattr(seal, "_zebra_verify", None)
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


def test_r_of_small_order_or_not_canonical_is_refused_as_libsodium_refuses_it(key: tuple[bytes, bytes]) -> None:
    """With A of prime order and R of small order, s = h*a makes the cofactored equation hold: ed25519-zebra
    (ZIP 215) accepts the signature. libsodium refuses it for R's small order, and so must check_signature;
    the same for R = the identity or the point of order 4 written with y + p (not canonical). That zebra
    accepts each shows every y in seal's list is of small order; the eight points have five distinct y."""
    pk, sk = key
    a = crypto_sign_ed25519_sk_to_curve25519(sk)  # the clamped secret scalar
    msg = hashlib.sha256(b"small order").digest()
    assert len(seal._SMALL_ORDER_Y) == 5
    for y in (*sorted(seal._SMALL_ORDER_Y), P, P + 1):
        for sign in (0, 1):
            R = enc(y, sign)
            h = crypto_core_ed25519_scalar_reduce(hashlib.sha512(R + pk + msg).digest())
            sig = R + crypto_core_ed25519_scalar_mul(h, a)
            if (y, sign) not in ((1, 1), (P - 1, 1), (P + 1, 1)):  # x = 0 has no negative: no such point
                assert seal._zebra_verify(sig, msg, pk), (y, sign)
            assert not judged(pk, sig, msg)


def test_a_key_of_small_order_goes_to_libsodium_which_refuses_it() -> None:
    """ZIP 215 accepts a small-order key; with A the identity, R = [r]B and s = r verify under it. Such a key
    is never given to ed25519-zebra: check_signature refuses the signature, like libsodium."""
    ident = enc(1)
    r = crypto_core_ed25519_scalar_reduce(os.urandom(64))
    R = crypto_scalarmult_ed25519_base_noclamp(r)
    sig = R + r
    assert seal._zebra_verify(sig, b"\0" * 32, ident), "ZIP 215 accepts it: the screen below is needed"
    assert not seal._prime_order(ident)
    assert not judged(ident, sig, b"\0" * 32)


def test_the_documented_difference_takes_the_private_key(key: tuple[bytes, bytes]) -> None:
    """R = [r]B + T, T of order 8, s = r + h*a: the cofactored equation holds, the cofactorless does not.
    Only the key's holder can make it; check_signature accepts it and libsodium does not, as seal.py says."""
    pk, sk = key
    a = crypto_sign_ed25519_sk_to_curve25519(sk)
    msg = hashlib.sha256(b"torsion").digest()
    r = crypto_core_ed25519_scalar_reduce(os.urandom(64))
    R = crypto_core_ed25519_add(crypto_scalarmult_ed25519_base_noclamp(r), enc(seal._Y8))
    h = crypto_core_ed25519_scalar_reduce(hashlib.sha512(R + pk + msg).digest())
    sig = R + crypto_core_ed25519_scalar_add(r, crypto_core_ed25519_scalar_mul(h, a))
    assert check_signature(pk, msg.hex(), b64(sig))
    assert not libsodium(pk, sig, msg)
