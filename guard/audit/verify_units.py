"""The worker side of ``guard audit verify``: one unit (a newline-aligned byte range of one segment) checked
on its own: every line's hash (and, for lines of the earlier per-event signed format, its signature), its
Merkle leaf hash, and the links, sequence numbers and checkpoints between the unit's lines."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from guard.audit.merkle import leaf_hash
from guard.audit.seal import canonical, check_signature, check_signatures

_KEYS: dict[str, bytes] = {}  # key_id -> raw public key
_MODE = {"all": True}  # signatures of the earlier format: True = every event; False = checkpoints and unit ends
_FAST = {"on": True}  # False: every unit comes back line by line (the reference the tests compare with)
_CP = "audit.checkpoint"
_MALFORMED = (None, None, None, "malformed", None, None, None, b"")
Line = tuple[Any, Any, Any, str, Any, Any, Any, bytes]  # seq, prev, hash, status, type, checkpoint, key_id, leaf


class _Unit(NamedTuple):
    """What a worker returns for one unit (a newline-aligned byte range of one segment)."""

    lines: int
    first: Line | None  # the record of its first line (the parent checks it against the chain so far)
    records: list[Line] | None  # every line's record when the unit does not hold together on its own
    last_seq: int = 0
    last_hash: str = ""
    last_type: Any = None
    first_cp: tuple[int, dict[str, Any]] | None = None  # (index, checkpoint) the parent checks: count, prev_checkpoint
    checkpoints: int = 0  # checkpoints after the first line
    last_cp: tuple[int, str, bool] | None = None  # (index, hash, final) of the last checkpoint after the first line
    key_ids: frozenset[str] = frozenset()
    head_hash: str | None = None  # hash of the event at the head record's seq, after the first line
    leaves: bytes = b""  # the Merkle leaf hashes of the lines after the first, 32 bytes each


def _init(raw: dict[str, bytes], all_signatures: bool = True, fast: bool = True) -> None:
    _MODE["all"], _FAST["on"] = all_signatures, fast
    _KEYS.clear()
    _KEYS.update(raw)  # raw bytes of keys load_public_keys parsed


def _hashes(line: bytes, e: dict[str, Any], h: str, sig: str | None) -> bytes | None:
    """The line's Merkle leaf hash when its body hashes to ``h``, else None. Guard writes the canonical body
    with ``hash`` (and, in the earlier format, ``sig``) appended: those bytes are hashed directly; a line in
    any other (equivalent) form, e.g. re-serialised by another tool, is canonicalised again.

    Sound because Guard only ever hashes canonical bodies: bytes whose SHA-256 is the stored hash are the
    body that was hashed, whatever form they are in.
    """
    tail = b',"hash":"%s"}' % h.encode() if sig is None else b',"hash":"%s","sig":"%s"}' % (h.encode(), sig.encode())
    if line.endswith(tail):
        view = memoryview(line)[: -len(tail)]
        d = hashlib.sha256(view)
        d.update(b"}")
        if d.hexdigest() == h:
            leaf = hashlib.sha256(b"\x00")
            leaf.update(view)
            leaf.update(b"}")
            return leaf.digest()
    rest = {k: v for k, v in e.items() if k != "hash" and k != "sig"}
    try:
        body = canonical(rest)
    except (ValueError, TypeError, UnicodeError):
        return None
    return leaf_hash(body) if hashlib.sha256(body).hexdigest() == h else None


def _loads(line: bytes) -> Any:
    """orjson (2x json.loads); what it refuses (NaN, lone surrogates, ...) gets the standard parser's say."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def _check_line(
    line: bytes,
    last: bool = False,
    loads: Callable[[bytes], Any] = _loads,
    wait: list[tuple[int, bytes, str, str]] | None = None,
    index: int = 0,
) -> Line:
    """The line's record. With ``wait``, a signature to check is appended to it (with ``index``) and the
    status says ``ok`` until ``_check_lines`` has checked it. Lines of the current format carry no
    signature (signed checkpoints cover them); lines of the earlier format carry ``sig``."""
    try:
        e = loads(line)
        seq, prev, h, kid = e["seq"], e["prev"], e["hash"], e["key_id"]
        sig = e.get("sig")
        typ = e.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        return _MALFORMED
    key = _KEYS.get(kid) if type(kid) is str else None
    leaf = b""
    if key is None:
        status = "unknown_key"
    elif not (type(h) is str and type(sig) in (str, type(None))) or not (leaf := _hashes(line, e, h, sig) or b""):
        status = "hash_mismatch"
    elif sig is None or not (_MODE["all"] or last or typ == _CP):
        status = "ok"
    elif wait is not None:
        wait.append((index, key, h, sig))
        status = "ok"
    else:
        status = "ok" if check_signature(key, h, sig) else "bad_signature"
    return seq, prev, h, status, typ, e.get("checkpoint") if typ == _CP else None, kid, leaf


