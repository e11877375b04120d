"""TLS matrix (issue 8, item 3): every bad client is refused at the handshake, before any HTTP byte is read,
and counted in guard_tls_handshake_failures_total{reason} with its own reason."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guard import pki
from tests.hardening.conftest import metric, tls_socket, wait_metric

METRIC = "guard_tls_handshake_failures_total"
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
    b"content-length: 2\r\n\r\n{}"
)


@pytest.fixture(scope="module")
def matrix(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Guard with a CRL, and a second directory (same CA) holding the odd certificates."""
    from tests.conftest import start_guard

    d = tmp_path_factory.mktemp("tlsmatrix")
    for f in ("ca.pem", "ca-key.pem"):
        shutil.copy(pki_dir / f, d / f)
    now = dt.datetime.now(dt.UTC)
    pki.issue(
        d,
        "expired",
        client=True,
        ou=["apps"],
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    pki.issue(
        d,
        "future",
        client=True,
        ou=["apps"],
        not_before=now + dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
    )
    pki.issue(d, "sub-ca", is_ca=True, cn="a CA, not a client")
    pki.issue(d, "server-only", server=True, cn="billing-app", ou=["apps"])
    pki.issue(d, "revoked", client=True, cn="billing-app", ou=["apps"])
    pki.issue(d, "good", client=True, cn="billing-app", ou=["apps"])
    crl = pki.revoke(d, [d / "revoked.pem"])
    rogue = tmp_path_factory.mktemp("rogue")
    pki.init_ca(rogue, cn="Rogue CA")
    pki.issue(rogue, "rogue", client=True, cn="billing-app", ou=["apps"])
    g = start_guard(
        pki_dir, model_server[1], tmp_path_factory.mktemp("guard"), judge_url=model_server[1], tls={"crl": str(crl)}
    )
    yield {"guard": g, "dir": d, "rogue": rogue}
    g.stop()


def _ctx(m: dict[str, Any], cert: str | None, where: str = "dir") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(m["guard"].pki / "ca.pem"))
    if cert:
        d = m["guard"].pki if where == "pki" else m[where]
        key = "ca-key" if cert == "ca" else f"{cert}-key"
        ctx.load_cert_chain(str(d / f"{cert}.pem"), str(d / f"{key}.pem"))
    return ctx


def _tls12(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _old(version: ssl.TLSVersion) -> Callable[[dict[str, Any]], ssl.SSLContext]:
    def make(m: dict[str, Any]) -> ssl.SSLContext:
        ctx = _ctx(m, "good")
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 needs level 0 to even offer TLS 1.0/1.1
        ctx.minimum_version = version
        ctx.maximum_version = version
        return ctx

    return make


def _weak(ciphers: str) -> Callable[[dict[str, Any]], ssl.SSLContext]:
    def make(m: dict[str, Any]) -> ssl.SSLContext:
        ctx = _tls12(_ctx(m, "good"))
        ctx.set_ciphers(ciphers)
        return ctx

    return make


# case -> (client context, expected reason label)
CASES: dict[str, tuple[Callable[[dict[str, Any]], ssl.SSLContext], str]] = {
    "no_certificate": (lambda m: _ctx(m, None), "no_certificate"),
    "no_certificate_tls12": (lambda m: _tls12(_ctx(m, None)), "no_certificate"),
    "expired": (lambda m: _ctx(m, "expired"), "certificate_expired"),
    "not_yet_valid": (lambda m: _ctx(m, "future"), "certificate_not_yet_valid"),
    "wrong_ca": (lambda m: _ctx(m, "rogue", "rogue"), "unknown_ca"),
    "ca_certificate_root": (lambda m: _ctx(m, "ca", "pki"), "ca_certificate"),
    "ca_certificate_issued": (lambda m: _ctx(m, "sub-ca"), "ca_certificate"),
    "server_auth_only": (lambda m: _ctx(m, "server-only"), "bad_certificate_purpose"),
    "revoked": (lambda m: _ctx(m, "revoked"), "certificate_revoked"),
    "revoked_tls12": (lambda m: _tls12(_ctx(m, "revoked")), "certificate_revoked"),
    "tls1_0": (_old(ssl.TLSVersion.TLSv1), "protocol_version"),
    "tls1_1": (_old(ssl.TLSVersion.TLSv1_1), "protocol_version"),
    "weak_cbc_sha": (_weak("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384"), "no_shared_cipher"),
    "weak_static_rsa": (_weak("AES128-GCM-SHA256:AES256-SHA"), "no_shared_cipher"),
}


def _exchange(g: Any, ctx: ssl.SSLContext) -> bytes:
    """Handshake, send one request, read the answer: the bytes read, or raises when refused."""
    with tls_socket(g.url, ctx) as s:
        s.sendall(REQUEST)
        return s.recv(65536)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_client_is_refused_at_the_handshake_and_counted(matrix: dict[str, Any], case: str) -> None:
    make, reason = CASES[case]
    g = matrix["guard"]
    before = metric(g.admin_url, METRIC, reason=reason)
    try:
        ctx = make(matrix)
    except ssl.SSLError as e:  # pragma: no cover - an OpenSSL build that cannot even configure the client
        pytest.skip(f"this OpenSSL cannot configure the client: {e}")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as err:
        data = _exchange(g, ctx)
        # TLS 1.3: the client finishes its side first and learns of the refusal on its first read (alert/EOF).
        if not data:
            raise ConnectionError("closed without an HTTP answer")
        pytest.fail(f"{case}: got an HTTP answer: {data[:80]!r}")
    print(f"{case}: client saw {type(err.value).__name__}: {err.value}")
    assert wait_metric(g.admin_url, METRIC, before + 1, reason=reason) >= before + 1, (
        f"{case}: not counted as {reason}: " + metric_lines(g.admin_url)
    )


def metric_lines(admin_url: str) -> str:
    import httpx

    return "\n".join(line for line in httpx.get(admin_url + "/metrics").text.splitlines() if line.startswith(METRIC))


def test_good_certificate_still_served(matrix: dict[str, Any]) -> None:
    """Control: a valid client certificate from the same directory gets an HTTP answer (TLS 1.2 and 1.3)."""
    for ctx in (_ctx(matrix, "good"), _tls12(_ctx(matrix, "good"))):
        data = _exchange(matrix["guard"], ctx)
        assert data.startswith(b"HTTP/1.1 "), data[:80]
