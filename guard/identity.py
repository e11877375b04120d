"""Principal: who is calling, from the client certificate or a trusted sidecar's XFCC header."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID

from guard.attrs import Attrs


@dataclass(frozen=True)
class Principal:
    subject: str = ""
    cn: str = ""
    o: tuple[str, ...] = ()
    ou: tuple[str, ...] = ()
    san_dns: tuple[str, ...] = ()
    san_uri: tuple[str, ...] = ()
    san_email: tuple[str, ...] = ()
    spiffe_id: str = ""
    serial: str = ""
    fingerprint: str = ""  # SHA-256 of the DER certificate, lower-case hex
    not_after: str = ""  # RFC 3339, UTC
    source: str = "tls"  # tls | xfcc

    def attrs(self) -> dict[str, Any]:
        """Attributes as policy and audit see them (lists, not tuples). Computed once per Principal (they are
        cached per certificate), so callers must not mutate the dict."""
        return self._attrs

    @cached_property
    def _attrs(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("o", "ou", "san_dns", "san_uri", "san_email"):
            d[k] = list(d[k])
        return d

    @cached_property
    def policy_view(self) -> Attrs:
        """``attrs()`` as the policy engine reads them (guard.attrs.Attrs), made once per Principal rather
        than twice per request."""
        return Attrs(self._attrs)


ANONYMOUS = Principal(source="none")


def _names(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> tuple[str, ...]:
    return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(oid))


def principal_from_der(der: bytes) -> Principal:
    cert = x509.load_der_x509_certificate(der)
    dns: tuple[str, ...] = ()
    uri: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        uri = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        email = tuple(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    cns = _names(cert, NameOID.COMMON_NAME)
    return Principal(
        subject=cert.subject.rfc4514_string(),
        cn=cns[0] if cns else "",
        o=_names(cert, NameOID.ORGANIZATION_NAME),
        ou=_names(cert, NameOID.ORGANIZATIONAL_UNIT_NAME),
        san_dns=dns,
        san_uri=uri,
        san_email=email,
        spiffe_id=next((u for u in uri if u.startswith("spiffe://")), ""),
        serial=format(cert.serial_number, "x"),
        fingerprint=hashlib.sha256(der).hexdigest(),
        not_after=cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        source="tls",
    )


def principal_from_pem(pem: bytes) -> Principal:
    cert = x509.load_pem_x509_certificate(pem)
    from cryptography.hazmat.primitives.serialization import Encoding

    return principal_from_der(cert.public_bytes(Encoding.DER))


# --- Envoy x-forwarded-client-cert -------------------------------------------------------------------


def _split(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (XFCC quotes values that contain , ; or =). An unclosed quote
    makes the header ambiguous (where does the element end?): XFCCError."""
    out, cur, quoted, esc = [], [], False, False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
            cur.append(ch)
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quoted or esc:
        raise XFCCError("unbalanced quotes in x-forwarded-client-cert")
    out.append("".join(cur))
    return out


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1].replace('\\"', '"')
    return v


class XFCCError(ValueError):
    pass


def principal_from_xfcc(header: str, multi: str = "refuse") -> Principal:
    """Parsed once per distinct (short) header: a sidecar sends the same few values again and again.
    ``multi``: what a header of several elements means, ``refuse`` (XFCCError) or ``last``."""
    return _xfcc_cached(header, multi) if len(header) <= 4096 else _parse_xfcc(header, multi)


@lru_cache(maxsize=1024)
def _xfcc_cached(header: str, multi: str) -> Principal:
    return _parse_xfcc(header, multi)


def _parse_xfcc(header: str, multi: str = "refuse") -> Principal:
    """Principal from an XFCC header, as Envoy writes it: comma-separated elements, one per proxy hop, each
    appended by the proxy that forwarded the request (``forward_client_cert_details: APPEND_FORWARD``), so the
    LAST element is the one the nearest (trusted) proxy added; an earlier one came from further away, possibly
    from the client itself. Several elements are refused unless ``multi`` is ``last``; an empty element or an
    unclosed quote is refused always (the elements' boundaries would be a guess).

    Prefers the full ``Cert`` (URL-encoded PEM) when present; otherwise uses Subject/URI/DNS/Hash.
    """
    if len(header) > 65536:
        raise XFCCError("x-forwarded-client-cert too long")
    if not header.strip():
        raise XFCCError("empty x-forwarded-client-cert")
    elements = _split(header, ",")
    if any(not e.strip() for e in elements):
        raise XFCCError("x-forwarded-client-cert has an empty element")
    if len(elements) > 1 and multi != "last":
        raise XFCCError(
            f"x-forwarded-client-cert has {len(elements)} elements (one per proxy hop); only one is accepted here"
        )
    fields: dict[str, list[str]] = {}
    for pair in _split(elements[-1], ";"):
        if not pair.strip():
            continue
        if "=" not in pair:
            raise XFCCError(f"malformed x-forwarded-client-cert element: {pair[:40]!r}")
        k, v = pair.split("=", 1)
        fields.setdefault(k.strip().lower(), []).append(_unquote(v))
    if not fields.keys() & {"cert", "hash", "subject", "uri", "dns"}:
        raise XFCCError("x-forwarded-client-cert element names no client certificate")
    if "cert" in fields:
        try:
            p = principal_from_pem(unquote(fields["cert"][0]).encode())
        except Exception as e:
            raise XFCCError(f"unreadable Cert in x-forwarded-client-cert: {e}") from None
        return Principal(**{**asdict(p), "source": "xfcc"})
    subject = fields.get("subject", [""])[0]
    uris = tuple(fields.get("uri", []))
    cn = o = ou = None
    try:
        name = x509.Name.from_rfc4514_string(subject) if subject else x509.Name([])
        cn = [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
        o = tuple(str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        ou = tuple(str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME))
    except ValueError as e:
        raise XFCCError(f"bad Subject in x-forwarded-client-cert: {e}") from None
    return Principal(
        subject=subject,
        cn=cn[0] if cn else "",
        o=o or (),
        ou=ou or (),
        san_dns=tuple(fields.get("dns", [])),
        san_uri=uris,
        spiffe_id=next((u for u in uris if u.startswith("spiffe://")), ""),
        fingerprint=fields.get("hash", [""])[0].lower(),
        source="xfcc",
    )


def peer_is_trusted(peer_ip: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not networks or not peer_ip:
        return False
    return _trusted(peer_ip, tuple(networks))


@lru_cache(maxsize=4096)
def _trusted(peer_ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    return any(ip in n for n in networks)
