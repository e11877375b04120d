"""audit/README.md's auditor walkthrough, run as written: its `guard audit` command lines are taken from the
README (placeholders replaced by this run's journal, key, log id and leaf index) and run as commands; the
`curl` and `jq` steps are done with httpx and json against the running proxy. So the walkthrough cannot drift
from the CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from guard.audit.seal import keygen
from tests.audit.proxy_helpers import GUARD, chat

README = Path(__file__).resolve().parents[2] / "audit" / "README.md"


def _walkthrough() -> list[str]:
    text = README.read_text()
    block = text[text.index("<!-- walkthrough") : text.index("<!-- /walkthrough -->")]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith(("#", "```", "<!--"))]


def test_the_readme_walkthrough_from_a_receipt_header_to_a_verified_proof(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    priv, pub, _ = keygen(tmp_path / "audit-keys")
    root = tmp_path / "audit"
    g = guard_factory(
        routes=[{"model": "gpt-*", "upstream": "local"}],
        audit={"dir": str(root), "signing_key": str(priv), "sealer": "thread", "checkpoint_events": 5},
    )
    with g.client("app") as c:
        for i in range(7):
            r = chat(c, f"Hello {i}")
            assert r.status_code == 200
    log, _, index = r.headers["x-guard-audit-leaf"].rpartition("/")  # step 1
    chain = log.split("/", 1)[1]
    lines = _walkthrough()
    assert any(ln.startswith("curl -sD") for ln in lines) and any("x-guard-audit-leaf" in ln for ln in lines)
    url = next(ln for ln in lines if "/audit/v1/proof" in ln)
    assert "log=guard-audit/gw1-w0&index=1234" in url
    got = httpx.get(g.admin_url + "/audit/v1/proof", params={"log": log, "index": index}, timeout=30)  # step 2
    assert got.status_code == 200, got.text
    http_receipt = got.json()
    g.stop()
    work = tmp_path / "auditor"
    work.mkdir()
    shutil_pub = work / "guard-audit.pub.pem"
    shutil_pub.write_bytes(pub.read_bytes())  # only the public key travels to the auditor

    def subst(ln: str) -> str:
        return (
            ln.replace("/var/lib/guard/audit", str(root))
            .replace("guard-audit/gw1-w0", log)
            .replace("chains/gw1-w0", f"chains/{chain}")
            .replace("--index 1234", f"--index {index}")
        )

    ran = 0
    for ln in lines:
        if ln.startswith("jq "):  # step 4's first line: the receipt's signed checkpoint, kept
            m = re.fullmatch(r"jq -r \.checkpoint (\S+) > (\S+)", ln)
            assert m, ln
            rec = json.loads((work / m.group(1)).read_text())
            (work / m.group(2)).write_text(rec["checkpoint"])
            continue
        if not ln.startswith("guard audit"):
            continue
        cmd = shlex.split(subst(ln))
        out = None
        if ">" in cmd:
            out = work / cmd[cmd.index(">") + 1]
            cmd = cmd[: cmd.index(">")]
        p = subprocess.run([GUARD, *cmd[1:]], cwd=work, capture_output=True, text=True, timeout=60, env={**os.environ})
        assert p.returncode == 0, (ln, p.stdout, p.stderr)
        if out is not None:
            out.write_text(p.stdout)
        ran += 1
        if cmd[2] == "verify-receipt":
            assert "RECEIPT VERIFIED" in p.stdout and "(event matches the leaf)" in p.stdout, p.stdout
    assert ran == 4
    cli_receipt = json.loads((work / "receipt.json").read_text())
    assert cli_receipt["leaf_hash"] == http_receipt["leaf_hash"] and cli_receipt["event"]["seq"] == int(index) + 1
