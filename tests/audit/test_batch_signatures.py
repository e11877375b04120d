"""Signatures checked in batches (guard/audit/seal.py check_signatures, on the C extension's msm) give the
same verdict for every signature as check_signature one at a time.

msm itself is checked against libsodium's point arithmetic: prime-order points and points with a torsion
component, scalars of 128 and 253 bits and scalars beyond the group order, sums of 0 to 130 points.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random

import pytest
from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_from_uniform,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
    crypto_sign,
    crypto_sign_ed25519_sk_to_curve25519,
    crypto_sign_seed_keypair,
)

from guard.audit import seal
from guard.audit.seal import check_signature, check_signatures

L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19
IDENTITY = (1).to_bytes(32, "little")
T8 = seal._Y8.to_bytes(32, "little")  # a point of order 8
msm = seal._msm


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def small_multiple(t: bytes, k: int) -> bytes:
    acc = IDENTITY
    for _ in range(k % 8):
        acc = crypto_core_ed25519_add(acc, t)
    return acc


def expected_sum(points: list[tuple[bytes, bool]], scalars: list[int]) -> bytes:
    """sum(s_i * P_i) with libsodium; a point (P0, True) stands for P0 + T8."""
    acc = IDENTITY
    for (p0, torsion), s in zip(points, scalars, strict=False):
        if s % L:
            acc = crypto_core_ed25519_add(acc, crypto_scalarmult_ed25519_noclamp((s % L).to_bytes(32, "little"), p0))
        if torsion:
            acc = crypto_core_ed25519_add(acc, small_multiple(T8, s))
    return acc


def test_the_extension_is_built() -> None:
    assert msm is not None, "guard/audit/_ed25519_batch.c is built by `make install` (setup.py)"


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 64, 130])
def test_msm_equals_libsodiums_sum(n: int) -> None:
    rnd = random.Random(n)
    for trial in range(3):
        base = [crypto_core_ed25519_from_uniform(rnd.randbytes(32)) for _ in range(n)]
        torsion = [trial == 2 and i % 2 == 0 for i in range(n)]
        points = [(p, t) for p, t in zip(base, torsion, strict=False)]
        enc = [crypto_core_ed25519_add(p, T8) if t else p for p, t in points]
        bits = (128, 253, 256)[trial]
        scalars = [rnd.getrandbits(bits) or 1 for _ in range(n)]
        if n:
            scalars[0] = 2**256 - 1  # the longest signed-digit form: 257 digits
        got = msm(b"".join(enc), b"".join(s.to_bytes(32, "little") for s in scalars))
        assert got == expected_sum(points, scalars), (n, trial)


def test_msm_refuses_what_is_not_a_point() -> None:
    good = crypto_core_ed25519_from_uniform(os.urandom(32))
    one = (1).to_bytes(32, "little")
    assert msm(good, one) == good
    not_on_curve = next(
        e
        for e in ((y).to_bytes(32, "little") for y in range(2, 100))
        if not crypto_core_ed25519_is_valid_point(e) and msm(e, one) is None
    )
    assert msm(good + not_on_curve, one * 2) is None
    assert msm((P + 1).to_bytes(32, "little"), one) is None  # y not canonical (y = 1 + p)
    assert msm((1 | 1 << 255).to_bytes(32, "little"), one) is None  # x = 0 with the sign bit set
    with pytest.raises(ValueError):
        msm(good, one + one)
    with pytest.raises(ValueError):
        msm(good[:31], one[:31])


def _signed(sk: bytes, n: int, tag: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        msg = hashlib.sha256(tag + b"%d" % i).digest()
        out.append((msg, crypto_sign(msg, sk)[:64]))
    return out


def test_verdicts_equal_one_by_one_for_a_mixed_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    pk, sk = crypto_sign_seed_keypair(hashlib.sha256(b"batch key").digest())
    pk2, sk2 = crypto_sign_seed_keypair(hashlib.sha256(b"batch key 2").digest())
    a = crypto_sign_ed25519_sk_to_curve25519(sk)
    items: list[tuple[bytes, str, str]] = []
    for msg, sig in _signed(sk, 150, b"a"):
        items.append((pk, msg.hex(), b64(sig)))
    for msg, sig in _signed(sk2, 5, b"b"):
        items.append((pk2, msg.hex(), b64(sig)))
    rnd = random.Random(7)
    bad: list[tuple[bytes, str, str]] = []
    for msg, sig in _signed(sk, 12, b"c"):
        bit = rnd.randrange(512)
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad.append((pk, msg.hex(), b64(bytes(flipped))))
    msg, sig = _signed(sk, 1, b"d")[0]
    s = int.from_bytes(sig[32:], "little")
    bad.append((pk, msg.hex(), b64(sig[:32] + (s + L).to_bytes(32, "little"))))  # s not reduced
    bad.append((pk2, msg.hex(), b64(sig)))  # another key
    bad.append((pk, hashlib.sha256(msg).digest().hex(), b64(sig)))  # another message
    bad.append((pk, msg.hex(), "not base64!"))
    bad.append((pk, "not hex", b64(sig)))
    for y in (1, seal._Y8, P + 1):  # R of small order (zebra alone would accept these) or not canonical
        R = y.to_bytes(32, "little")
        h = crypto_core_ed25519_scalar_reduce(hashlib.sha512(R + pk + msg).digest())
        bad.append((pk, msg.hex(), b64(R + crypto_core_ed25519_scalar_mul(h, a))))
    r = crypto_core_ed25519_scalar_reduce(os.urandom(64))  # the documented case: R with a torsion component
    R = crypto_core_ed25519_add(crypto_scalarmult_ed25519_base_noclamp(r), T8)
    h = crypto_core_ed25519_scalar_reduce(hashlib.sha512(R + pk + msg).digest())
    torsion = (pk, msg.hex(), b64(R + crypto_core_ed25519_scalar_add(r, crypto_core_ed25519_scalar_mul(h, a))))
    ident_r = crypto_core_ed25519_scalar_reduce(os.urandom(64))  # a key of small order: libsodium's verdict
    small_key = (IDENTITY, "00" * 32, b64(crypto_scalarmult_ed25519_base_noclamp(ident_r) + ident_r))
    for it in [*bad, torsion, small_key]:
        items.insert(rnd.randrange(len(items) + 1), it)
    one_by_one = [check_signature(*it) for it in items]
    calls = []
    zebra = seal._zebra_verify
    monkeypatch.setattr(seal, "_zebra_verify", lambda *a: calls.append(1) or zebra(*a))
    assert check_signatures(items) == one_by_one
    assert one_by_one.count(True) == 150 + 5 + 1 and one_by_one[items.index(torsion)]
    assert not one_by_one[items.index(small_key)]
    assert calls  # the batches holding a bad signature that passes the screens were re-checked one by one


def test_a_batch_of_valid_signatures_needs_no_single_check(monkeypatch: pytest.MonkeyPatch) -> None:
    pk, sk = crypto_sign_seed_keypair(os.urandom(32))
    items = [(pk, m.hex(), b64(s)) for m, s in _signed(sk, 2 * seal._BATCH + 3, b"ok")]
    monkeypatch.setattr(seal, "_zebra_verify", lambda *a: pytest.fail("a single check was made"))
    assert check_signatures(items) == [True] * len(items)


def test_one_bad_signature_among_many_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bad one passes every screen (only its s is wrong): only the batch equation can catch it."""
    pk, sk = crypto_sign_seed_keypair(os.urandom(32))
    items = [(pk, m.hex(), b64(s)) for m, s in _signed(sk, seal._BATCH, b"one")]
    k = 37
    sig = base64.b64decode(items[k][2])
    s = (int.from_bytes(sig[32:], "little") + 1) % L
    items[k] = (pk, items[k][1], b64(sig[:32] + s.to_bytes(32, "little")))
    verdicts = check_signatures(items)
    assert verdicts == [i != k for i in range(len(items))]


