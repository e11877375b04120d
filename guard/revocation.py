"""Revocation as open connections see it. ``tls.crl`` is one PEM file holding any number of CRLs (the root
CA's and each intermediate CA's). OpenSSL checks them for every certificate of the chain at the handshake
(``VERIFY_CRL_CHECK_CHAIN``); after a reload, a request on a connection verified before it is checked here
against the CRLs now loaded, with the same rule: every certificate of the chain below the trust anchor needs
its issuer's CRL, and must not be on it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from guard.compat.ssl_chain import unverified_chain, verified_chain


class TLSFileError(ValueError):
    """A TLS file that cannot be used: which file and why (reload keeps the old material)."""

    def __init__(self, path: Path | str, reason: str, line: int | None = None) -> None:
        super().__init__(f"{path}{f':{line}' if line else ''}: {reason}")
        self.path, self.reason, self.line = str(path), reason, line


def _pem_blocks(path: Path, kind: str) -> list[tuple[int, bytes]]:
    """(line of its BEGIN, PEM block) for every ``kind`` block of the file."""
    try:
        text = path.read_bytes()
    except OSError as e:
        raise TLSFileError(path, e.strerror or str(e)) from None
    begin, end = f"-----BEGIN {kind}-----".encode(), f"-----END {kind}-----".encode()
    out: list[tuple[int, bytes]] = []
    pos = 0
    while (i := text.find(begin, pos)) >= 0:
        j = text.find(end, i)
        if j < 0:
            raise TLSFileError(path, f"{kind} block without its END line", text.count(b"\n", 0, i) + 1)
        out.append((text.count(b"\n", 0, i) + 1, text[i : j + len(end)]))
        pos = j + len(end)
    return out


def load_cas(path: Path) -> list[x509.Certificate]:
    """The CA certificates of ``tls.client_ca`` (at least one)."""
    out = []
    for line, pem in _pem_blocks(path, "CERTIFICATE"):
        try:
            out.append(x509.load_pem_x509_certificate(pem))
        except ValueError as e:
            raise TLSFileError(path, f"unreadable certificate: {e}", line) from None
    if not out:
        raise TLSFileError(path, "no PEM certificate in the file")
    return out


def load_crls(
    path: Path,
    cas: list[x509.Certificate],
    now: dt.datetime | None = None,
) -> dict[bytes, x509.CertificateRevocationList]:
    """Every CRL of the file by issuer, each checked: readable, signed by its issuer when that CA is in the
    client CA bundle (an intermediate CA that clients send themselves cannot be checked here; OpenSSL checks
    it at each handshake), and not past its nextUpdate (OpenSSL would then refuse every client)."""
    now = now or dt.datetime.now(dt.UTC)
    by_subject: dict[bytes, list[x509.Certificate]] = {}
    for ca in cas:
        by_subject.setdefault(ca.subject.public_bytes(), []).append(ca)
    out: dict[bytes, x509.CertificateRevocationList] = {}
    blocks = _pem_blocks(path, "X509 CRL")
    if not blocks:
        raise TLSFileError(path, "no PEM CRL (BEGIN X509 CRL) in the file")
    for line, pem in blocks:
        try:
            crl = x509.load_pem_x509_crl(pem)
        except ValueError as e:
            raise TLSFileError(path, f"unreadable CRL: {e}", line) from None
        issuer = crl.issuer.public_bytes()
        signers = by_subject.get(issuer, [])
        if signers and not any(_signed_by(crl, ca) for ca in signers):
            raise TLSFileError(path, f"CRL of {crl.issuer.rfc4514_string()} is not signed by that CA", line)
        nu = crl.next_update_utc
        if nu is not None and nu < now:
            raise TLSFileError(path, f"CRL of {crl.issuer.rfc4514_string()} expired at {nu:%Y-%m-%dT%H:%M:%SZ}", line)
        if issuer in out:
            raise TLSFileError(path, f"two CRLs of {crl.issuer.rfc4514_string()}", line)
        out[issuer] = crl
    return out


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


@lru_cache(maxsize=4096)
def _cert(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


class Intermediates:
    """CA certificates by subject, to complete a chain of which only the leaf is known: a resumed TLS session
    keeps no chain, so the intermediate CAs that its full handshake verified are learned then (bounded)."""

    def __init__(self, limit: int = 1024) -> None:
        self.by_subject: dict[bytes, list[bytes]] = {}
        self.limit = limit
        self._seen: set[bytes] = set()

    def add(self, der: bytes) -> None:
        if der in self._seen or len(self._seen) >= self.limit:
            return
        self._seen.add(der)
        self.by_subject.setdefault(_cert(der).subject.public_bytes(), []).append(der)

    def learn(self, sslobj: object) -> None:
        """The CA certificates between leaf and trust anchor of a connection's verified chain (none when the
        leaf's issuer is the trust anchor, the common case: then nothing is converted)."""
        certs = verified_chain(sslobj)  # type: ignore[arg-type]
        if certs and len(certs) > 2:
            for der in certs[1:-1]:
                self.add(der)

    def issuer_of(self, der: bytes) -> bytes | None:
        c = _cert(der)
        for cand in self.by_subject.get(c.issuer.public_bytes(), ()):
            try:
                c.verify_directly_issued_by(_cert(cand))
                return cand
            except (ValueError, TypeError, InvalidSignature):
                continue
        return None


