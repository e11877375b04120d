"""`guard pki`: a throwaway CA and certificates for development and tests (never for production)."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from guard.config import ConfigError
from guard.keyfiles import write_private


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """0600 from the start (never chmod after writing); a key issued again replaces the old one atomically."""
    write_private(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        replace=True,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def init_ca(d: Path, cn: str = "Guard Dev CA", days: int = 3650, path_length: int | None = 0) -> Path:
    """A self-signed CA in ``d``; ``path_length`` 0 issues end-entity certificates only, more allows that
    many intermediate CAs below it."""
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(d / "ca-key.pem", key)
    _write_cert(d / "ca.pem", cert)
    return d / "ca.pem"


def _load_ca(d: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((d / "ca-key.pem").read_bytes(), None)
    except FileNotFoundError:
        raise ConfigError(f"{d}: no CA here; run 'guard pki init --dir {d}' first") from None
    return cert, key  # type: ignore[return-value]


def issue(
    d: Path,
    name: str,
    *,
    client: bool = False,
    server: bool = False,
    cn: str | None = None,
    o: list[str] | None = None,
    ou: list[str] | None = None,
    san_dns: list[str] | None = None,
    san_ip: list[str] | None = None,
    san_uri: list[str] | None = None,
    san_email: list[str] | None = None,
    days: int = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    is_ca: bool = False,
) -> tuple[Path, Path]:
    """Issue a certificate signed by the CA in ``d``; writes ``d/name.pem`` and ``d/name-key.pem``."""
    if not (client or server or is_ca):
        raise ConfigError("guard pki issue: say --client or --server")
    ca_cert, ca_key = _load_ca(d)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn or name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, v) for v in (o or [])]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, v) for v in (ou or [])]
    now = dt.datetime.now(dt.UTC)
    nb = not_before or now - dt.timedelta(minutes=5)
    na = not_after or now + dt.timedelta(days=days)
    sans: list[x509.GeneralName] = [x509.DNSName(v) for v in (san_dns or [])]
    sans += [x509.IPAddress(ipaddress.ip_address(v)) for v in (san_ip or [])]
    sans += [x509.UniformResourceIdentifier(v) for v in (san_uri or [])]
    sans += [x509.RFC822Name(v) for v in (san_email or [])]
    usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + (
        [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    )
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if usages:
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    cert_path, key_path = d / f"{name}.pem", d / f"{name}-key.pem"
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def revoke(d: Path, cert_paths: list[Path], out: Path | None = None) -> Path:
    """Write a CRL (``d/crl.pem``) revoking the given certificates."""
    ca_cert, ca_key = _load_ca(d)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=7))
    )
    for p in cert_paths:
        c = x509.load_pem_x509_certificate(p.read_bytes())
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(c.serial_number).revocation_date(now).build()
        )
    crl = b.sign(ca_key, hashes.SHA256())
    out = out or d / "crl.pem"
    out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pki", help="development PKI: a CA, server and client certificates")
    s = p.add_subparsers(dest="pki_cmd", required=True)
    i = s.add_parser("init", help="create a CA in DIR (ca.pem, ca-key.pem)")
    i.add_argument("--dir", required=True, type=Path)
    i.add_argument("--cn", default="Guard Dev CA")
    i.set_defaults(func=lambda a: print(init_ca(a.dir, a.cn)) or 0)
    c = s.add_parser("issue", help="issue DIR/NAME.pem and DIR/NAME-key.pem signed by the CA in DIR")
    c.add_argument("--dir", required=True, type=Path)
    c.add_argument("--name", required=True)
    kind = c.add_mutually_exclusive_group(required=True)
    kind.add_argument("--client", action="store_true")
    kind.add_argument("--server", action="store_true")
    c.add_argument("--cn")
    for flag in ("--o", "--ou", "--san-dns", "--san-ip", "--san-uri", "--san-email"):
        c.add_argument(flag, action="append", default=[])
    c.add_argument("--days", type=int, default=365)

    def _issue(a: argparse.Namespace) -> int:
        cert, key = issue(
            a.dir,
            a.name,
            client=a.client,
            server=a.server,
            cn=a.cn,
            o=a.o,
            ou=a.ou,
            san_dns=a.san_dns,
            san_ip=a.san_ip,
            san_uri=a.san_uri,
            san_email=a.san_email,
            days=a.days,
        )
        print(cert)
        print(key)
        return 0

    c.set_defaults(func=_issue)
    r = s.add_parser("revoke", help="write DIR/crl.pem revoking the given certificates")
    r.add_argument("--dir", required=True, type=Path)
    r.add_argument("certs", nargs="+", type=Path)
    r.set_defaults(func=lambda a: print(revoke(a.dir, a.certs)) or 0)
