"""RFC 3161 trusted time for checkpoints: ask a time-stamping authority (TSA) for a token over a checkpoint's
signed-note bytes, and check such a token later.

A token proves that the checkpoint existed no later than the TSA's ``genTime``: nobody at the operator can
backdate it. The token is the TSA's whole ``TimeStampResp`` (DER), stored beside the checkpoint
(``<checkpoint>.tsr``), so a verifier needs only the bytes of the checkpoint, the token and the TSA's CA.

Checking a token (``check_token``): the response is ``granted``, its CMS signature verifies with a certificate
that chains to the configured CA at ``genTime``, the signing certificate carries the critical
id-kp-timeStamping extended key usage, and the message imprint equals SHA-256 (or SHA-512) of the checkpoint
bytes. All of it through ``rfc3161-client`` (pyca/cryptography and Rust), no parsing of our own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from guard.audit.settings import TimestampSettings

CONTENT_TYPE_QUERY = "application/timestamp-query"
CONTENT_TYPE_REPLY = "application/timestamp-reply"
MAX_REPLY = 256 * 1024  # a token with its certificate chain is a few KiB


class TsaError(Exception):
    """The TSA could not be reached or did not grant a token."""


@dataclass(frozen=True)
class TokenCheck:
    ok: bool
    reason: str = ""  # empty when ok: bad_token, not_granted, untrusted_tsa, bad_signature, imprint_mismatch, ...
    detail: str = ""  # the library's words, for logs
    gen_time: dt.datetime | None = None
    tsa: str = ""  # the signing certificate's subject, when known


def _algorithm(name: str) -> HashAlgorithm:
    return HashAlgorithm.SHA512 if name == "sha512" else HashAlgorithm.SHA256


def build_request(data: bytes, hash_name: str = "sha256") -> tuple[bytes, int | None]:
    """DER ``TimeStampReq`` over ``data`` with a fresh nonce and the TSA's certificate requested; the nonce."""
    req = TimestampRequestBuilder().data(data).hash_algorithm(_algorithm(hash_name)).nonce(nonce=True).build()
    return req.as_bytes(), req.nonce


def request_token(data: bytes, settings: TimestampSettings) -> bytes:
    """Ask the TSA for a token over ``data`` and return its ``TimeStampResp`` (DER), checked against the
    configured CA and our nonce before it is returned. Raises ``TsaError``."""
    query, nonce = build_request(data, settings.hash)
    http = urllib.request.Request(settings.url, data=query, method="POST", headers={"Content-Type": CONTENT_TYPE_QUERY})
    try:
        with urllib.request.urlopen(http, timeout=settings.timeout_s) as resp:
            body = resp.read(MAX_REPLY + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise TsaError(f"TSA {settings.url}: {e}") from None
    if len(body) > MAX_REPLY:
        raise TsaError(f"TSA {settings.url}: reply larger than {MAX_REPLY} bytes")
    check = check_token(body, data, load_cas(settings.ca), nonce=nonce)
    if not check.ok:
        raise TsaError(f"TSA {settings.url}: {check.reason} {check.detail}".rstrip())
    return body


def load_cas(path: Path) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    if not certs:
        raise ValueError(f"{path}: no certificate")
    return certs


def check_token(token: bytes, data: bytes, cas: list[x509.Certificate], nonce: int | None = None) -> TokenCheck:
    """Whether ``token`` (a DER ``TimeStampResp``) timestamps exactly ``data`` and is signed by a TSA whose
    certificate chains to one of ``cas`` (the first is the root; any others are accepted as intermediates)."""
    try:
        resp = decode_timestamp_response(token)
    except (ValueError, TypeError) as e:
        return TokenCheck(False, "bad_token", str(e))
    except Exception as e:  # the Rust parser raises its own exception types for malformed DER
        return TokenCheck(False, "bad_token", type(e).__name__)
    try:
        info = resp.tst_info
        gen_time = info.gen_time
    except Exception:
        return TokenCheck(False, "not_granted", ", ".join(getattr(resp, "status_string", []) or []))
    roots = [c for c in cas if c.issuer == c.subject] or cas[:1]
    builder = VerifierBuilder()
    for c in roots:
        builder = builder.add_root_certificate(c)
    for c in cas:
        if c not in roots:
            builder = builder.add_intermediate_certificate(c)
    if nonce is not None:
        builder = builder.nonce(nonce)
    try:
        builder.build().verify_message(resp, data)
    except VerificationError as e:
        msg = str(e)
        if "messages" in msg:
            reason = "imprint_mismatch"
        elif "GRANTED" in msg:
            reason = "not_granted"
        elif "Nonce" in msg:
            reason = "nonce_mismatch"
        elif "signature failure" in msg:
            reason = "bad_signature"
        else:
            reason = "untrusted_tsa"
        return TokenCheck(False, reason, msg[:300], gen_time)
    except Exception as e:  # malformed CMS inside a well-formed response
        return TokenCheck(False, "bad_token", type(e).__name__, gen_time)
    return TokenCheck(True, "", "", gen_time, _signer_subject(resp))


def _signer_subject(resp: object) -> str:
    """The subject of the certificate that signed the token (matched by the SignerInfo's issuer and serial)."""
    try:
        si = next(iter(resp.signed_data.signer_infos))  # type: ignore[attr-defined]
        for der in resp.signed_data.certificates:  # type: ignore[attr-defined]
            cert = x509.load_der_x509_certificate(der)
            if cert.issuer == si.issuer and cert.serial_number == si.serial_number:
                return cert.subject.rfc4514_string()
    except Exception:
        return ""
    return ""


def imprint(data: bytes, hash_name: str = "sha256") -> bytes:
    """The message imprint a token over ``data`` must carry."""
    return hashlib.new(hash_name, data).digest()