@dataclass(frozen=True)
class Revocations:
    """The CRLs in force (empty: no ``tls.crl``, nothing to check) and the CA certificates of ``tls.client_ca``."""

    crls: dict[bytes, x509.CertificateRevocationList] = field(default_factory=dict)
    cas: tuple[bytes, ...] = ()

    @classmethod
    def load(cls, crl: Path | None, client_ca: Path) -> Revocations:
        cas = load_cas(client_ca)
        return cls(load_crls(crl, cas) if crl is not None else {}, tuple(c.public_bytes(Encoding.DER) for c in cas))

    @cached_property
    def _bundle(self) -> Intermediates:
        known = Intermediates()
        for der in self.cas:
            known.add(der)
        return known

    def complete(self, chain: tuple[bytes, ...], learned: Intermediates | None = None) -> tuple[bytes, ...]:
        """``chain`` extended up to a self-issued certificate through the client CA bundle and ``learned``."""
        known = self._bundle
        out = list(chain)
        for _ in range(8):
            last = _cert(out[-1])
            if last.issuer == last.subject:
                break
            nxt = known.issuer_of(out[-1]) or (learned.issuer_of(out[-1]) if learned is not None else None)
            if nxt is None or nxt in out:
                break
            out.append(nxt)
        return tuple(out)

    def problem(self, chain: tuple[bytes, ...], learned: Intermediates | None = None) -> str | None:
        """Why the chain (leaf first, DER) is no longer acceptable: ``certificate_revoked`` (a certificate of
        it is on its issuer's CRL), ``crl_missing`` (no CRL of an issuer in the chain), else None."""
        if not self.crls or not chain:
            return None
        for der in self.complete(chain, learned):
            c = _cert(der)
            issuer = c.issuer.public_bytes()
            if issuer == c.subject.public_bytes():  # a trust anchor: not checked, as OpenSSL does
                continue
            crl = self.crls.get(issuer)
            if crl is None:
                return "crl_missing"
            if crl.get_revoked_certificate_by_serial_number(c.serial_number) is not None:
                return "certificate_revoked"
        return None


def chain_of(sslobj: object) -> tuple[bytes, ...]:
    """The peer's certificate chain, leaf first, as DER: the chain OpenSSL verified, else (a resumed TLS
    session) the chain the peer sent, else the leaf alone (guard.compat.ssl_chain)."""
    leaf = sslobj.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    if not leaf:
        return ()
    for get in (verified_chain, unverified_chain):
        try:
            ders = get(sslobj)  # type: ignore[arg-type]
        except Exception:
            ders = None
        if ders and ders[0] == leaf:
            return ders
    return (leaf,)
