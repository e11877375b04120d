"""A revoked certificate loses access at once (issue 21, item 4), attacked on a running Guard with TLS 1.2 and
1.3: after a new CRL and a reload (POST /admin/reload here, SIGHUP in tests/ops), a TLS session from before
the reload does not resume (1.2 session ids, 1.3 tickets), a keep-alive connection opened before it is
refused at its next request (403 ``certificate_revoked``, audited, connection closed), and CRLs of
intermediate CAs count as the root's do. A client that is not revoked keeps working, resumed or not."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard import pki
from tests.hardening.conftest import events, metric, wait_metric
from tests.ops.conftest import guard_process  # noqa: F401 - fixture: `guard serve` as a process

VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}
GET = b"GET /v1/models HTTP/1.1\r\nhost: localhost\r\n\r\n"
REFUSED = (ssl.SSLError, ConnectionError, OSError)


class PKI:
    """The Guard test CA (copied, to issue more) plus a second root with two intermediate CAs; one CRL file
    holds the CRL of every CA, as ``tls.crl`` takes them."""

    def __init__(self, base: Path, guard_ca: Path) -> None:
        self.main, self.root, self.inter_a, self.inter_b = (base / n for n in ("main", "root", "inter-a", "inter-b"))
        self.main.mkdir()
        for f in ("ca.pem", "ca-key.pem"):
            shutil.copy(guard_ca / f, self.main / f)
        pki.init_ca(self.root, cn="Test Root CA", path_length=1)
        for d in (self.inter_a, self.inter_b):
            pki.issue(self.root, d.name, is_ca=True, cn=f"Test {d.name} CA")
            d.mkdir()
            shutil.copy(self.root / f"{d.name}.pem", d / "ca.pem")
            shutil.copy(self.root / f"{d.name}-key.pem", d / "ca-key.pem")
        self.bundle = base / "client-ca.pem"  # trusted: the Guard CA and the second root (not the intermediates)
        self.bundle.write_bytes((self.main / "ca.pem").read_bytes() + (self.root / "ca.pem").read_bytes())
        self.crl = base / "crl.pem"
        self.revoked: dict[Path, list[Path]] = {d: [] for d in (self.main, self.root, self.inter_a, self.inter_b)}
        self.write_crl()

    def client(self, d: Path, name: str) -> Path:
        """A client certificate the shipped policy serves (cn billing-app, ou apps); under an intermediate, the
        certificate file carries the intermediate too (the client sends its chain)."""
        cert, _ = pki.issue(d, name, client=True, cn="billing-app", ou=["apps"])
        if d != self.main:
            cert.write_bytes(cert.read_bytes() + (d / "ca.pem").read_bytes())
        return cert

    def revoke(self, d: Path, cert: Path) -> None:
        self.revoked[d].append(cert)
        self.write_crl()

    def write_crl(self) -> None:
        out = b""
        for d, certs in self.revoked.items():
            p = pki.revoke(d, certs, out=d / "crl.pem")
            out += p.read_bytes()
        self.crl.write_bytes(out)

    def ctx(self, cert: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.main / "ca.pem"))
        ctx.load_cert_chain(str(cert), str(cert.with_name(cert.stem + "-key.pem")))
        ctx.minimum_version = ctx.maximum_version = version
        return ctx


@pytest.fixture(scope="module")
def rv(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.conftest import start_guard

    p = PKI(tmp_path_factory.mktemp("revocation"), pki_dir)
    g = start_guard(
        pki_dir,
        model_server[1],
        tmp_path_factory.mktemp("guard"),
        judge_url=model_server[1],
        tls={"client_ca": str(p.bundle), "crl": str(p.crl)},
    )
    yield {"guard": g, "pki": p}
    g.stop()


def reload(g: Any) -> None:
    r = httpx.post(g.admin_url + "/admin/reload", timeout=30)
    assert r.status_code == 200 and r.json()["tls"] == "reloaded", r.text


def read_response(s: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (content-length framed) from the socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf[:80]!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def connect(g: Any, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    host, port = g.url.split("//")[1].split(":")
    deadline = time.monotonic() + 20
    while True:  # a process that has just become healthy may not listen on its public port yet
        try:
            raw = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return ctx.wrap_socket(raw, server_hostname=host, session=session)


def served(g: Any, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[bool, ssl.SSLSession]:
    """One request on a new connection (resuming ``session`` when given): whether it resumed, and the session
    to resume next (read after the answer: TLS 1.3 tickets arrive after the handshake). Raises if refused."""
    with connect(g, ctx, session) as s:
        s.sendall(GET)
        status, _, body = read_response(s)
        assert status == 200, body[:200]
        return s.session_reused, s.session  # type: ignore[return-value]


def refused(g: Any, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> bool | None:
    """A new connection that must get no HTTP answer; returns whether the TLS session was resumed (None when
    the handshake itself failed on the client side)."""
    try:
        s = connect(g, ctx, session)
    except REFUSED:
        return None
    with s:
        reused = s.session_reused
        try:
            s.sendall(GET)
            data = s.recv(65536)
        except REFUSED:
            return reused
        assert not data, f"a revoked client got an answer (session reused: {reused}): {data[:120]!r}"
    return reused


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_tls_session_from_before_the_reload_does_not_resume_for_a_revoked_client(
    rv: dict[str, Any], version: str
) -> None:
    g, p = rv["guard"], rv["pki"]
    cert = p.client(p.main, f"resume-victim-{version}")
    ctx = p.ctx(cert, VERSIONS[version])
    _, session = served(g, ctx)
    reused, session = served(g, ctx, session)
    assert reused, "control: without a reload the session resumes (else this test could not fail)"
    before = metric(g.admin_url, "guard_tls_handshake_failures_total", reason="certificate_revoked")
    p.revoke(p.main, cert)
    reload(g)
    reused_after = refused(g, ctx, session)
    assert not reused_after, "the revoked client resumed its TLS session from before the reload"
    assert (
        wait_metric(g.admin_url, "guard_tls_handshake_failures_total", before + 1, reason="certificate_revoked")
        >= before + 1
    )  # a full handshake, refused by the new CRL
    assert refused(g, ctx) is not True  # and without the session, no more than that


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_client_that_is_not_revoked_keeps_working_after_the_reload_resumed_or_not(
    rv: dict[str, Any], version: str
) -> None:
    g, p = rv["guard"], rv["pki"]
    ctx = p.ctx(p.client(p.main, f"bystander-{version}"), VERSIONS[version])
    _, old = served(g, ctx)
    keep = connect(g, ctx)
    keep.sendall(GET)
    assert read_response(keep)[0] == 200
    p.revoke(p.main, p.client(p.main, f"someone-else-{version}"))
    reload(g)
    reused, new = served(g, ctx, old)
    assert not reused  # the session from before the reload is unknown now: a full handshake, which passes
    reused, _ = served(g, ctx, new)
    assert reused  # a session made after the reload resumes as usual
    keep.sendall(GET)  # the connection from before the reload passes the re-check and stays open
    assert read_response(keep)[0] == 200
    keep.sendall(GET)
    assert read_response(keep)[0] == 200
    keep.close()


def _refused_on_open_connection(g: Any, s: ssl.SSLSocket) -> dict[str, Any]:
    """The next request on a connection from before the reload: 403 certificate_revoked in the OpenAI error
    shape, connection: close, the connection then closed, and an exchange.denied record under its id."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    status, headers, answer = read_response(s)
    assert status == 403, answer
    err = json.loads(answer)["error"]
    assert err["code"] == "certificate_revoked" and err["type"] == "permission_denied", err
    assert headers.get("connection") == "close"
    rid = headers["x-guard-request-id"]
    with contextlib.suppress(REFUSED):
        assert s.recv(1024) == b"", "the connection stayed open after the refusal"
    deadline = time.monotonic() + 5
    while True:
        denied = [e for e in events(g.config.audit.dir) if e.get("request_id") == rid]
        if denied or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(denied) == 1 and denied[0]["type"] == "exchange.denied", denied
    assert denied[0]["outcome"]["status"] == 403 and denied[0]["denial"]["code"] == "certificate_revoked"
    assert denied[0]["principal"]["cn"] == "billing-app"
    return denied[0]


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_keep_alive_connection_from_before_the_reload_is_refused_and_closed(rv: dict[str, Any], version: str) -> None:
    g, p = rv["guard"], rv["pki"]
    cert = p.client(p.main, f"keepalive-victim-{version}")
    s = connect(g, p.ctx(cert, VERSIONS[version]))
    with s:
        for _ in range(2):
            s.sendall(GET)
            assert read_response(s)[0] == 200
        p.revoke(p.main, cert)
        reload(g)
        _refused_on_open_connection(g, s)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_intermediate_ca_crls_count_for_new_and_open_connections(rv: dict[str, Any], version: str) -> None:
    """Leaf under an intermediate CA that the root's CRL revokes, and a leaf that its intermediate's CRL
    revokes: before the reload both are served (the control), after it both are refused, at the handshake
    and on connections opened before it, resumed ones included (their chain is completed from the CA
    certificates that full handshakes verified)."""
    g, p = rv["guard"], rv["pki"]
    v = VERSIONS[version]
    # the root revokes a whole intermediate CA (one per TLS version, so each run has its own)
    sub = p.root.parent / f"inter-{version}"
    pki.issue(p.root, sub.name, is_ca=True, cn=f"Test {sub.name} CA")
    sub.mkdir()
    shutil.copy(p.root / f"{sub.name}.pem", sub / "ca.pem")
    shutil.copy(p.root / f"{sub.name}-key.pem", sub / "ca-key.pem")
    p.revoked[sub] = []
    p.write_crl()
    reload(g)
    under_revoked_ca = p.ctx(p.client(sub, "leaf"), v)
    revoked_leaf = p.ctx(p.client(p.inter_b, f"leaf-{version}"), v)
    fine = p.ctx(p.client(p.inter_a, f"fine-{version}"), v)
    opened = []
    for ctx in (under_revoked_ca, revoked_leaf, fine):
        for _attempt in range(5):  # a reload by the file watcher (it saw the CRL change) starts a new cache
            _, session = served(g, ctx)
            s = connect(g, ctx, session)  # resumed: the server-side TLS object then holds no chain, only the leaf
            if s.session_reused:
                break
            s.close()
            time.sleep(0.5)
        assert s.session_reused
        s.sendall(GET)
        assert read_response(s)[0] == 200
        opened.append(s)
    p.revoke(p.root, sub / "ca.pem")
    p.revoke(p.inter_b, p.inter_b / f"leaf-{version}.pem")
    reload(g)
    for ctx in (under_revoked_ca, revoked_leaf):
        assert refused(g, ctx) is not True
    served(g, fine)
    for s in opened[:2]:
        with s:
            _refused_on_open_connection(g, s)
    with opened[2] as s:
        s.sendall(GET)
        assert read_response(s)[0] == 200


