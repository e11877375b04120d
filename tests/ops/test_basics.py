"""A user's basics against a real `guard serve` process: `guard --version`, the start-up line saying where
Guard listens, and the optional access log (one JSON line per exchange, never prompt text or secrets)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "zebra-quartz-7731"  # a word that appears only in prompts: it must never reach the access log


def test_version_prints_the_package_version():
    p = subprocess.run(
        [sys.executable, "-m", "guard.cli", "--version"], check=False, capture_output=True, text=True, timeout=60
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"guard {version}"


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _wait_for(path: Path, pattern: str, timeout: float = 20) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text())
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in {path.read_text()[-2000:]}")


def _exchanges(g, n_ok: int = 2) -> dict[str, int]:
    """Allowed, denied (policy) and blocked (screen) chats; returns request id -> status."""
    ids = {}
    with g.client() as c:
        for model, content in [("m", f"hello {MARKER}")] * n_ok + [
            ("internal-finance", f"Q3 {MARKER}"),
            ("m", f"my key is AKIAIOSFODNN7EXAMPLE {MARKER}"),
        ]:
            r = c.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}]}
            )
            ids[r.headers["x-guard-request-id"]] = r.status_code
    return ids


def test_startup_line_and_access_log_on_stderr(guard_process):
    g = guard_process(access_log=True)
    port = g.url.rsplit(":", 1)[1]
    admin = g.admin_url
    line = _wait_for(g.log, r"guard \S+: listening on (\S+) \(mTLS[^)]*\); admin (\S+) .*; 1 worker\n")
    assert line.group(1) == f"https://127.0.0.1:{port}"
    assert line.group(2) == admin
    ids = _exchanges(g)
    assert sorted(ids.values()) == [200, 200, 400, 403]
    deadline = time.monotonic() + 10
    while len([x for x in _json_lines(g.log.read_text()) if x.get("request_id") in ids]) < len(ids):
        assert time.monotonic() < deadline, g.log.read_text()[-2000:]
        time.sleep(0.05)
    assert g.stop() == 0
    text = g.log.read_text()
    assert MARKER not in text and "AKIAIOSFODNN7EXAMPLE" not in text and "BEGIN" not in text
    lines = {x["request_id"]: x for x in _json_lines(text) if "request_id" in x}
    for rid, status in ids.items():
        x = lines[rid]
        assert set(x) == {
            "ts",
            "request_id",
            "principal",
            "model",
            "api",
            "operation",
            "status",
            "code",
            "latency_ms",
            "decision",
        }
        assert x["status"] == status and x["principal"] == "billing-app" and x["api"] == "openai"
        assert x["latency_ms"] > 0 and x["ts"].endswith("Z")
    by_status = {x["status"]: x for x in (lines[r] for r in ids)}
    assert by_status[200]["decision"] == "allow" and by_status[200]["code"] is None
    assert by_status[403]["decision"] == "deny" and by_status[403]["code"] == "access_denied"
    assert by_status[403]["model"] == "internal-finance"
    assert by_status[400]["code"] == "secret_blocked"


def test_access_log_is_off_by_default(guard_process):
    g = guard_process()
    _wait_for(g.log, r"listening on ")
    ids = _exchanges(g, n_ok=1)
    assert g.stop() == 0
    assert not [x for x in _json_lines(g.log.read_text()) if x.get("request_id") in ids]


def test_two_workers_announce_once_and_append_whole_lines_to_one_file(guard_process, tmp_path):
    g = guard_process(workers=2, access_log=True, access_log_file=str(tmp_path / "access.jsonl"))
    line = _wait_for(g.log, r"listening on (\S+) .*; 2 workers\n")
    assert line.group(1) == "https://127.0.0.1:" + g.url.rsplit(":", 1)[1]
    assert g.log.read_text().count("listening on") == 1
    deadline = time.monotonic() + 30
    while sum(e["type"] == "guard.started" for e in g.events()) < 2:  # both workers are serving
        assert time.monotonic() < deadline, "a worker did not start"
        time.sleep(0.1)
    ids: dict[str, int] = {}
    for _ in range(5):
        ids |= _exchanges(g)
    assert g.stop() == 0
    lines = _json_lines((tmp_path / "access.jsonl").read_text())  # json.loads fails on an interleaved line
    assert {x["request_id"] for x in lines} >= set(ids)
    assert MARKER not in (tmp_path / "access.jsonl").read_text()


@pytest.mark.parametrize("value, error", [("yes please", "access_log"), ([1], "access_log_file")])
def test_bad_access_log_values_name_the_key(tmp_path, pki_dir, value, error):
    from guard.config import ConfigError, load_config
    from guard.demo.stack import guard_config, write_config

    path = write_config(tmp_path / "guard.yaml", guard_config(pki_dir, "http://127.0.0.1:1", 1, 2, **{error: value}))
    with pytest.raises(ConfigError, match=rf"guard\.yaml:\d+.*{error}"):
        load_config(path)
