"""The leaf cache of closed segments (guard.audit.leafcache): a fresh process's first receipt takes the
closed segments' leaf hashes from it instead of re-reading them; a cache that no longer matches (altered,
or written for another state) never yields a receipt that does not verify."""

from __future__ import annotations

import asyncio
from pathlib import Path

from guard.audit import layout, leafcache
from guard.audit.journal import Journal
from guard.audit.proofs import _READERS, receipt, verify_receipt
from guard.audit.seal import keygen, load_public_keys
from tests.audit.conftest import make_settings


def _journal(tmp_path: Path, n: int = 120) -> tuple[Path, list]:
    priv, pub, _ = keygen(tmp_path / "keys")
    root = tmp_path / "audit"
    j = Journal(make_settings(root, signing_key=priv, checkpoint_events=8, segment_max_bytes=4096), "w1")

    async def fill() -> None:
        for i in range(n):
            await j.append({"type": "test.event", "n": i, "pad": "x" * 200})

    asyncio.run(fill())
    j.close()
    return root, list(load_public_keys([pub]).values())


def _fresh() -> None:
    _READERS.clear()  # what a new process starts with


def test_a_fresh_reader_takes_closed_segments_from_the_cache_and_its_receipts_verify(tmp_path: Path) -> None:
    root, keys = _journal(tmp_path)
    segs = layout.segments(root, "w1")
    assert len(segs) >= 4
    _fresh()
    first = receipt(root, "guard-audit/w1", 17)
    verify_receipt(first, keys)
    cached = sorted((segs[0].parent / leafcache.DIR).iterdir())
    assert [p.name for p in cached] == [s.name + ".leaves" for s in segs[:-1]]  # closed segments only
    _fresh()
    again = receipt(root, "guard-audit/w1", 17)
    assert _READERS[(str(root), "w1")].cached > 0
    assert again == first
    for i in (0, 60, 110):
        verify_receipt(receipt(root, "guard-audit/w1", i), keys)


def test_an_altered_cache_is_dropped_and_the_receipt_rebuilt_from_the_segments(tmp_path: Path) -> None:
    root, keys = _journal(tmp_path)
    _fresh()
    good = receipt(root, "guard-audit/w1", 5)
    cache = sorted((layout.chains_dir(root) / "w1" / leafcache.DIR).iterdir())[0]
    data = bytearray(cache.read_bytes())
    good_leaves = bytes(data).split(b"\n", 1)[1]
    altered = int(data.split(b"\n", 1)[0].split(b'"count": ')[1].split(b"}")[0]) - 2  # the leaf changed below
    data[-40] ^= 1  # one bit of one cached leaf hash
    cache.write_bytes(bytes(data))
    _fresh()
    rec = receipt(root, "guard-audit/w1", altered)
    verify_receipt(rec, keys)  # built again from the segments
    assert _READERS[(str(root), "w1")].cached == 0
    seg = cache.parent.parent / cache.name.removesuffix(".leaves")
    assert leafcache.load(seg, 0) == good_leaves  # and the cache written again from them
    _fresh()
    assert receipt(root, "guard-audit/w1", 5) == good
    assert _READERS[(str(root), "w1")].cached > 0


def test_a_cache_whose_header_does_not_fit_the_segment_is_not_used(tmp_path: Path) -> None:
    root, _keys = _journal(tmp_path)
    _fresh()
    receipt(root, "guard-audit/w1", 3)
    seg = layout.segments(root, "w1")[0]
    assert leafcache.load(seg, 0) is not None
    assert leafcache.load(seg, 1) is None  # another position in the tree
    with open(seg, "ab") as f:  # the segment is not the size the cache was written for
        f.write(b"\n")
    assert leafcache.load(seg, 0) is None