def test_without_the_extension_every_signature_is_checked_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    pk, sk = crypto_sign_seed_keypair(os.urandom(32))
    items = [(pk, m.hex(), b64(s)) for m, s in _signed(sk, 3, b"alone")]
    items.append((pk, items[0][1], items[1][2]))
    monkeypatch.setattr(seal, "_msm", None)
    assert check_signatures(items) == [True, True, True, False]


@pytest.mark.parametrize("case", ["s + L", "R of small order", "R not canonical"])
def test_what_the_equation_would_let_through_is_screened_before_it(case: str) -> None:
    """Each of these holds the batch equation (or ed25519-zebra's) but not libsodium's rules; among
    valid signatures, so that nothing else makes the batch fail, each must still be refused."""
    pk, sk = crypto_sign_seed_keypair(os.urandom(32))
    a = crypto_sign_ed25519_sk_to_curve25519(sk)
    items = [(pk, m.hex(), b64(s)) for m, s in _signed(sk, 10, b"screen")]
    msg, sig = _signed(sk, 1, b"x")[0]
    if case == "s + L":
        odd = sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
    else:
        R = (1 if case == "R of small order" else P + 1).to_bytes(32, "little")
        h = crypto_core_ed25519_scalar_reduce(hashlib.sha512(R + pk + msg).digest())
        odd = R + crypto_core_ed25519_scalar_mul(h, a)
    items.insert(4, (pk, msg.hex(), b64(odd)))
    assert check_signatures(items) == [i != 4 for i in range(len(items))]
