"""Every reload is logged, counted and audited (issue 22, item 4), on a running `guard serve` process: for each
reloadable file (policy rules, a filters profile file, the server certificate, its key, the client CA bundle,
the CRL) a broken file, reloaded by SIGHUP or POST /admin/reload, keeps the old version in force (shown by
behaviour), and leaves an ERROR log line naming the file (and line, where the file has lines) with the
reason, one more ``guard_reload_total{component,result="failed"}`` and a ``config.reload`` audit event with
the file, reason and ``kept_version``. Putting the file back and reloading again is audited as ``ok`` with
that same version."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard import pki
from guard.demo.stack import (
    ROOT,
    free_port,
    guard_config,
    screening_filters,
    write_config,
)
from tests.hardening.conftest import metric
from tests.ops.conftest import GuardProcess, wait_ready

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def g(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardProcess]:
    d = tmp_path_factory.mktemp("reload-audit")
    tls, clients = d / "tls", d / "clients"  # what Guard reloads; what the test's clients use
    tls.mkdir()
    clients.mkdir()
    for f in ("ca.pem", "ca-key.pem", "app.pem", "app-key.pem"):
        shutil.copy(pki_dir / f, clients / f)
    pki.issue(clients, "revoked", client=True, cn="billing-app", ou=["apps"])
    pki.revoke(clients, [clients / "revoked.pem"], out=tls / "crl.pem")
    for f in ("ca.pem", "server.pem", "server-key.pem"):
        shutil.copy(pki_dir / f, tls / f)
    shutil.copy(ROOT / "policies/policy.csv", d / "policy.csv")
    port, admin = free_port(), free_port()
    cfg = guard_config(
        pki_dir,
        model_server[1],
        port,
        admin,
        tls={
            "cert": str(tls / "server.pem"),
            "key": str(tls / "server-key.pem"),
            "client_ca": str(tls / "ca.pem"),
            "crl": str(tls / "crl.pem"),
        },
        policy={"model": str(ROOT / "policies/model.conf"), "rules": [str(d / "policy.csv")], "watch": False},
        filters={"dir": str(screening_filters(d / "filters", model_server[1]))},
        audit={"dir": str(d / "audit")},
    )
    path = write_config(d / "guard.yaml", cfg)
    log = d / "guard.log"
    with open(log, "wb") as out:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "guard.cli", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    h = GuardProcess(proc, f"https://localhost:{port}", f"http://127.0.0.1:{admin}", d, path, clients, log)
    try:
        wait_ready(h.admin_url)
    except TimeoutError:
        proc.kill()
        raise AssertionError(log.read_text()[-3000:]) from None
    yield h
    assert h.stop() == 0


def chat(g: GuardProcess, content: str, model: str = "m", cert: str = "app") -> int:
    with g.client(cert) as c:
        return c.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": content}]}).status_code


def refused_at_handshake(g: GuardProcess, cert: str) -> bool:
    try:
        chat(g, "hi", cert=cert)
    except (httpx.HTTPError, ssl.SSLError):
        return True
    return False


def reload_events(g: GuardProcess, component: str) -> list[dict[str, Any]]:
    return [e for e in g.events() if e["type"] == "config.reload" and e["reload"]["component"] == component]


def do_reload(g: GuardProcess, trigger: str, component: str) -> dict[str, Any]:
    """Reload by SIGHUP or POST /admin/reload; returns the component's new config.reload event."""
    n = len(reload_events(g, component))
    if trigger == "signal":
        g.proc.send_signal(signal.SIGHUP)
    else:
        r = httpx.post(g.admin_url + "/admin/reload", timeout=60)
        assert r.status_code in (200, 422), r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = reload_events(g, component)
        if len(got) > n:
            assert len(got) == n + 1, got
            assert got[-1]["reload"]["trigger"] == trigger
            return got[-1]
        time.sleep(0.1)
    raise AssertionError(f"no config.reload event for {component}: {g.log.read_text()[-2000:]}")


def still_old_policy(g: GuardProcess) -> None:
    assert chat(g, "hi") == 200 and chat(g, "hi", model="internal-x") == 403


def still_old_filters(g: GuardProcess) -> None:
    assert chat(g, "my key is AKIAABCDEFGHIJKLMNOP") == 400  # the shipped denylist still blocks it


def still_old_tls(g: GuardProcess) -> None:
    assert chat(g, "hi") == 200  # handshakes still use the certificate, key and CA in force
    assert refused_at_handshake(g, "revoked")  # and the CRL in force


# file to break -> (component, how it is broken, does the reason name a line, old behaviour kept)
CASES: dict[str, tuple[str, str, Callable[[Path], Path], bool, Callable[[GuardProcess], None]]] = {
    "policy_rules": (
        "policy",
        "p, access, allow, chat, -, (((broken\n",
        lambda d: d / "policy.csv",
        True,
        still_old_policy,
    ),
    "filters_profile": (
        "filters",
        "profiles:\n  default:\n    rules:\n      - name: x\n        pattern: '(('\n",
        lambda d: d / "filters/denylist.yaml",
        True,
        still_old_filters,
    ),
    "server_certificate": ("tls", "not a certificate\n", lambda d: d / "tls/server.pem", False, still_old_tls),
    "server_key": (
        "tls",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        lambda d: d / "tls/server-key.pem",
        False,
        still_old_tls,
    ),
    "client_ca": (
        "tls",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
        lambda d: d / "tls/ca.pem",
        True,
        still_old_tls,
    ),
    "crl": (
        "tls",
        "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n",
        lambda d: d / "tls/crl.pem",
        True,
        still_old_tls,
    ),
}


@pytest.mark.parametrize("trigger", ["signal", "admin"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_file_keeps_the_old_version_and_is_logged_counted_and_audited(
    g: GuardProcess, case: str, trigger: str
) -> None:
    component, broken, where, has_line, kept = CASES[case]
    path = where(g.dir)
    good = do_reload(g, trigger, component)  # the version in force, audited as ok
    assert good["reload"]["result"] == "ok" and len(good["reload"]["version"]) == 64, good
    assert str(path) in good["reload"]["files"]
    original = path.read_bytes()
    failed_before = metric(g.admin_url, "guard_reload_total", component=component, result="failed")
    log_at = g.log.stat().st_size
    try:
        path.write_text(broken)
        bad = do_reload(g, trigger, component)
        r = bad["reload"]
        assert r["result"] == "failed" and r["kept_version"] == good["reload"]["version"], bad
        assert r["file"] == str(path), bad
        assert r["reason"] and ("line" in r) == has_line, bad
        assert metric(g.admin_url, "guard_reload_total", component=component, result="failed") == failed_before + 1
        logged = g.log.read_bytes()[log_at:].decode(errors="replace")
        line = next((ln for ln in logged.splitlines() if f"{component} failed" in ln), "")
        assert "ERROR" in line and str(path) in line and r["kept_version"][:16] in line, logged[-2000:]
        if has_line:
            assert f"line {r['line']}" in line
        kept(g)
    finally:
        path.write_bytes(original)
    fixed = do_reload(g, trigger, component)
    assert fixed["reload"]["result"] == "ok" and fixed["reload"]["version"] == good["reload"]["version"], fixed
    kept(g)


def test_reload_events_validate_against_the_schema(g: GuardProcess) -> None:
    from guard.audit.schema import journal_errors

    assert any(e["type"] == "config.reload" for e in g.events())
    assert journal_errors(g.dir / "audit") == []