def test_several_crls_in_one_file_and_a_chain_without_its_crl(rv: dict[str, Any], tmp_path: Path) -> None:
    """tls.crl holds one CRL per CA: a chain through an intermediate whose CRL is missing is refused (OpenSSL
    checks every CA of the chain), a CRL not signed by its CA is a failed reload that keeps the CRLs in force."""
    from guard.revocation import Revocations, TLSFileError

    p = rv["pki"]
    crls = Revocations.load(p.crl, p.bundle).crls
    assert len(crls) >= 4  # the Guard CA, the root and both intermediates
    forged = tmp_path / "forged.pem"
    other = tmp_path / "other"
    pki.init_ca(other, cn="Test Root CA")  # same name as the root, another key
    forged.write_bytes(pki.revoke(other, []).read_bytes())
    with pytest.raises(TLSFileError, match="not signed by that CA"):
        Revocations.load(forged, p.bundle)
    g = rv["guard"]
    saved = p.crl.read_bytes()
    try:
        p.crl.write_bytes(saved + forged.read_bytes())
        r = httpx.post(g.admin_url + "/admin/reload", timeout=30)
        assert r.status_code == 422 and r.json()["tls"].startswith("kept old"), r.text
    finally:
        p.crl.write_bytes(saved)
    lonely = tmp_path / "lonely"
    pki.issue(p.root, "inter-nocrl", is_ca=True, cn="Test CA without a CRL")
    lonely.mkdir()
    shutil.copy(p.root / "inter-nocrl.pem", lonely / "ca.pem")
    shutil.copy(p.root / "inter-nocrl-key.pem", lonely / "ca-key.pem")
    before = metric(g.admin_url, "guard_tls_handshake_failures_total", reason="crl_error")
    assert refused(g, p.ctx(PKI.client(p, lonely, "leaf"), ssl.TLSVersion.TLSv1_3)) is not True
    assert wait_metric(g.admin_url, "guard_tls_handshake_failures_total", before + 1, reason="crl_error") >= before + 1


