"""Integrity of audit events: RFC 8785 canonical form, the chained SHA-256 hash, Merkle leaves, keys, signatures.

Definition (audit/INTEGRITY.md says the same for people who verify with other tools):

    body  = the event object without its "hash" and "sig" members
            (it keeps "chain", "seq", "prev" and "key_id", so those are covered too)
    hash  = lower-case hex SHA-256 of the RFC 8785 (JCS) UTF-8 serialisation of body
    leaf  = SHA-256(0x00 || canonical body): the event's RFC 6962 Merkle leaf hash (index seq - 1)
    sig   = (the earlier format only) base64 Ed25519 signature over the 32 raw bytes of hash
    key_id = first 16 hex digits of SHA-256 over the raw 32-byte Ed25519 public key
    prev  = hash of the previous event of the same chain; 64 zeros for seq 1
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard.audit.merkle import leaf_hash
from guard.keyfiles import write_private

try:  # the same answer as _numbers below, in a tenth of the time (guard/audit/_canon.c)
    from guard.audit._canon import numbers as _numbers_c
except ImportError:
    _numbers_c = None

GENESIS = "0" * 64
INTEGRITY_FIELDS = ("chain", "seq", "prev", "hash", "sig", "key_id")
_MAX_SAFE = 2**53
_SORTED = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)  # those raise: the standard encoder's rules apply to them


def _scan(o: Any) -> int:
    """2: Python's sorted compact JSON equals RFC 8785 for ``o``; 1: it does once integral floats are ints;
    0: neither (floats outside [1e-4, 1e16), integers beyond 2**53, non-ASCII keys: JCS sorts by UTF-16
    units), so the reference encoder runs. Iterative: this runs for every event sealed.
    """
    r = 2
    stack = [o]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is dict:
            for k, x in v.items():
                if type(k) is not str or not k.isascii():
                    return 0
                tx = type(x)
                if tx is not str and tx is not bool:
                    push(x)
        elif t is list or t is tuple:
            stack.extend(v)
        elif t is int:
            if not -_MAX_SAFE < v < _MAX_SAFE:
                return 0
        elif t is float:
            if v.is_integer():
                if abs(v) >= _MAX_SAFE:
                    return 0
                r = 1
            elif not 1e-4 <= abs(v) < 1e16:
                return 0
        else:
            return 0
    return r


def dumps_sorted(obj: Any) -> bytes:
    """Sorted compact JSON: RFC 8785 exactly when ``_scan(obj) == 2`` (verify tries it first)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _numbers(o: Any) -> int:
    """Like ``_scan`` for numbers only (keys are checked by the ASCII test of the output)."""
    r = 2
    stack = [o]
    pop, extend = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            extend(v.values())
        elif t is list or t is tuple:
            extend(v)
        elif t is int:
            if not -_MAX_SAFE < v < _MAX_SAFE:
                return 0
        elif t is float:
            if v.is_integer():
                if abs(v) >= _MAX_SAFE:
                    return 0
                r = 1
            elif not 1e-4 <= abs(v) < 1e16:
                return 0
    return r


def canonical(obj: Any) -> bytes:
    """RFC 8785 serialisation of ``obj``.

    Fast path: orjson's sorted compact output, when it provably equals JCS: every number is one both write
    alike (floats in [1e-4, 1e16): shortest round-trip digits, positional, checked against the reference
    encoder in tests/audit; integral floats become ints first: JCS writes 1.0 as 1) and the text is ASCII, so
    key order by code points equals JCS's order by UTF-16 units. Anything else takes the reference encoder.
    """
    r = (_numbers_c or _numbers)(obj)
    if r:
        if r == 1:
            obj = normalize_floats(obj)
        try:
            b = orjson.dumps(obj, option=_SORTED)  # 2x the C json encoder; same bytes in the range _numbers admits
        except TypeError:  # non-str keys, lone surrogates, subclasses, other types: as the standard encoder does
            try:
                s = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            except (ValueError, TypeError):
                return rfc8785.dumps(obj)  # raises for what JCS cannot represent
            b = s.encode()  # raises for lone surrogates: the journal then makes the event plain
        if b.isascii() or _scan(obj):
            return b
    return rfc8785.dumps(obj)


def body_of(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "hash" and k != "sig"}


def event_hash(event: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(body_of(event))).hexdigest()


def key_id_of(public: Ed25519PublicKey | bytes) -> str:
    return hashlib.sha256(raw_public(public)).hexdigest()[:16]


