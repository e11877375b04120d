"""Handshake-level refusals: no certificate, a certificate from another CA, an expired certificate."""

from __future__ import annotations

import datetime as dt
import ssl

import httpx
import pytest

from guard import pki


def _post(g, ctx):
    with httpx.Client(base_url=g.url, verify=ctx, timeout=5) as c:
        return c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})


def _refused(g, ctx):
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)):
        _post(g, ctx)


def test_no_client_certificate_is_refused(guard):
    _refused(guard, guard.ssl_context(None))


def test_certificate_from_another_ca_is_refused(guard, tmp_path):
    pki.init_ca(tmp_path)
    pki.issue(tmp_path, "rogue", client=True, ou=["apps"])
    ctx = ssl.create_default_context(cafile=str(guard.pki / "ca.pem"))
    ctx.load_cert_chain(str(tmp_path / "rogue.pem"), str(tmp_path / "rogue-key.pem"))
    _refused(guard, ctx)


def test_expired_certificate_is_refused(guard, tmp_path):
    import shutil

    for f in ("ca.pem", "ca-key.pem"):
        shutil.copy(guard.pki / f, tmp_path / f)
    now = dt.datetime.now(dt.UTC)
    pki.issue(
        tmp_path,
        "old",
        client=True,
        ou=["apps"],
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    ctx = ssl.create_default_context(cafile=str(guard.pki / "ca.pem"))
    ctx.load_cert_chain(str(tmp_path / "old.pem"), str(tmp_path / "old-key.pem"))
    _refused(guard, ctx)


def test_valid_certificate_is_accepted(guard):
    assert _post(guard, guard.ssl_context("app")).status_code == 200
