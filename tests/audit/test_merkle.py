"""RFC 6962/9162 Merkle hashing and proofs against the reference known-answer vectors
(transparency-dev/merkle testonly/constants.go and proof/verify_test.go, the Certificate Transparency test
tree), plus property tests: every honest proof verifies, every altered one never does."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

INPUTS = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAVES = [leaf_hash(x) for x in INPUTS]
H = bytes.fromhex
# (0-based leaf index, tree size, audit path)
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME = H("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_roots_of_every_size_match_the_reference():
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for n in range(1, 9):
        assert root(LEAVES[:n]).hex() == ROOTS[n - 1]
        cr = CompactRange()
        for leaf in LEAVES[:n]:
            cr.append(leaf)
        assert cr.root().hex() == ROOTS[n - 1]
        resumed = CompactRange(cr.size, cr.hashes)
        assert resumed.root() == cr.root()


def _inclusion_mutants(index, size, proof, rt, leaf):
    yield index - 1, size, leaf, proof, rt
    yield index + 1, size, leaf, proof, rt
    yield index ^ 2, size, leaf, proof, rt
    yield index, size * 2, leaf, proof, rt
    yield index, size // 2, leaf, proof, rt
    yield index, size, b"WrongLeaf", proof, rt
    yield index, size, leaf, proof, EMPTY_ROOT
    yield index, size, leaf, proof, SOME
    yield index, size, leaf, [*proof, b""], rt
    yield index, size, leaf, [*proof, rt], rt
    yield index, size, leaf, [b"", *proof], rt
    yield index, size, leaf, [rt, *proof], rt
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        yield index, size, leaf, bad, rt
    if proof:
        yield index, size, leaf, proof[:-1], rt
    if len(proof) > 1:
        yield index, size, leaf, [proof[0], SOME, *proof[1:]], rt


@pytest.mark.parametrize("index,size,path", INCLUSION)
def test_reference_inclusion_proofs_are_produced_and_verify_and_no_mutant_does(index, size, path):
    proof = [H(p) for p in path]
    assert inclusion_proof(LEAVES, index, size) == proof
    rt = H(ROOTS[size - 1])
    assert verify_inclusion(index, size, LEAVES[index], proof, rt)
    for args in _inclusion_mutants(index, size, proof, rt, LEAVES[index]):
        assert not verify_inclusion(args[0], args[1], args[2], args[3], args[4]), args[:2]


def test_degenerate_inclusion_inputs_never_verify():
    for index, size in ((0, 0), (1, 0), (2, 1), (-1, 1)):
        assert not verify_inclusion(index, size, SOME, [], EMPTY_ROOT)
        assert not verify_inclusion(index, size, SOME, [], SOME)
    assert not verify_inclusion(0, 1, b"", [], b"")


@pytest.mark.parametrize("old,new,path", CONSISTENCY)
def test_reference_consistency_proofs_are_produced_and_verify_and_no_mutant_does(old, new, path):
    proof = [H(p) for p in path]
    assert consistency_proof(LEAVES, old, new) == proof
    r1, r2 = H(ROOTS[old - 1]), H(ROOTS[new - 1])
    assert verify_consistency(old, new, r1, r2, proof)
    if not proof:
        return
    mutants = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        mutants.append((old, new, r1, r2, bad))
    for m in mutants:
        assert not verify_consistency(*m), m[:2]


def test_trivial_consistency_cases():
    a, b = b"\x01" * 32, b"\x02" * 32
    assert verify_consistency(0, 0, a, a, [])
    assert verify_consistency(0, 1, a, b, [])
    assert verify_consistency(1, 1, b, b, [])
    assert not verify_consistency(0, 0, a, b, [])
    assert not verify_consistency(1, 1, a, b, [])
    assert not verify_consistency(1, 0, a, b, [])
    assert not verify_consistency(2, 1, a, b, [])
    assert not verify_consistency(1, 2, a, b, [])
    assert not verify_consistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def _flip(proof, i, byte):
    bad = list(proof)
    h = bytearray(bad[i])
    h[byte % 32] ^= 1
    bad[i] = bytes(h)
    return bad


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_random_trees_every_inclusion_proof_verifies_and_mutants_never(n, data):
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    rt = root(leaves)
    assert cr.root() == rt
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(leaves, index)
    assert verify_inclusion(index, n, leaves[index], proof, rt)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        assert not verify_inclusion(index, n, leaves[index], _flip(proof, i, data.draw(st.integers(0, 31))), rt)
        assert not verify_inclusion(index, n, leaves[index], proof[:-1], rt)
    assert not verify_inclusion(index, n, leaves[index], [*proof, rt], rt)
    other = data.draw(st.integers(0, 2 * n).filter(lambda j: j != index))
    assert not verify_inclusion(other, n, leaves[index], proof, rt)
    # a proof does not bind the size on its own (the signed checkpoint binds size and root together), but a
    # size of another height never fits
    assert not verify_inclusion(index, 2 * n, leaves[index], proof, rt)
    if n > 1:
        assert not verify_inclusion(index, n // 2, leaves[index], proof, rt)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 300), data=st.data())
def test_random_trees_every_consistency_proof_verifies_and_mutants_never(n, data):
    leaves = [leaf_hash(b"x" + i.to_bytes(4, "big")) for i in range(n)]
    old = data.draw(st.integers(1, n - 1))
    proof = consistency_proof(leaves, old)
    r1, r2 = root(leaves[:old]), root(leaves)
    assert verify_consistency(old, n, r1, r2, proof)
    i = data.draw(st.integers(0, len(proof) - 1))
    assert not verify_consistency(old, n, r1, r2, _flip(proof, i, data.draw(st.integers(0, 31))))
    assert not verify_consistency(old, n, r1, r2, proof[:-1])
    assert not verify_consistency(old, n, r1, r2, [*proof, r2])
    other = data.draw(st.integers(1, n - 1).filter(lambda s: s != old))
    assert not verify_consistency(other, n, r1, r2, proof)
    assert not verify_consistency(old, 2 * n, r1, r2, proof)
    # a forked history: the same old size, one leaf changed, never consistent with the honest old root
    forked = list(leaves)
    j = data.draw(st.integers(0, old - 1))
    forked[j] = leaf_hash(b"forged")
    assert not verify_consistency(old, n, r1, root(forked), consistency_proof(forked, old))


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 300), data=st.data())
def test_extend_in_any_pieces_builds_the_same_tree_as_appending_one_leaf_at_a_time(n, data):
    leaves = [leaf_hash(b"e" + i.to_bytes(4, "big")) for i in range(n)]
    start = data.draw(st.integers(0, n))
    one, pieces = CompactRange(), CompactRange()
    for leaf in leaves[:start]:
        one.append(leaf)
        pieces.append(leaf)
    pos = start
    while pos < n:
        k = data.draw(st.integers(1, n - pos))
        pieces.extend(b"".join(leaves[pos:]) + b"\xff" * 32, k)  # hashes past ``k`` are not taken
        pos += k
        assert pieces.size == pos
    for leaf in leaves[start:]:
        one.append(leaf)
    assert pieces.hashes == one.hashes and pieces.root() == one.root() == root(leaves)
    with pytest.raises(ValueError):
        pieces.extend(b"\x00" * 32, 2)