def normalize_floats(obj: Any) -> Any:
    """Integral floats become ints so stored lines read the way their canonical form hashes."""
    t = type(obj)
    if t is float:
        return int(obj) if obj.is_integer() and abs(obj) < _MAX_SAFE else obj
    if t is dict:
        return {k: normalize_floats(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [normalize_floats(v) for v in obj]
    return obj


class Signer:
    """Seals events with one Ed25519 key. Never exposes or logs the private key bytes.

    Events are hashed and linked (``seal_event``), not signed: the journal signs checkpoints of the chain's
    Merkle tree instead (guard.audit.logtree). ``seal_line`` writes the signed line of the earlier format
    (records such as the prune record are still signed this way, and tests build such journals with it).
    """

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    def seal_event(self, event: dict[str, Any], chain: str, seq: int, prev: str) -> tuple[bytes, str, bytes]:
        """Add the integrity members to ``event`` (in place); return (journal line, hash, Merkle leaf hash).

        The line is the canonical body with ``"hash"`` appended, so it is serialised only once; the leaf hash
        is SHA-256(0x00 || body) (RFC 6962).
        """
        event.pop("hash", None)  # re-sealing a sealed dict: old integrity members are not part of the body
        event.pop("sig", None)
        event["chain"], event["seq"], event["prev"], event["key_id"] = chain, seq, prev, self.key_id
        body = canonical(event)
        h = hashlib.sha256(body).hexdigest()
        event["hash"] = h
        return body[:-1] + b',"hash":"' + h.encode() + b'"}\n', h, leaf_hash(body)

    def seal_line(self, event: dict[str, Any], chain: str, seq: int, prev: str) -> tuple[bytes, str]:
        """``seal_event`` plus an Ed25519 signature over the hash (``sig``): a signed record's line."""
        event.pop("hash", None)
        event.pop("sig", None)
        event["chain"], event["seq"], event["prev"], event["key_id"] = chain, seq, prev, self.key_id
        body = canonical(event)
        digest = hashlib.sha256(body).digest()
        h = digest.hex()
        sig = self.sign(digest)
        event["hash"], event["sig"] = h, sig
        line = body[:-1] + b',"hash":"' + h.encode() + b'","sig":"' + sig.encode() + b'"}\n'
        return line, h

    def sign(self, digest: bytes) -> str:
        """Base64 Ed25519 signature over ``digest`` (manifests, prune records)."""
        return base64.b64encode(self.private.sign(digest)).decode()

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public(public: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public, bytes):
        return public
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _public_key(public: Ed25519PublicKey | bytes) -> Ed25519PublicKey | None:
    if isinstance(public, Ed25519PublicKey):
        return public
    try:
        return Ed25519PublicKey.from_public_bytes(public)
    except ValueError:
        return None


def check_signature(public: Ed25519PublicKey | bytes, hash_hex: str, sig_b64: str) -> bool:
    """Ed25519 verification (``cryptography``, OpenSSL) of ``sig_b64`` over the raw bytes of ``hash_hex``:
    the signatures of records and of events in the earlier, per-event signed format."""
    try:
        sig = base64.b64decode(sig_b64, validate=True)
        msg = bytes.fromhex(hash_hex)
    except (ValueError, TypeError):
        return False
    key = _public_key(public)
    if key is None or len(sig) != 64:
        return False
    try:
        key.verify(sig, msg)
    except InvalidSignature:
        return False
    return True


def check_signatures(items: Iterable[tuple[Ed25519PublicKey | bytes, str, str]]) -> list[bool]:
    """``check_signature`` for each item, one at a time."""
    return [check_signature(*it) for it in items]


def record_problem(rec: dict[str, Any], keys: dict[str, Any]) -> str | None:
    """Why a signed record (head, prune record, export manifest: ``hash`` over the JCS form of the rest,
    ``sig`` over ``hash``, ``key_id``) does not verify with ``keys``: ``unknown_key``, ``hash_mismatch`` or
    ``bad_signature``; None when it does."""
    key = keys.get(rec.get("key_id", ""))
    if key is None:
        return "unknown_key"
    try:
        h = hashlib.sha256(canonical(body_of(rec))).hexdigest()
    except (TypeError, ValueError, UnicodeError):
        return "hash_mismatch"
    if h != rec.get("hash"):
        return "hash_mismatch"
    if not check_signature(key, h, str(rec.get("sig", ""))):
        return "bad_signature"
    return None


def load_public_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key_id from PEM files or folders of them (*.pem, *.pub). Private keys are refused."""
    keys: dict[str, Ed25519PublicKey] = {}
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(x for x in p.iterdir() if x.suffix in (".pem", ".pub") and x.is_file())
        else:
            files.append(p)
    for f in files:
        data = f.read_bytes()
        if b"PRIVATE KEY" in data:
            continue  # a folder from keygen holds the private key too; only public keys are evidence
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{f}: not an Ed25519 public key")
        keys[key_id_of(key)] = key
    return keys


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``data``, atomically; FileExistsError when it already exists."""
    write_private(path, data)


def keygen(out: Path) -> tuple[Path, Path, str]:
    """Write ``signing-key.pem`` (0600) and ``<key_id>.pub.pem`` into ``out``; return both paths and key_id."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    signer = Signer(key)
    priv = out / "signing-key.pem"
    if priv.exists():
        priv = out / f"signing-key-{signer.key_id}.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(priv, pem)
    pub = out / f"{signer.key_id}.pub.pem"
    pub.write_bytes(signer.public_pem())
    return priv, pub, signer.key_id


def load_or_create_signer(key_path: Path | None, audit_dir: Path) -> Signer:
    """The configured key, or one kept in ``<audit.dir>/keys`` (created on first start)."""
    if key_path is not None:
        return Signer.from_file(key_path)
    keys = Path(audit_dir) / "keys"
    own = keys / "signing-key.pem"
    if not own.exists():
        keys.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another worker created it first
            keygen(keys)
    return Signer.from_file(own)
