"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs, and a compact range.

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two smaller than n

Proof generation follows RFC 9162 section 2.1.3.1 (PATH) and 2.1.4.1 (SUBPROOF); verification follows
sections 2.1.3.2 and 2.1.4.2 literally. Verifiers return False for any malformed input instead of raising.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of the leaf hashes ``leaves[lo:hi]`` (no copies; recursion depth is log2 of the size)."""
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[lo]
    if n & (n - 1) == 0:  # a perfect subtree: hash level by level, no recursion
        level = [node_hash(leaves[i], leaves[i + 1]) for i in range(lo, hi, 2)]
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        return level[0]
    k = _split(n)
    return node_hash(subtree_root(leaves, lo, lo + k), subtree_root(leaves, lo + k, hi))


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes."""
    return subtree_root(leaves, 0, len(leaves))


SubRoot = Callable[[int, int], bytes]  # MTH of leaves [lo, hi): a cache of a large tree may stand in


def inclusion_proof(
    leaves: Sequence[bytes], index: int, size: int | None = None, subroot: SubRoot | None = None
) -> list[bytes]:
    """PATH(index, D[0:size]) over leaf hashes: the audit path, leaf side first."""
    size = len(leaves) if size is None else size
    sr = subroot or (lambda lo, hi: subtree_root(leaves, lo, hi))
    if not 0 <= index < size <= len(leaves):
        raise ValueError(f"no leaf {index} in a tree of {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(sr(lo + k, hi))
            hi = lo + k
        else:
            path.append(sr(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof(
    leaves: Sequence[bytes], old_size: int, new_size: int | None = None, subroot: SubRoot | None = None
) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) over leaf hashes (RFC 9162 2.1.4.1)."""
    new_size = len(leaves) if new_size is None else new_size
    sr = subroot or (lambda lo, hi: subtree_root(leaves, lo, hi))
    if not 0 <= old_size <= new_size <= len(leaves):
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    out: list[bytes] = []

    def sub(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                out.append(sr(lo, hi))
            return
        k = _split(n)
        if m <= k:
            sub(m, lo, lo + k, whole)
            out.append(sr(lo + k, hi))
        else:
            sub(m - k, lo + k, hi, False)
            out.append(sr(lo, lo + k))

    sub(old_size, 0, new_size, True)
    return out


def _ok_hashes(*hashes: object) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2: the root the proof leads to, or None when the proof cannot be for (index, size)."""
    if not (isinstance(index, int) and isinstance(size, int)) or not 0 <= index < size:
        return None
    if not _ok_hashes(leaf, *proof):
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> bool:
    got = root_from_inclusion(index, size, leaf, proof)
    return got is not None and _ok_hashes(root_hash) and got == root_hash


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2. A tree of 0 leaves is consistent with any tree (empty proof)."""
    if not (isinstance(old_size, int) and isinstance(new_size, int)) or not 0 <= old_size <= new_size:
        return False
    if not _ok_hashes(*proof):
        return False
    if old_size == new_size:
        return not proof and _ok_hashes(old_root, new_root) and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof or not _ok_hashes(old_root, new_root):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class CompactRange:
    """The roots of the perfect subtrees of a growing tree, largest (leftmost) first: O(log n) memory.

    ``append`` takes a leaf hash; ``root()`` is MTH of everything appended. ``state``/``from_state``
    let a writer resume a tree from its last checkpoint (size + these hashes).
    """

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1") or not _ok_hashes(*hashes):
            raise ValueError("a compact range holds one hash per set bit of its size")
        self.size = size
        self._hashes = list(hashes)

    def append(self, leaf: bytes) -> int:
        """Add a leaf hash; returns its index."""
        index = self.size
        h = leaf
        hashes = self._hashes
        n = index
        while n & 1:
            h = node_hash(hashes.pop(), h)
            n >>= 1
        hashes.append(h)
        self.size = index + 1
        return index

    def extend(self, leaves: bytes | memoryview, count: int | None = None) -> None:
        """Append ``count`` (default: all) leaf hashes given back to back, 32 bytes each: the same tree as
        ``append`` one at a time, hashed a perfect subtree at a time, level by level (no per-leaf loop)."""
        view = memoryview(leaves)
        n = len(view) // HASH_SIZE if count is None else count
        if n * HASH_SIZE > len(view):
            raise ValueError("fewer leaf hashes than asked for")
        pos = 0
        while pos < n:
            size = self.size
            k = 1 << ((n - pos).bit_length() - 1)  # the largest perfect subtree that fits what is left ...
            if size:
                k = min(k, size & -size)  # ... and starts where this tree's size is aligned to it
            a = pos * HASH_SIZE
            level = [view[i : i + HASH_SIZE].tobytes() for i in range(a, a + k * HASH_SIZE, HASH_SIZE)]
            while len(level) > 1:
                level = [_sha256(b"\x01" + x + y).digest() for x, y in zip(level[::2], level[1::2], strict=True)]
            self._push(level[0], k)
            pos += k

    def _push(self, h: bytes, width: int) -> None:
        """Add the root of a perfect subtree of ``width`` leaves (a power of two dividing the size)."""
        hashes = self._hashes
        n = self.size // width
        while n & 1:
            h = node_hash(hashes.pop(), h)
            n >>= 1
        hashes.append(h)
        self.size += width

    def root(self) -> bytes:
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = node_hash(h, r)
        return r

    @property
    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self._hashes)