@pytest.mark.parametrize("version", list(VERSIONS))
def test_sighup_after_guard_pki_revoke_ends_resumption_and_open_connections(
    pki_dir: Path,
    guard_process: Any,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    version: str,
) -> None:
    """The same with `guard serve` as a process, `guard pki revoke` and SIGHUP."""
    import signal
    import subprocess
    import sys

    d = tmp_path / "ca"
    d.mkdir()
    for f in ("ca.pem", "ca-key.pem"):
        shutil.copy(pki_dir / f, d / f)
    cert, key = pki.issue(d, "victim", client=True, cn="billing-app", ou=["apps"])
    pki.revoke(d, [])
    g = guard_process(tls={"crl": str(d / "crl.pem")})
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    _, session = served(g, ctx)
    assert served(g, ctx, session)[0], "control: the session resumes before the reload"
    keep = connect(g, ctx)
    keep.sendall(GET)
    assert read_response(keep)[0] == 200
    subprocess.run(
        [sys.executable, "-m", "guard.cli", "pki", "revoke", "--dir", str(d), str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def tls_reloads() -> int:
        return sum(e["type"] == "config.reload" and e["reload"]["component"] == "tls" for e in g.events())

    n = tls_reloads()
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while tls_reloads() <= n:
        assert time.monotonic() < deadline, "no tls config.reload after SIGHUP"
        time.sleep(0.1)
    assert not refused(g, ctx, session), "the revoked client resumed its TLS session from before SIGHUP"
    with keep:
        keep.sendall(GET)
        status, headers, body = read_response(keep)
        assert status == 403 and json.loads(body)["error"]["code"] == "certificate_revoked"
        assert headers.get("connection") == "close"


def test_h11_keep_alive_connection_is_refused_and_closed_too(pki_dir: Path, guard_factory: Any, tmp_path: Path) -> None:
    """uvicorn's other HTTP implementation (h11) checks open connections the same way."""
    d = tmp_path / "ca"
    d.mkdir()
    for f in ("ca.pem", "ca-key.pem"):
        shutil.copy(pki_dir / f, d / f)
    cert, key = pki.issue(d, "victim", client=True, cn="billing-app", ou=["apps"])
    pki.revoke(d, [])
    g = guard_factory(http="h11", tls={"crl": str(d / "crl.pem")})
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    ctx.load_cert_chain(str(cert), str(key))
    with connect(g, ctx) as s:
        s.sendall(GET)
        assert read_response(s)[0] == 200
        pki.revoke(d, [cert])
        reload(g)
        _refused_on_open_connection(g, s)
