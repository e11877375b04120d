"""C2SP signed-note and tlog-checkpoint against the reference example of golang.org/x/mod/sumdb/note (the
PeterNeumann key and note), and the ways a note can be forged or mangled."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import note as N

VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
SIGNED = (
    TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_reference_note_signs_byte_for_byte_and_verifies():
    signer = N.Signer.parse(SKEY)
    assert str(signer.verifier()) == VKEY
    assert N.sign(TEXT, [signer]) == SIGNED  # Ed25519 is deterministic
    v = N.Verifier.parse(VKEY)
    n, good = N.open_note(SIGNED, [v])
    assert n.text == TEXT and good == [v]


def test_forged_or_mangled_notes_are_refused():
    v = N.Verifier.parse(VKEY)
    for bad in (
        SIGNED.replace("cryptography", "cryptographY"),
        SIGNED.replace("x08go", "x08gp"),
        SIGNED.replace("\n\n", "\n"),
        SIGNED[:-1],
        TEXT,
    ):
        with pytest.raises(N.NoteError):
            N.open_note(bad, [v])
    other = N.Verifier.for_key("PeterNeumann", Ed25519PrivateKey.generate().public_key())
    with pytest.raises(N.NoteError, match="no signature by a known key"):
        N.open_note(SIGNED, [other])
    # a line that claims a known key but carries another signature is an error, not ignored
    forged = SIGNED.replace("x08go/ZJ", base64.b64encode(bytes.fromhex("c74f20a3") + b"\0" * 3).decode()[:8])
    with pytest.raises(N.NoteError):
        N.open_note(forged, [v])


def test_verifier_key_manglings_are_refused():
    N.Verifier.parse(VKEY)
    for bad in (
        VKEY.replace("c74f20a3", "c74f20a4"),
        VKEY.replace("Peter", "Petr"),
        VKEY[:-2],
        "x+y",
        VKEY.replace("+ARpc", "+AhRpc"),
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(N.NoteError):
            N.Verifier.parse(bad)


def test_cosignatures_are_appended_and_unknown_ones_ignored():
    log = N.Signer("example.com/log", Ed25519PrivateKey.generate())
    witness = N.Signer("witness.example", Ed25519PrivateKey.generate())
    cp = N.Checkpoint("example.com/log", 42, b"\x07" * 32, ("extra line",))
    signed = cp.sign([log])
    both = N.add_signatures(signed, [witness])
    assert both.startswith(signed) and both.count("\u2014 ") == 2
    got, _n, good = N.open_checkpoint(both, [log.verifier()])
    assert got == cp and good == [log.verifier()]
    _, _, good = N.open_checkpoint(both, [log.verifier(), witness.verifier()])
    assert len(good) == 2
    # plain public keys: only the log's own signature (name = origin) counts
    c2, _ = N.open_checkpoint_with_keys(both, [log.private_key.public_key()])
    assert c2 == cp
    with pytest.raises(N.NoteError):
        N.open_checkpoint_with_keys(both, [witness.private_key.public_key()])


def test_checkpoint_body_is_the_c2sp_form():
    cp = N.Checkpoint(
        "example.com/behind-the-sofa", 20852163, base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    )
    assert cp.body() == "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert N.parse_checkpoint(cp.body()) == cp
    r = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    for bad in (f"o\n-1\n{r}\n", f"o\n01\n{r}\n", "o\n1\nAAAA\n", "o\n1\n", f"o\n1\n{r}\n\n"):
        with pytest.raises(N.NoteError):
            N.parse_checkpoint(bad)
