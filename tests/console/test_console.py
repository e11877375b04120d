"""The compliance console, driven in headless Chromium (selenium, Debian's chromium and chromedriver) and
with real TLS clients, against a real Guard whose journal was written by real exchanges through the proxy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard import pki
from guard.demo.stack import ROOT
from tests.conftest import GuardHandle, start_guard

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "console-token-5f0c2a9e8d7b6a41"
AKIA = "AKIAIOSFODNN7EXAMPLE"
SHOTS = ROOT / "docs" / "console"
GUARD_CLI = [sys.executable, "-m", "guard.cli"]


@pytest.fixture(scope="module")
def console_guard(pki_dir: Path, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardHandle]:
    if not (pki_dir / "auditor.pem").exists():
        pki.issue(pki_dir, "auditor", client=True, cn="carol-auditor", o=["Example Corp"], ou=["auditors"])
    os.environ["GUARD_TEST_CONSOLE_TOKEN"] = TOKEN
    tmp = tmp_path_factory.mktemp("console")
    g = start_guard(
        pki_dir,
        model_server[1],
        tmp,
        judge_url=model_server[1],
        console={"enabled": True, "token_env": "GUARD_TEST_CONSOLE_TOKEN", "client_ca": str(pki_dir / "ca.pem")},
    )
    g.admin_url = g.admin_url.replace("http://127.0.0.1", "https://localhost")
    auth = {"authorization": "Bearer client-secret-0f1e2d3c4b5a"}
    with g.client("app") as c:
        for i in range(3):
            assert _chat(c, f"Hello number {i} [[reply: hi]]", headers=auth).status_code == 200
        assert _chat(c, "Hi", model="internal-finance", headers=auth).status_code == 403
        r = _chat(c, f"use the key {AKIA} for it", headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "secret_blocked"
    with g.client("staff") as c:
        assert _chat(c, "Hello", model="internal-finance", headers=auth).status_code == 200
    yield g
    g.stop()
    os.environ.pop("GUARD_TEST_CONSOLE_TOKEN", None)


def _chat(
    c: httpx.Client, content: str, model: str = "gpt-4o", headers: dict[str, str] | None = None
) -> httpx.Response:
    return c.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        headers=headers,
    )


def admin(g: GuardHandle, cert: str | None = None, **kw: Any) -> httpx.Client:
    ctx = g.ssl_context(cert)
    return httpx.Client(base_url=g.admin_url, verify=ctx, timeout=30, **kw)


def audit_dir(g: GuardHandle) -> Path:
    return Path(g.config.audit.dir)


def console_events(g: GuardHandle) -> list[dict[str, Any]]:
    out = []
    for seg in sorted((audit_dir(g) / "chains").glob("*/*.jsonl")):
        for line in seg.read_bytes().split(b"\n")[:-1]:
            e = json.loads(line)
            if e["type"].startswith("console."):
                out.append(e)
    return out


# --- access ------------------------------------------------------------------------------------------


def test_public_port_never_serves_the_console(console_guard: GuardHandle) -> None:
    g = console_guard
    with g.client("auditor") as c:
        for path in ("/console/", "/console/search", "/console/login", "/console/static/console.css"):
            for headers in ({}, {"authorization": f"Bearer {TOKEN}"}):
                r = c.get(path, headers=headers)
                assert r.status_code == 404, (path, r.status_code)
                assert "console" not in r.headers.get("content-type", "") and b"<html" not in r.content.lower()
        r = c.post("/console/export", data={"since": "2000-01-01"}, headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code in (404, 405, 415) and b"PK" not in r.content[:2]


def test_auditor_certificate_opens_the_console_and_others_are_refused(console_guard: GuardHandle) -> None:
    g = console_guard
    with admin(g, "auditor") as c:
        r = c.get("/console/search")
        assert r.status_code == 200 and "Search the audit journal" in r.text
        assert "CN=carol-auditor" in r.text
    for name in ("app", "staff", "contractor"):  # staff may use every operation on every model, not the console
        with admin(g, name) as c:
            r = c.get("/console/search")
            assert r.status_code == 403, name
            assert "does not grant audit_read" in r.text
            assert "billing-app" not in r.text and "internal-finance" not in r.text  # nothing of the journal leaks
            assert c.post("/console/export", data={}).status_code == 403
    with admin(g, None) as c:  # neither certificate nor token
        r = c.get("/console/search")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert c.get("/console/event/x/1").status_code == 303
        assert c.post("/console/verify").status_code == 401
        assert c.get("/healthz").status_code == 200  # probes need no certificate
    refused = [e for e in console_events(g) if e["console"]["status"] == 403]
    whos = {e["console"]["who"] for e in refused}
    assert any("CN=billing-app" in w for w in whos) and any("CN=alice" in w for w in whos)
    ok = [e for e in console_events(g) if e["console"]["auth"] == "certificate" and e["console"]["status"] == 200]
    assert ok and ok[0]["console"]["fingerprint"] and ok[0]["console"]["path"] == "/console/search"


def test_token_login_sets_a_strict_session_cookie_and_wrong_tokens_fail(console_guard: GuardHandle) -> None:
    g = console_guard
    with admin(g, None) as c:
        r = c.post("/console/login", data={"token": "wrong-token-wrong-token"})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        failed = [e for e in console_events(g) if e["console"]["path"] == "/console/login"]
        assert failed and failed[-1]["console"]["status"] == 401 and failed[-1]["console"]["who"] == "(wrong token)"
        assert all("wrong-token" not in json.dumps(e) for e in console_events(g))  # the guess is not kept
        r = c.post("/console/login", data={"token": TOKEN})
        assert r.status_code == 303 and TOKEN not in r.headers["location"]
        cookie = r.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/console/"):
            assert flag in cookie
        assert TOKEN not in cookie
        assert c.get("/console/search").status_code == 200  # the cookie works
        forged = re.sub(
            r"guard_console=(\d+)\.", lambda m: f"guard_console={int(m.group(1)) + 9999}.", cookie.split(";")[0]
        )
        c.cookies.clear()
        assert c.get("/console/search", headers={"cookie": forged}).status_code == 303
        r = c.post("/console/verify", headers={"authorization": f"Bearer {TOKEN}", "origin": "https://evil.example"})
        assert r.status_code == 403  # a cross-site form is refused
    with admin(g, None) as c:
        r = c.get("/console/search", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "<script" not in r.text


# --- the browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): make debian-deps")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--ignore-certificate-errors",
        "--no-first-run",
    ):  # the admin listener's test CA is not in the browser
        opts.add_argument(a)
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_in_the_browser_log_in_search_open_verify_export(
    console_guard: GuardHandle, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    g, d = console_guard, browser
    d.get(g.admin_url + "/console/search")
    assert d.current_url.endswith("/console/login")
    shot(d, "login")
    box = d.find_element(By.ID, "f-token")
    box.send_keys(TOKEN)
    box.send_keys(Keys.ENTER)  # keyboard only
    WebDriverWait(d, 20).until(lambda d: d.current_url.endswith("/console/search"))
    assert TOKEN not in d.current_url
    assert "billing-app" in d.page_source and "internal-finance" in d.page_source

    Select(d.find_element(By.ID, "f-decision")).select_by_value("blocked")
    d.find_element(By.ID, "f-principal").send_keys("billing-app")
    d.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(d, 20).until(lambda d: "decision=blocked" in d.current_url)
    count = d.find_element(By.ID, "result-count").text
    assert count.startswith("1 events match"), count
    rows = d.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert len(rows) == 1 and "denylist" in rows[0].text and "blocked" in rows[0].text
    shot(d, "search")
    rows[0].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(d, 20).until(lambda d: "/console/event/" in d.current_url)
    integrity = d.find_element(By.ID, "integrity").text
    assert integrity.count("holds") == 3 and "FAILS" not in integrity
    record = json.loads(d.find_element(By.ID, "record").text)
    assert record["type"] == "exchange.denied" and record["denial"]["stage"] == "screen"
    assert AKIA not in d.page_source  # the journal holds no secret values, so neither does the page
    shot(d, "event")

    d.get(g.admin_url + "/console/integrity")
    d.find_element(By.ID, "verify-now").click()
    # the page refreshes itself (meta refresh, no script) until the run is over
    WebDriverWait(d, 60, 0.3).until(
        lambda d: (
            "Verifying:" not in d.page_source and "seq " in d.page_source and "not verified yet" not in d.page_source
        )
    )
    shot(d, "integrity")
    assert "TAMPERED" not in d.page_source and "intact" in d.page_source, d.find_element(By.ID, "main").text
    shot(d, "integrity")

    d.get(g.admin_url + "/console/charts")
    assert d.find_elements(By.CSS_SELECTOR, "svg rect")
    shot(d, "charts")

    d.get(g.admin_url + "/console/policy?cn=billing-app&ou=apps&model=internal-finance&act=chat")
    assert "deny" in d.find_element(By.ID, "explain-result").text
    shot(d, "policy")

    d.get(g.admin_url + "/console/export?principal=billing-app")
    d.find_element(By.CSS_SELECTOR, "input[name=format][value=csv]").click()
    shot(d, "export")
    d.find_element(By.CSS_SELECTOR, "form.filters button").click()
    pack = _wait_download(d.downloads)
    data = pack.read_bytes()
    with zipfile.ZipFile(pack) as z:
        names = set(z.namelist())
        assert {
            "events.jsonl",
            "events.jsonl.manifest.json",
            "events.csv",
            "events.csv.manifest.json",
            "SUMMARY.txt",
            "summary.json",
        } <= names
        summary = z.read("SUMMARY.txt").decode()
        events = [json.loads(x) for x in z.read("events.jsonl").splitlines()]
    assert "Journal verified: INTACT" in summary and g.runtime.policy.version in summary
    assert events and all(e["principal"]["cn"] == "billing-app" for e in events)
    assert {"exchange.completed", "exchange.denied"} <= {e["type"] for e in events}

    keys = audit_dir(g) / "keys"
    r = subprocess.run(
        [*GUARD_CLI, "audit", "verify", str(pack), "--public-key", str(keys)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "INTACT" in r.stdout, r.stdout + r.stderr

    # an edited event in the pack is found
    bad = tmp_path / "edited.zip"
    with zipfile.ZipFile(pack) as z, zipfile.ZipFile(bad, "w") as out:
        for n in z.namelist():
            b = z.read(n)
            out.writestr(n, b.replace(b'"billing-app"', b'"someone-else"', 1) if n == "events.jsonl" else b)
    r = subprocess.run(
        [*GUARD_CLI, "audit", "verify", str(bad), "--public-key", str(keys)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "TAMPERED" in r.stdout and "hash_mismatch" in r.stdout

    # every view and the export are in the journal, with who and what
    ev = console_events(g)
    paths = {e["console"]["path"] for e in ev if e["console"]["who"] == "token"}
    assert {"/console/search", "/console/integrity", "/console/charts", "/console/policy", "/console/export"} <= paths
    assert any(p.startswith("/console/event/") for p in paths)
    searched = [e for e in ev if e["console"]["path"] == "/console/search" and e["console"].get("query")]
    assert any(
        e["console"]["query"].get("decision") == "blocked" and e["console"].get("results") == 1 for e in searched
    )
    exports = [e for e in ev if e["type"] == "console.export"]
    assert exports[-1]["console"]["pack_sha256"] == hashlib.sha256(data).hexdigest()
    assert exports[-1]["console"]["query"] == {"principal": "billing-app"}
    from guard.audit.schema import event_errors

    assert all(not event_errors(e) for e in ev)


def _wait_download(folder: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob("*.zip")]
        if done and not list(folder.glob("*.crdownload")):
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no download in {folder}: {list(folder.iterdir())}")


# --- policy view, index and tampering ------------------------------------------------------------------


def test_explain_gives_the_same_answer_as_the_cli(console_guard: GuardHandle) -> None:
    g = console_guard
    cases = [
        ("billing-app", "apps", "internal-finance", "chat"),
        ("alice", "staff", "internal-finance", "chat"),
        ("billing-app", "apps", "gpt-4o", "embeddings"),
    ]
    with admin(g, "auditor") as c:
        for cn, ou, model, act in cases:
            r = c.get("/console/policy", params={"cn": cn, "ou": ou, "model": model, "act": act})
            m = re.search(r'<div class="box" id="explain-result">.*?<pre>(.*?)</pre>', r.text, re.DOTALL)
            assert m, r.text[:2000]
            import html

            ours = json.loads(html.unescape(m.group(1)))
            cli = subprocess.run(
                [
                    *GUARD_CLI,
                    "policy",
                    "explain",
                    "--sub",
                    json.dumps({"cn": cn, "ou": [ou]}),
                    "--obj",
                    json.dumps({"model": model, "external": False}),
                    "--act",
                    act,
                    "--config",
                    str(g.config.source),
                ],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert json.loads(cli.stdout) == ours


def test_the_index_is_rebuilt_from_the_journal_and_is_not_evidence(console_guard: GuardHandle) -> None:
    g = console_guard
    idx = audit_dir(g) / "index" / "console.sqlite"
    assert idx.exists()
    with admin(g, "auditor") as c:
        before = re.search(r"(\d+) events match", c.get("/console/search", params={"type": "exchange.completed"}).text)
        # the console object lives on the admin app: empty the index under it
        app = next(r for r in console_guard.thread.servers[1].config.app.routes if getattr(r, "path", "") == "/console")
        cons = app.app.state.console
        cons.index.clear()
        cons._updated = 0.0
        time.sleep(1.1)
        after = re.search(r"(\d+) events match", c.get("/console/search", params={"type": "exchange.completed"}).text)
        assert before and after and before.group(1) == after.group(1) != "0"
        # tamper with one exchange in the journal: the event page reads the journal, not the index
        seg = min((audit_dir(g) / "chains").glob("*/*.jsonl"))
        data = seg.read_bytes()
        i = data.index(b'"cn":"alice"')
        seg.write_bytes(data[:i] + b'"cn":"eve00"' + data[i + len(b'"cn":"alice"') :])
        row = cons.index.query("SELECT chain, seq FROM events WHERE principal = 'alice' LIMIT 1")[0]
        r = c.get(f"/console/event/{row['chain']}/{row['seq']}")
        assert "FAILS" in r.text and "hash_mismatch" in r.text
        assert c.post("/console/verify").status_code == 303
        deadline = time.monotonic() + 60
        while cons.verifier.running and time.monotonic() < deadline:
            time.sleep(0.2)
        r = c.get("/console/integrity")
        assert "TAMPERED" in r.text and 'class="bad"' in r.text and "hash_mismatch" in r.text
        # guard audit verify says the same
        cli = subprocess.run(
            [*GUARD_CLI, "audit", "verify", str(audit_dir(g)), "--trust-local-keys"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 1 and "hash_mismatch" in cli.stdout
        shutil.rmtree(idx.parent, ignore_errors=True)
