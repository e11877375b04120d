"""`guard demo --check` is the README's promise that the embedded demo works end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_check_passes():
    p = subprocess.run(
        [sys.executable, "-m", "guard.cli", "demo", "--check"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "all steps passed" in p.stdout
    assert "FAIL" not in p.stdout


def test_readme_quick_start_commands_are_the_makefile_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for cmd in ("make demo", "make test"):
        assert cmd in readme
        assert re.search(rf"^{cmd.split()[1]}:", makefile, re.M)
    assert "$(BIN)/guard demo" in makefile and "pytest tests" in makefile
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci


def test_shipped_example_config_loads(tmp_path):
    from guard.config import load_config

    cfg = load_config(ROOT / "deploy/guard.yaml")
    assert cfg.tls.client_ca and cfg.routes and cfg.upstreams
