"""Signed notes and witness cosignatures (C2SP signed-note, tlog-checkpoint, tlog-cosignature v1, Ed25519).

A checkpoint is a signed note: its text (origin, tree size, base64 root hash, optional extension lines, each
ending in a newline), a blank line, then signature lines ``— <key name> base64(key id || signature)``.

- Log signature (type 0x01): Ed25519 over the note text; key id = SHA-256(name || 0x0A || 0x01 || pk)[:4].
- Cosignature (type 0x04): ``timestamp (u64 big-endian) || Ed25519 signature`` over
  ``"cosignature/v1\\ntime <timestamp>\\n" || note text``; key id = SHA-256(name || 0x0A || 0x04 || pk)[:4].

Keys are written as C2SP verifier keys (vkeys): ``<name>+<key id, 8 hex digits>+base64(type || pk)``. Only the
functions here parse notes; all signing and checking is ``cryptography``'s Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
DASH = "\u2014"
MAX_SIGNATURES = 64  # signed-note: verifiers must accept at least 16
MAX_NOTE = 64 * 1024
_NAME = re.compile(r"^[^\s+]+$")


class NoteError(ValueError):
    """Not a well-formed signed note, checkpoint or key."""


@dataclass(frozen=True)
class NoteKey:
    """A verifier key: name, signature type, raw 32-byte Ed25519 public key."""

    name: str
    type: int
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.type, self.public)

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([self.type]) + self.public).decode()}"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    sig: bytes

    def line(self) -> str:
        return f"{DASH} {self.name} {base64.b64encode(self.key_id + self.sig).decode()}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    text: bytes  # the note text the signatures cover (with its final newline)


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_vkey(text: str) -> NoteKey:
    """``name+hash+base64(type||key)`` with a matching key id, Ed25519 (0x01) or cosignature/v1 (0x04)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not parts[0] or not _NAME.match(parts[0]):
        raise NoteError("a vkey is <name>+<8 hex digits>+<base64 key>")
    name, hid, b64 = parts
    try:
        blob = base64.b64decode(b64, validate=True)
        want = bytes.fromhex(hid)
    except (binascii.Error, ValueError):
        raise NoteError("vkey: bad hex or base64") from None
    if len(blob) != 33 or blob[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
        raise NoteError("vkey: only Ed25519 (type 1) and cosignature/v1 (type 4) keys are supported")
    k = NoteKey(name, blob[0], blob[1:])
    if len(want) != 4 or k.key_id != want:
        raise NoteError("vkey: key id does not match the key")
    return k


def split_note(note: bytes) -> tuple[bytes, list[Signature]]:
    """The note text and its signature lines (structure only; nothing is verified here)."""
    if len(note) > MAX_NOTE:
        raise NoteError("note too large")
    try:
        s = note.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not UTF-8") from None
    if any(c < " " and c != "\n" for c in s) or "\x7f" in s:
        raise NoteError("note has control characters")
    if not s.endswith("\n"):
        raise NoteError("note does not end with a newline")
    cut = s.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no signatures")
    text, sigs = s[: cut + 1], s[cut + 2 :]
    out = []
    for line in sigs.splitlines():
        out.append(parse_signature_line(line))
    if not out or len(out) > MAX_SIGNATURES:
        raise NoteError("note must have 1 to 64 signature lines")
    return text.encode(), out


def parse_signature_line(line: str) -> Signature:
    m = re.fullmatch(DASH + r" ([^\s+]+) ([A-Za-z0-9+/=]+)\n?", line)
    if not m:
        raise NoteError("malformed signature line")
    try:
        blob = base64.b64decode(m.group(2), validate=True)
    except binascii.Error:
        raise NoteError("signature is not base64") from None
    if len(blob) < 5:
        raise NoteError("signature too short")
    return Signature(m.group(1), blob[:4], blob[4:])


def parse_checkpoint(text: bytes) -> Checkpoint:
    """tlog-checkpoint body: origin, decimal size (no leading zeros), base64 32-byte root, extension lines."""
    lines = text.decode("utf-8").split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0]:
        raise NoteError("a checkpoint has an origin, a size and a root hash line")
    if not re.fullmatch(r"0|[1-9][0-9]{0,19}", lines[1]) or int(lines[1]) >= 2**64:
        raise NoteError("bad tree size")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        raise NoteError("bad root hash") from None
    if len(root) != 32:
        raise NoteError("root hash must be 32 bytes")
    if any(not ln for ln in lines[3:-1]):
        raise NoteError("empty extension line")
    return Checkpoint(lines[0], int(lines[1]), root, text)


def sign_note(text: bytes, name: str, private: Ed25519PrivateKey) -> str:
    """A log's Ed25519 (type 0x01) signature line over ``text``."""
    pk = raw(private.public_key())
    return Signature(name, key_id(name, SIG_ED25519, pk), private.sign(text)).line()


def verify_note(text: bytes, sigs: list[Signature], keys: list[NoteKey]) -> list[NoteKey]:
    """Keys of type 0x01 among ``keys`` whose signature over ``text`` verifies. A signature that names a known
    key (name and id) and does not verify raises NoteError (signed-note: reject the whole note)."""
    good = []
    for k in keys:
        if k.type != SIG_ED25519:
            continue
        for s in sigs:
            if s.name == k.name and s.key_id == k.key_id:
                try:
                    Ed25519PublicKey.from_public_bytes(k.public).verify(s.sig, text)
                except (InvalidSignature, ValueError):
                    raise NoteError(f"bad signature by {k.name}") from None
                good.append(k)
                break
    return good


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text


def cosign(text: bytes, name: str, private: Ed25519PrivateKey, timestamp: int) -> str:
    """A cosignature/v1 line over the checkpoint note ``text`` at ``timestamp`` (POSIX seconds)."""
    if not 0 <= timestamp < 2**63:
        raise ValueError("timestamp out of range")
    pk = raw(private.public_key())
    sig = struct.pack(">Q", timestamp) + private.sign(cosigned_message(text, timestamp))
    return Signature(name, key_id(name, SIG_COSIGNATURE_V1, pk), sig).line()


def check_cosignature(text: bytes, sig: Signature, key: NoteKey) -> int | None:
    """The cosignature's timestamp when ``sig`` is ``key``'s valid cosignature/v1 over ``text``, else None."""
    if key.type != SIG_COSIGNATURE_V1 or sig.name != key.name or sig.key_id != key.key_id or len(sig.sig) != 72:
        return None
    (ts,) = struct.unpack(">Q", sig.sig[:8])
    if ts >= 2**63:
        return None
    try:
        Ed25519PublicKey.from_public_bytes(key.public).verify(sig.sig[8:], cosigned_message(text, ts))
    except (InvalidSignature, ValueError):
        return None
    return ts


def cosigners(note: bytes, keys: list[NoteKey]) -> dict[str, int]:
    """Witness name -> cosignature timestamp, for each of ``keys`` with a valid cosignature on ``note``.
    Signature lines of unknown keys are ignored; a known key's invalid line simply does not count."""
    text, sigs = split_note(note)
    out: dict[str, int] = {}
    for k in keys:
        for s in sigs:
            ts = check_cosignature(text, s, k)
            if ts is not None:
                out[k.name] = ts
                break
    return out


def witness_vkey(name: str, private: Ed25519PrivateKey) -> str:
    return NoteKey(name, SIG_COSIGNATURE_V1, raw(private.public_key())).vkey


def log_vkey(name: str, public: Ed25519PublicKey) -> str:
    return NoteKey(name, SIG_ED25519, raw(public)).vkey
