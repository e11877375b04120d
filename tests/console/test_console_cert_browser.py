"""The console in headless Chromium with a client certificate and no token: the way an auditor uses it.

Each browser gets a HOME of its own whose NSS database (``$HOME/.pki/nssdb``, where Chromium on Linux keeps
client certificates and locally trusted CAs) holds the test CA, trusted for servers, and one client
certificate with its key, imported as PKCS#12 with Debian's NSS tools (``certutil``, ``pk12util``). The
admin listener's certificate is then checked by the browser against that CA (no
``--ignore-certificate-errors``). No certificate dialog appears: the profile's ``auto_select_certificate``
content setting (the one the ``AutoSelectCertificateForUrls`` policy fills) names the console's origin and
the test CA as issuer, written into this browser's own profile preferences, so no global policy file under
/etc/chromium is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import GuardHandle
from tests.console import test_console as base
from tests.console.test_console import CHROMEDRIVER, CHROMIUM, console_events

console_guard = base.console_guard  # the same Guard and journal as test_console.py (a module of its own)
CERTUTIL, PK12UTIL = shutil.which("certutil"), shutil.which("pk12util")
pytestmark = [
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): make debian-deps",
    ),
    pytest.mark.skipif(
        not (CERTUTIL and PK12UTIL),
        reason="needs the NSS tools certutil and pk12util (Debian's libnss3-tools): make debian-deps",
    ),
]


def _nss_home(home: Path, g: GuardHandle, name: str) -> Path:
    """A HOME whose NSS database trusts the test CA and holds the client certificate ``name``."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    sql = f"sql:{db}"

    def run(*cmd: str) -> None:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"

    run(str(CERTUTIL), "-N", "--empty-password", "-d", sql)
    run(str(CERTUTIL), "-A", "-n", "guard-test-ca", "-t", "C,,", "-i", str(g.pki / "ca.pem"), "-d", sql)
    p12 = home / f"{name}.p12"
    cert, key = g.cert(name)
    run(
        "openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-name", name, "-out", str(p12), "-passout", "pass:"
    )
    run(str(PK12UTIL), "-i", str(p12), "-W", "", "-d", sql)
    p12.unlink()  # the key now lives only in the NSS database
    return home


def _issuer_cn(ca_pem: Path) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    return str(ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _browser(home: Path, origin: str, issuer_cn: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        f"--user-data-dir={home / 'profile'}",
    ):
        opts.add_argument(a)
    # select the certificate issued by the test CA for the console's origin, without a dialog
    rule = {"filters": [{"ISSUER": {"CN": issuer_cn}}]}
    opts.add_experimental_option(
        "prefs", {"profile.content_settings.exceptions.auto_select_certificate": {f"{origin},*": {"setting": rule}}}
    )
    env = {**os.environ, "HOME": str(home)}
    d = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=opts)
    d.set_page_load_timeout(30)  # a certificate dialog nobody answers would otherwise hang the page load
    return d


@pytest.fixture
def cert_browser(console_guard: GuardHandle, tmp_path: Path) -> Iterator[Any]:
    made: list[Any] = []
    u = urlsplit(console_guard.admin_url)

    def make(name: str) -> Any:
        d = _browser(
            _nss_home(tmp_path / name, console_guard, name),
            f"{u.scheme}://{u.netloc}",
            _issuer_cn(console_guard.pki / "ca.pem"),
        )
        made.append(d)
        return d

    yield make
    for d in made:
        d.quit()


def _fingerprint(g: GuardHandle, name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(Path(g.cert(name)[0]).read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def test_an_auditor_certificate_alone_opens_the_console_in_the_browser(
    console_guard: GuardHandle, cert_browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    g = console_guard
    fp = _fingerprint(g, "auditor")
    before = len(console_events(g))
    d = cert_browser("auditor")
    d.get(g.admin_url + "/console/")  # no token, no login form: the certificate is enough
    assert urlsplit(d.current_url).path == "/console/search", d.current_url
    assert "CN=carol-auditor" in d.find_element(By.CSS_SELECTOR, "header .who").text
    assert not d.find_elements(By.ID, "f-token")
    assert "billing-app" in d.page_source and "internal-finance" in d.page_source

    Select(d.find_element(By.ID, "f-decision")).select_by_value("blocked")
    d.find_element(By.ID, "f-principal").send_keys("billing-app")
    d.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(d, 20).until(lambda d: "decision=blocked" in d.current_url)
    assert d.find_element(By.ID, "result-count").text.startswith("1 events match")
    rows = d.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert len(rows) == 1 and "denylist" in rows[0].text and "blocked" in rows[0].text
    rows[0].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(d, 20).until(lambda d: "/console/event/" in d.current_url)
    record = json.loads(d.find_element(By.ID, "record").text)
    assert record["type"] == "exchange.denied" and record["principal"]["cn"] == "billing-app"
    integrity = d.find_element(By.ID, "integrity").text
    assert integrity.count("holds") == 3 and "FAILS" not in integrity
    assert "CN=carol-auditor" in d.find_element(By.CSS_SELECTOR, "header .who").text
    assert not [c for c in d.get_cookies() if c["name"] == "guard_console"]  # no token session was made

    # the journal names the certificate behind every view, not the token
    ev = [e["console"] for e in console_events(g)[before:]]
    mine = [e for e in ev if e["fingerprint"] == fp]
    assert mine and all(
        e["auth"] == "certificate" and e["status"] in (200, 303) and "CN=carol-auditor" in e["who"] for e in mine
    ), [(e["path"], e["status"], e["who"]) for e in mine]
    paths = {e["path"] for e in mine}
    assert "/console/search" in paths and any(p.startswith("/console/event/") for p in paths)
    assert any(e.get("query", {}).get("decision") == "blocked" and e.get("results") == 1 for e in mine)
    assert not [e for e in ev if e["auth"] == "token"]


def test_a_certificate_without_the_auditor_grant_gets_the_403_page_in_the_browser(
    console_guard: GuardHandle, cert_browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    g = console_guard
    fp = _fingerprint(g, "app")
    before = len(console_events(g))
    d = cert_browser("app")  # billing-app (OU apps): a valid client of the proxy, not an auditor
    for path in ("/console/", "/console/search?principal=alice", "/console/integrity", "/console/export"):
        d.get(g.admin_url + path)
        text = d.find_element(By.TAG_NAME, "body").text
        assert "does not grant audit_read" in text, (path, text)
        assert "/console/login" not in d.current_url  # refused, not offered the token form
        assert d.title.startswith("Refused"), d.title
        assert "internal-finance" not in d.page_source and "alice" not in d.page_source  # nothing of the journal
        assert not d.find_elements(By.CSS_SELECTOR, "table tbody tr")
    ev = [e["console"] for e in console_events(g)[before:]]
    refused = [e for e in ev if "CN=billing-app" in e["who"]]
    assert len(refused) >= 4 and all(e["status"] == 403 for e in refused), refused
    assert all(e["auth"] == "certificate" for e in refused)
    assert not [e for e in ev if e.get("fingerprint") == fp and e["status"] == 200]
