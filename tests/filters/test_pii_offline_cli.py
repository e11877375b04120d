"""Offline operation (no connection to anything but loopback) and the `guard scan` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
GUARD = Path(sys.executable).parent / "guard"

NO_NETWORK = r"""
import socket, sys
def refuse(self, address, *a, **k):
    host = address[0] if isinstance(address, tuple) else str(address)
    if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
        print("NETWORK ATTEMPT", address, file=sys.stderr)
        raise SystemExit(99)
    return real(self, address, *a, **k)
real = socket.socket.connect
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
real_gai = socket.getaddrinfo
def gai(host, *a, **k):
    if host not in ("127.0.0.1", "::1", "localhost", None):
        print("DNS ATTEMPT", host, file=sys.stderr)
        raise SystemExit(98)
    return real_gai(host, *a, **k)
socket.getaddrinfo = gai
"""

SCAN = (
    NO_NETWORK
    + r"""
from guard.screens.pii.engine import build_engine, BUILTIN_ENTITIES
from guard.screens.pii.profile import load_pii_profiles
engine = build_engine()
text = "mail me at someone@subdomain.example.co.uk or x@y.com, call +1 415-555-0134, card 5500 0000 0000 0004"
found = engine.analyze(text, language="en", entities=list(BUILTIN_ENTITIES))
assert {r.entity_type for r in found} >= {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"}, found
prof = load_pii_profiles(sys.argv[1])["default"]
assert len([f for f in prof.findings(text) if f.entity_type == "EMAIL_ADDRESS"]) == 2
print("OFFLINE OK")
"""
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(k, None)
    return env


def test_building_and_scanning_never_touch_the_network(tmp_path: Path) -> None:
    """Imports, engine construction and scans run with every non-loopback connect and lookup refused."""
    r = subprocess.run(
        [sys.executable, "-c", SCAN, str(ROOT / "filters" / "pii.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=_env(),
    )
    assert r.returncode == 0 and "OFFLINE OK" in r.stdout, r.stderr[-2000:]


def _scan(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(GUARD), "scan", *args], input=stdin, capture_output=True, timeout=120, cwd=ROOT, env=_env()
    )


@pytest.mark.skipif(not GUARD.exists(), reason="guard entry point not installed in this environment")
def test_scan_jsonl_contract() -> None:
    lines = [
        {"text": "write to ann@mailbox.org or call (212) 555-7788"},
        {"text": "nothing to see"},
        {"text": "card 5500-0000-0000-0004, IBAN DE89 3704 0044 0532 0130 00, émoji ✓ a@b.io"},
        {"text": "allowlisted support@example.com, ip 10.1.2.3"},
    ]
    stdin = b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in lines)
    r = _scan(["--jsonl"], stdin)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert len(out) == len(lines)
    for src, res in zip(lines, out, strict=False):
        assert set(res) == {"findings", "redacted"}
        redacted = src["text"]
        for f in sorted(res["findings"], key=lambda f: -f["start"]):
            assert set(f) == {"entity_type", "start", "end", "score"} and 0 <= f["score"] <= 1
            redacted = redacted[: f["start"]] + f"<{f['entity_type']}>" + redacted[f["end"] :]
        assert res["redacted"] == redacted
    assert out[0]["redacted"] == "write to <EMAIL_ADDRESS> or call <PHONE_NUMBER>"  # pseudonymize in the profile
    assert out[1] == {"findings": [], "redacted": "nothing to see"}
    assert [f["entity_type"] for f in out[2]["findings"]] == ["CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS"]
    assert out[3]["redacted"] == "allowlisted support@example.com, ip <IP_ADDRESS>"  # IP is allow: still listed


def _main(
    argv: list[str],
    stdin: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    """`guard ...` in this process (the engine is already built): faster than a subprocess."""
    import io

    from guard.cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    monkeypatch.chdir(ROOT)
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_scan_jsonl_bad_lines_get_an_error_line_in_place_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = b'{"text": "a@b.io"}\nnot json\n{"txt": 1}\n\xff\xfe\n[1]\n{"text": "ok"}\n'
    rc, out_text, _ = _main(["scan", "--jsonl"], stdin, monkeypatch, capsys)
    assert rc == 2
    out = [json.loads(x) for x in out_text.splitlines()]
    assert len(out) == 6 and out[0]["redacted"] == "<EMAIL_ADDRESS>" and out[5]["redacted"] == "ok"
    assert [o.get("line") for o in out[1:5]] == [2, 3, 4, 5]
    assert "not JSON" in out[1]["error"] and "not UTF-8" in out[3]["error"]


def test_scan_for_a_person_and_its_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = _main(
        ["scan", "--direction", "prompt", "-"], b"mail ann@mailbox.org, SSN 536-90-4399", monkeypatch, capsys
    )
    assert rc == 1 and "BLOCKED" in out and "US_SSN" in out and "EMAIL_ADDRESS" in out
    rc, out, _ = _main(["scan", "--direction", "response", "call +1 415-555-0134"], b"", monkeypatch, capsys)
    assert rc == 0 and "PHONE_NUMBER" in out and out.endswith("---\ncall +1 415-555-0134\n")  # allow
    rc, _, err = _main(["scan", "--profile", "nope", "x"], b"", monkeypatch, capsys)
    assert rc == 2 and "no profile 'nope'" in err
    rc, _, err = _main(["scan", "-"], b"\xff\xfe", monkeypatch, capsys)
    assert rc == 2 and "not UTF-8" in err