def _read_lines(path: str, start: int, end: int) -> list[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return data.split(b"\n")[:-1]


def _check_lines(lines: list[bytes]) -> list[Line]:
    """Every line's record (signatures of earlier-format lines checked after the hashes)."""
    n = len(lines)
    wait: list[tuple[int, bytes, str, str]] = []
    recs = [_check_line(line, i == n - 1, _loads, wait, i) for i, line in enumerate(lines)]
    for (i, *_), ok in zip(wait, check_signatures([w[1:] for w in wait]), strict=False):
        if not ok:
            recs[i] = (*recs[i][:3], "bad_signature", *recs[i][4:])
    return recs


def _records(lines: list[bytes], done: list[Line]) -> list[Line]:
    n = len(lines)
    return done + [_check_line(lines[i], i == n - 1) for i in range(len(done), n)]


def _check_unit(path: str, start: int, end: int, head_seq: Any = None) -> _Unit:
    """Check one unit on its own; a summary when it holds together, else every line's record."""
    lines = _read_lines(path, start, end)
    n = len(lines)
    if not n:
        return _Unit(0, None, [])
    if not _FAST["on"]:
        every = _records(lines, [])
        return _Unit(n, every[0], every)
    recs = _check_lines(lines)
    kids: set[str] = set()
    seq = prev_seq = first_cp = last_cp = head_hash = None
    h: Any = None
    typ: Any = None
    cp_hash: str | None = None  # the unit's latest checkpoint, once it has one
    since = cps = 0
    for i, rec in enumerate(recs):
        seq, prev, hh, status, typ, cp, kid, _ = rec
        if status != "ok" or type(seq) is not int:
            return _Unit(n, recs[0], recs)
        if i:
            if seq != prev_seq + 1 or prev != h:  # type: ignore[operator]
                return _Unit(n, recs[0], recs)
            if seq == head_seq:
                head_hash = hh
        if cp is not None:
            if i:
                if not _checkpoint_holds(cp, seq, h, cp_hash, since):
                    return _Unit(n, recs[0], recs)
                if cp_hash is None and cp.get("reason") != "recovery":
                    first_cp = (i, cp)
                cps += 1
                last_cp = (i, hh, bool(cp.get("final")))
            cp_hash, since = hh, 0
        else:
            since += 1
        kids.add(kid)
        prev_seq, h = seq, hh
    leaves = b"".join(r[7] for r in recs[1:])
    return _Unit(n, recs[0], None, seq, h, typ, first_cp, cps, last_cp, frozenset(kids), head_hash, leaves)  # type: ignore[arg-type]


def _checkpoint_holds(cp: Any, seq: int, prev: str, cp_hash: str | None, since: int) -> bool:
    """What a worker can check of a checkpoint after its unit's first line (see ``_Chain._checkpoint``);
    with no checkpoint before it in the unit, count and prev_checkpoint are left to the parent."""
    if type(cp) is not dict or cp.get("seq") != seq - 1 or cp.get("head") != prev:
        return False
    rec = cp.get("recovery") or {}
    if type(rec) is not dict or rec.get("head_seq_missing") or rec.get("checkpoints_missing"):
        return False
    return (
        cp_hash is None
        or cp.get("reason") == "recovery"
        or (cp.get("prev_checkpoint", "") == cp_hash and cp.get("count") == since)
    )


def _chunks(path: Path, size: int) -> tuple[list[tuple[str, int, int]], int]:
    """Newline-aligned byte ranges covering the complete lines; returns them and the torn tail length."""
    n = path.stat().st_size
    out, start = [], 0
    with open(path, "rb") as f:
        while start < n:
            stop = min(start + size, n)
            if stop < n:
                f.seek(stop)
                rest = f.read(1 << 20)
                nl = rest.find(b"\n")
                stop = n if nl < 0 else stop + nl + 1
            if stop == n:
                f.seek(max(start, n - 1))
                if f.read(1) != b"\n":
                    f.seek(start)
                    last_nl = f.read(n - start).rfind(b"\n")
                    stop = start + last_nl + 1
                    if stop > start:
                        out.append((str(path), start, stop))
                    return out, n - stop
            out.append((str(path), start, stop))
            start = stop
    return out, 0
