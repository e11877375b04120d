"""C2SP signed-note (https://c2sp.org/signed-note) with Ed25519, and the tlog-checkpoint body.

A signed note is its text (UTF-8, ending in "\\n"), one empty line, then one line per signature:

    — <key name> <base64(key hash (4 bytes, big-endian) || signature)>

The Ed25519 key hash is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || 32-byte public key); the
signature is Ed25519 over the text bytes. A verifier key is written ``<name>+<8 hex key hash>+<base64(0x01 ||
public key)>``, a signer key ``PRIVATE+KEY+<name>+<8 hex key hash>+<base64(0x01 || 32-byte seed)>``.

A checkpoint (https://c2sp.org/tlog-checkpoint) is a note whose text is the origin line, the tree size in
decimal, the standard base64 of the root hash, then optional extension lines.
All cryptography is ``cryptography``'s Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100
_NAME_BAD = re.compile(r"[\s+]")
_B64 = re.compile(r"^[A-Za-z0-9+/]+=*$")


class NoteError(ValueError):
    """A malformed note, key or checkpoint, or one no trusted key signed."""


def check_name(name: str) -> str:
    if not name or _NAME_BAD.search(name) or not name.isprintable():
        raise NoteError(f"bad key name {name!r}: non-empty, no spaces and no '+'")
    return name


def key_hash(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _b64decode(text: str) -> bytes:
    if not _B64.match(text):
        raise NoteError("not standard base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(f"not standard base64: {e}") from None


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    name: str
    hash: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def for_key(cls, name: str, key: Ed25519PublicKey) -> Verifier:
        return cls(check_name(name), key_hash(name, raw_public(key)), key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """``<name>+<hex hash>+<base64(0x01 || key)>``; the hash must match the key."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise NoteError("a verifier key reads <name>+<8 hex digits>+<base64 key>")
        name, hexhash, b64 = parts
        check_name(name)
        raw = _b64decode(b64)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
        if key_hash(name, raw[1:]) != bytes.fromhex(hexhash):
            raise NoteError("verifier key hash does not match its name and key")
        return cls(name, bytes.fromhex(hexhash), Ed25519PublicKey.from_public_bytes(raw[1:]))

    def __str__(self) -> str:
        raw = bytes([ALG_ED25519]) + raw_public(self.public_key)
        return f"{self.name}+{self.hash.hex()}+{base64.b64encode(raw).decode()}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def parse(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key reads PRIVATE+KEY+<name>+<hex hash>+<base64 seed>")
        name, hexhash, b64 = parts[2], parts[3], parts[4]
        raw = _b64decode(b64)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("only Ed25519 signer keys are supported")
        signer = cls(check_name(name), Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier().hash.hex() != hexhash:
            raise NoteError("signer key hash does not match its name and key")
        return signer

    def verifier(self) -> Verifier:
        return Verifier.for_key(self.name, self.private_key.public_key())

    def signature_line(self, text: bytes) -> str:
        blob = self.verifier().hash + self.private_key.sign(text)
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Signature:
    name: str
    hash: bytes
    sig: bytes

    def line(self) -> str:
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.hash + self.sig).decode()}\n"


@dataclass
class Note:
    text: str
    signatures: list[Signature] = field(default_factory=list)

    def encode(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    if any((ord(c) < 0x20 and c != "\n") or c == "\x7f" for c in text):
        raise NoteError("note text holds control characters")


def sign(text: str, signers: Iterable[Signer]) -> str:
    _check_text(text)
    data = text.encode()
    lines = [s.signature_line(data) for s in signers]
    if not lines:
        raise NoteError("a note needs at least one signature")
    return text + "\n" + "".join(lines)


def parse(note: str | bytes) -> Note:
    """Split a signed note into text and signatures (nothing verified yet)."""
    if isinstance(note, bytes):
        try:
            note = note.decode()
        except UnicodeDecodeError:
            raise NoteError("note is not UTF-8") from None
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("malformed note: no signature block")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    sigs: list[Signature] = []
    for line in block.split("\n")[:-1]:
        if not line.startswith(SIG_PREFIX):
            raise NoteError("malformed signature line")
        rest = line[len(SIG_PREFIX) :]
        name, sp, b64 = rest.partition(" ")
        if not sp or " " in b64:
            raise NoteError("malformed signature line")
        check_name(name)
        blob = _b64decode(b64)
        if len(blob) < 5:
            raise NoteError("signature too short")
        sigs.append(Signature(name, blob[:4], blob[4:]))
    if not sigs:
        raise NoteError("note has no signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    return Note(text, sigs)


def add_signatures(note: str, signers: Iterable[Signer]) -> str:
    """Append signatures (e.g. cosignatures) to an existing signed note; existing ones are kept as they are."""
    n = parse(note)
    data = n.text.encode()
    have = {(s.name, s.hash) for s in n.signatures}
    extra = "".join(s.signature_line(data) for s in signers if (s.name, s.verifier().hash) not in have)
    return note + extra


def open_note(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse and verify: returns the note and the verifiers whose signatures hold. Raises NoteError when no
    known key signed it or a known key's signature does not verify (a forged line is never ignored)."""
    n = parse(note)
    data = n.text.encode()
    by_id = {(v.name, v.hash): v for v in verifiers}
    good: list[Verifier] = []
    for s in n.signatures:
        v = by_id.get((s.name, s.hash))
        if v is None:
            continue
        if not v.verify(data, s.sig):
            raise NoteError(f"signature by {s.name} does not verify")
        if v not in good:
            good.append(v)
    if not good:
        raise NoteError("no signature by a known key")
    return n, good


def verifiers_for_keys(note: Note, keys: Iterable[Ed25519PublicKey]) -> list[Verifier]:
    """Verifiers for plain public keys (PEM files): one per signature name on the note whose hash matches."""
    out: list[Verifier] = []
    keys = list(keys)
    for s in note.signatures:
        for k in keys:
            try:
                v = Verifier.for_key(s.name, k)
            except NoteError:
                continue
            if v.hash == s.hash and v not in out:
                out.append(v)
    return out


# ------------------------------------------------------------------------------------------------ checkpoints
@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        ext = "".join(e + "\n" for e in self.extensions)
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n{ext}"

    def sign(self, signers: Iterable[Signer]) -> str:
        return sign(self.body(), signers)


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note's text (verify the note first)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash line")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not origin or not origin.isprintable():
        raise NoteError("bad checkpoint origin")
    if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size_s) or int(size_s) >= 2**64:
        raise NoteError("bad checkpoint tree size")
    root = _b64decode(root_s)
    if len(root) != 32:
        raise NoteError("checkpoint root hash is not 32 bytes")
    ext = tuple(lines[3:-1])
    if any(not e for e in ext):
        raise NoteError("empty checkpoint extension line")
    return Checkpoint(origin, int(size_s), root, ext)


def open_checkpoint(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[Checkpoint, Note, list[Verifier]]:
    n, good = open_note(note, verifiers)
    return parse_checkpoint(n.text), n, good


def open_checkpoint_with_keys(
    note: str | bytes, keys: Iterable[Ed25519PublicKey], origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a checkpoint against plain public keys; the signing key's name must be the origin (the log's
    own signature, not only a cosignature) unless ``origin`` is None and any matching key is accepted."""
    n = parse(note)
    cp = parse_checkpoint(n.text)
    want = origin if origin is not None else cp.origin
    verifiers = [v for v in verifiers_for_keys(n, keys) if v.name == want]
    if cp.origin != want:
        raise NoteError(f"checkpoint is for {cp.origin!r}, not {want!r}")
    _, _good = open_note(note, verifiers)
    return cp, n
