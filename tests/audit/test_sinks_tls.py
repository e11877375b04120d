"""TLS sinks verify the server: a private CA must be configured (`ca`), never switched off."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from guard.audit import layout
from guard.audit.forwarder import Forwarder
from guard.audit.journal import Journal
from guard.audit.settings import SinkSettings
from guard.audit.sinks import SinkError, SplunkHEC

from .conftest import fill, make_settings
from .tls_certs import make_certs


class TlsSyslogServer:
    """Accepts RFC 5425 (octet-counted syslog over TLS) on 127.0.0.1 and keeps the messages."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, raw: socket.socket) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b" " in buf:
                n, rest = buf.split(b" ", 1)
                if len(rest) < int(n):
                    break
                self.messages.append(rest[: int(n)])
                buf = rest[int(n) :]


def _wait(cond, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.05)
    return cond()


def test_syslog_over_tls_with_the_configured_ca_delivers_framed_rfc5424(tmp_path: Path) -> None:
    ca, cert, key = make_certs(tmp_path / "pki")
    srv = TlsSyslogServer(cert, key)
    s = make_settings(
        tmp_path / "a",
        sinks=[
            SinkSettings(
                name="tls",
                type="syslog",
                host="127.0.0.1",
                port=srv.port,
                tls=True,
                ca=ca,
                format="cef",
                backoff_min_s=0.05,
                backoff_max_s=0.2,
            )
        ],
    )
    j = Journal(s, "w1")
    fill(j, 8)
    j.close()
    fwd = Forwarder(s, poll_s=0.05)
    fwd.start()
    n = sum(1 for _ in layout.iter_events(tmp_path / "a"))
    assert _wait(lambda: len(srv.messages) >= n)
    fwd.stop()
    assert all(m.startswith(b"<110>1 ") or m.startswith(b"<108>1 ") for m in srv.messages)
    assert all(b" guard - " in m and b"CEF:0|Guard|" in m for m in srv.messages)


def test_syslog_over_tls_refuses_a_server_it_cannot_verify(tmp_path: Path) -> None:
    _, cert, key = make_certs(tmp_path / "pki")
    srv = TlsSyslogServer(cert, key)
    s = make_settings(
        tmp_path / "a",
        sinks=[
            SinkSettings(
                name="tls",
                type="syslog",
                host="127.0.0.1",
                port=srv.port,
                tls=True,
                backoff_min_s=0.05,
                backoff_max_s=0.2,
            )
        ],
    )
    j = Journal(s, "w1")
    fill(j, 3)
    fwd = Forwarder(s, poll_s=0.05)
    fwd.start()
    time.sleep(0.6)
    fwd.stop()
    j.close()
    assert srv.messages == [] and fwd.lag()["tls"] > 0


def test_hec_over_https_verifies_against_the_configured_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from aiohttp import web

    ca, cert, key = make_certs(tmp_path / "pki")
    got: list[bytes] = []

    async def hec(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.json_response({"code": 0})

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/services/collector/event", hec)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        monkeypatch.setenv("GUARD_TEST_HEC_TOKEN", "tok")
        ev = [{"time": "2026-11-25T01:00:00.000000Z", "id": "x", "type": "guard.started"}]
        good = SplunkHEC(
            SinkSettings(
                name="h", type="splunk_hec", url=f"https://127.0.0.1:{port}", ca=ca, token_env="GUARD_TEST_HEC_TOKEN"
            )
        )
        good.send(ev)
        assert len(got) == 1
        bad = SplunkHEC(
            SinkSettings(name="h", type="splunk_hec", url=f"https://127.0.0.1:{port}", token_env="GUARD_TEST_HEC_TOKEN")
        )
        with pytest.raises(SinkError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            bad.send(ev)
        assert len(got) == 1
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
