"""Witness cosignatures on checkpoints (C2SP tlog-cosignature v1, Ed25519), on top of guard.audit.note.

A cosignature is a signed-note signature line (type 0x04)::

    — <witness name> base64(key id || timestamp (u64 big-endian) || Ed25519 signature)
    key id  = SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]
    message = "cosignature/v1\\ntime <timestamp>\\n" || the checkpoint's note text

A witness key is written as a C2SP verifier key (vkey): ``<name>+<key id, 8 hex digits>+base64(0x04 || pk)``.
All signing and checking is ``cryptography``'s Ed25519.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard.audit import note as notes
from guard.audit.note import NoteError, Signature, check_name, key_hash, raw_public

SIG_COSIGNATURE_V1 = 0x04
DASH = "\u2014"

__all__ = [
    "DASH",
    "SIG_COSIGNATURE_V1",
    "NoteError",
    "Signature",
    "WitnessKey",
    "check_cosignature",
    "cosign",
    "cosigned_message",
    "cosigners",
    "parse_signature_line",
    "witness_vkey",
]


@dataclass(frozen=True)
class WitnessKey:
    """A witness's verifier key: name and raw 32-byte Ed25519 public key (cosignature/v1)."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_hash(self.name, self.public, SIG_COSIGNATURE_V1)

    @property
    def vkey(self) -> str:
        blob = bytes([SIG_COSIGNATURE_V1]) + self.public
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(blob).decode()}"

    @classmethod
    def parse(cls, vkey: str) -> WitnessKey:
        """``<name>+<8 hex digits>+base64(0x04 || key)`` whose key id matches."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise NoteError("a witness key reads <name>+<8 hex digits>+<base64 key>")
        name = check_name(parts[0])
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise NoteError("witness key: not base64") from None
        if len(blob) != 33 or blob[0] != SIG_COSIGNATURE_V1:
            raise NoteError("a witness key is a cosignature/v1 key (type 0x04, 32-byte Ed25519)")
        k = cls(name, blob[1:])
        if k.key_id.hex() != parts[1]:
            raise NoteError("witness key: the key id does not match its name and key")
        return k


def parse_signature_line(line: str) -> Signature:
    """One ``— name base64`` line (with or without its newline), as guard.audit.note parses it."""
    line = line.rstrip("\n")
    return notes.parse("x\n\n" + line + "\n").signatures[0]


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text


def cosign(text: bytes, name: str, private: Ed25519PrivateKey, timestamp: int) -> str:
    """A cosignature/v1 line over the checkpoint note ``text`` at ``timestamp`` (POSIX seconds)."""
    if not 0 <= timestamp < 2**63:
        raise ValueError("timestamp out of range")
    pk = raw_public(private.public_key())
    sig = struct.pack(">Q", timestamp) + private.sign(cosigned_message(text, timestamp))
    return Signature(name, key_hash(name, pk, SIG_COSIGNATURE_V1), sig).line()


def check_cosignature(text: bytes, sig: Signature, key: WitnessKey) -> int | None:
    """The cosignature's timestamp when ``sig`` is ``key``'s valid cosignature/v1 over ``text``, else None."""
    if sig.name != key.name or sig.hash != key.key_id or len(sig.sig) != 72:
        return None
    (ts,) = struct.unpack(">Q", sig.sig[:8])
    if ts >= 2**63:
        return None
    try:
        Ed25519PublicKey.from_public_bytes(key.public).verify(sig.sig[8:], cosigned_message(text, ts))
    except (InvalidSignature, ValueError):
        return None
    return ts


def cosigners(note: str | bytes, keys: list[WitnessKey]) -> dict[str, int]:
    """Witness name -> cosignature timestamp, for each of ``keys`` with a valid cosignature on ``note``.
    Lines of unknown keys are ignored; a known key's invalid line does not count. NoteError: malformed."""
    n = notes.parse(note)
    text = n.text.encode()
    out: dict[str, int] = {}
    for k in keys:
        for s in n.signatures:
            ts = check_cosignature(text, s, k)
            if ts is not None:
                out[k.name] = ts
                break
    return out


def witness_vkey(name: str, private: Ed25519PrivateKey) -> str:
    return WitnessKey(check_name(name), raw_public(private.public_key())).vkey
