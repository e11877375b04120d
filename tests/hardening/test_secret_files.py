"""Private keys and secret files are created 0600 and are never readable by others, not even for a moment.

Every way Guard writes one runs under umask 0 (so a file created with the default mode would be 0666) with
every chmod call made to fail: a key that ends up 0600 there was created 0600. The writers covered: `guard pki
init` and `issue` (and issuing a name again), `guard audit keygen`, the audit signing key and the content HMAC
key that a starting Guard creates in its audit folder, and the demo stack's PKI.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.cli import main


@pytest.fixture
def hostile_umask(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """umask 0 and no chmod of a key file: a secret file gets its mode when it is created, or never."""
    real_chmod, real_path_chmod = os.chmod, Path.chmod

    def keyish(target: Any) -> bool:
        return isinstance(target, int) or "key" in os.fspath(target).rsplit("/", 1)[-1].lower()

    def chmod(target: Any, *a: Any, **k: Any) -> None:
        if keyish(target):
            raise AssertionError(f"chmod of a key file after writing: {target}")
        real_chmod(target, *a, **k)

    def fchmod(fd: int, mode: int) -> None:
        raise AssertionError("fchmod after creating")

    def path_chmod(self: Path, *a: Any, **k: Any) -> None:
        if keyish(self):
            raise AssertionError(f"chmod of a key file after writing: {self}")
        real_path_chmod(self, *a, **k)

    monkeypatch.setattr(os, "chmod", chmod)
    monkeypatch.setattr(os, "fchmod", fchmod)
    monkeypatch.setattr(Path, "chmod", path_chmod)
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def secret_files(root: Path) -> list[Path]:
    """Private keys (PEM) and raw key files (``*.key``) under ``root``."""
    return [p for p in root.rglob("*") if p.is_file() and (p.suffix == ".key" or b"PRIVATE KEY" in p.read_bytes())]


def assert_private(files: list[Path]) -> None:
    assert files
    for f in files:
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == 0o600, f"{f}: {oct(mode)}"
    leftovers = [p for f in files for p in f.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_pki_keys_are_created_0600(tmp_path: Path, hostile_umask: None, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(d)]) == 0
    assert main(["pki", "issue", "--dir", str(d), "--name", "app", "--client", "--cn", "app"]) == 0
    first = (d / "app-key.pem").read_bytes()
    assert main(["pki", "issue", "--dir", str(d), "--name", "app", "--client", "--cn", "app"]) == 0  # again
    assert (d / "app-key.pem").read_bytes() != first  # replaced, and still 0600
    assert_private(secret_files(d))
    assert {p.name for p in secret_files(d)} == {"ca-key.pem", "app-key.pem"}
    assert stat.S_IMODE((d / "ca.pem").stat().st_mode) & 0o044  # certificates are public: the umask applies


def test_audit_keygen_is_created_0600(tmp_path: Path, hostile_umask: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["audit", "keygen", "--out", str(tmp_path / "k")]) == 0  # a second key beside the first
    assert_private(secret_files(tmp_path / "k"))
    assert len(secret_files(tmp_path / "k")) == 2


def test_keys_a_starting_guard_creates_are_0600(tmp_path: Path, hostile_umask: None) -> None:
    """The demo stack's PKI, then a running Guard (audit capture=hash) that creates its signing key and content
    HMAC key in its audit folder."""
    from guard.audit.settings import AuditSettings
    from guard.demo.stack import make_pki
    from tests.conftest import start_guard

    pki = tmp_path / "pki"
    make_pki(pki)
    assert_private(secret_files(pki))
    audit = tmp_path / "audit"
    assert AuditSettings.model_fields["capture"].default == "hash"
    g = start_guard(pki, "http://127.0.0.1:9", tmp_path, audit={"dir": str(audit), "sealer": "thread"})
    try:
        with g.client() as c:
            c.get("/v1/models")
    finally:
        g.stop()
    files = secret_files(audit)
    assert {f.name for f in files} >= {"signing-key.pem", "content-hmac.key"}
    assert_private(files)
