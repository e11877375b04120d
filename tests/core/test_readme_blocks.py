"""The recipes work as written: every `sh` and `python` block of README.md, and every command `guard demo`
prints, runs against a running `guard demo` (a real process: throwaway PKI, built-in model server, Guard).

How a README block meets the demo (the whole mapping is here, nowhere else):
- Blocks run in a fresh folder holding copies of the demo's ``ca.pem``, ``app.pem`` and ``app-key.pem``, the
  journal's public key as ``guard-audit.pub.pem``, and links to the repository's ``policies/`` and ``filters/``;
  ``guard`` and ``python`` on PATH run this checkout.
- Names the README uses for a production host are replaced (SUBSTITUTIONS): ``guard.example:8443`` by the
  demo's ``localhost:<port>``, ``/var/lib/guard/audit`` by the demo's journal, ``/etc/guard/audit-keys`` by a
  folder holding a copy of the demo's signing key, ``--config guard.yaml`` by the demo's configuration.
- A block preceded by ``<!-- not-run: reason -->`` is not run (kept to a few, each with its reason).
A block fails the test when it exits non-zero; curl answers must be JSON of the API's shape.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from guard.demo.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"(?:<!-- not-run: (?P<why>[^>]*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.DOTALL)
RUNNABLE = {"sh", "bash", "python"}


@dataclass
class Block:
    line: int
    lang: str
    body: str
    not_run: str | None


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text.count("\n", 0, m.start("lang")) + 1, m["lang"], m["body"], m["why"]) for m in FENCE.finditer(text)
    ]


@dataclass
class DemoProcess:
    proc: subprocess.Popen[str]
    printout: str
    dir: Path
    port: int
    runtime_dir: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """`guard demo` as a user starts it, with its files in a private $XDG_RUNTIME_DIR."""
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guard.cli",
            "demo",
            "--port",
            str(port),
            "--admin-port",
            str(free_port()),
            "--model-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PYTHONUNBUFFERED": "1"},
    )
    out: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.startswith("Ctrl-C stops the demo"):
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    ready = done.wait(180)
    printout = "".join(out)
    if not ready or proc.poll() is not None:
        proc.kill()
        raise AssertionError(f"guard demo did not start:\n{printout[-3000:]}")
    d = Path(re.search(r"^  config\s+(\S+)/guard\.yaml$", printout, re.MULTILINE)[1])  # type: ignore[index]
    yield DemoProcess(proc, printout, d, port, runtime)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _workdir(demo: DemoProcess, tmp: Path) -> tuple[Path, dict[str, str]]:
    work = tmp / "work"
    work.mkdir()
    pki = demo.dir / "pki"
    for name in ("ca.pem", "app.pem", "app-key.pem"):
        shutil.copy(pki / name, work / name)
    keys = demo.dir / "audit-keys"
    shutil.copy(next(keys.glob("*.pub.pem")), work / "guard-audit.pub.pem")
    shutil.copytree(keys, work / "etc-guard-audit-keys")
    for name in ("policies", "filters"):
        (work / name).symlink_to(ROOT / name)
    bin_ = tmp / "bin"
    bin_.mkdir()
    for name, target in (("guard", f"{sys.executable} -m guard.cli"), ("python", sys.executable)):
        (bin_ / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (bin_ / name).chmod(0o755)
    substitutions = {
        "guard.example:8443": f"localhost:{demo.port}",
        "/var/lib/guard/audit": str(demo.dir / "audit"),
        "/etc/guard/audit-keys": str(work / "etc-guard-audit-keys"),
        "--config guard.yaml": f"--config {demo.dir / 'guard.yaml'}",
    }
    return work, substitutions


def _env(tmp: Path) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
    }


def _run(lang: str, code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-"] if lang == "python" else ["bash", "-e", "-o", "pipefail", "-s"]
    return subprocess.run(argv, input=code, check=False, capture_output=True, text=True, cwd=cwd, env=env, timeout=240)


def _check_curl_answers(stdout: str, code: str) -> None:
    """Each curl answer is one JSON document in the OpenAI shape (a choice or an error), not an HTML page or
    a TLS failure's empty output."""
    if "curl " not in code:
        return
    docs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert docs, "curl printed nothing"
    for d in docs:
        assert "choices" in d or "error" in d, d


BLOCKS = readme_blocks()


def test_readme_blocks_are_found_and_few_are_not_run():
    runnable = [b for b in BLOCKS if b.lang in RUNNABLE]
    assert len(runnable) >= 8
    skipped = [b for b in runnable if b.not_run]
    assert len(skipped) <= 3, [(b.line, b.not_run) for b in skipped]
    assert all(b.not_run and len(b.not_run) > 10 for b in skipped)
    assert not [b.line for b in BLOCKS if b.lang == ""], "a code block without a language: say sh, python, text..."


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.lang in RUNNABLE and not b.not_run], ids=lambda b: f"README.md:{b.line}"
)
def test_readme_block_runs_against_the_demo(demo, tmp_path, block):
    work, subst = _workdir(demo, tmp_path)
    code = block.body
    for old in sorted(subst, key=len, reverse=True):
        code = code.replace(old, subst[old])
    p = _run(block.lang, code, work, _env(tmp_path))
    assert p.returncode == 0, (
        f"README.md:{block.line} exited {p.returncode}\n{code}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    )
    _check_curl_answers(p.stdout, code)


def demo_printout_blocks(printout: str) -> list[str]:
    """The paragraphs of `guard demo`'s printout that start with a command a user pastes."""
    return [para for para in printout.split("\n\n") if re.match(r"(curl|python|guard) ", para)]


def test_every_command_guard_demo_prints_runs(demo, tmp_path):
    blocks = demo_printout_blocks(demo.printout)
    assert len(blocks) >= 6, demo.printout
    (tmp_path / "bin").mkdir()
    for name, target in (("guard", f"{sys.executable} -m guard.cli"), ("python", sys.executable)):
        (tmp_path / "bin" / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (tmp_path / "bin" / name).chmod(0o755)
    outputs = []
    for code in blocks:
        p = _run("sh", code, tmp_path, _env(tmp_path))
        assert p.returncode == 0, f"{code}\nexited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        _check_curl_answers(p.stdout, code)
        outputs.append(p.stdout)
    joined = "\n".join(outputs)
    assert "Hello from llama-3-8b" in joined  # curl and the openai SDK were answered by the model
    assert sum("Hello from llama-3-8b" in o for o in outputs) >= 2
    assert "jane@example.com" in joined  # restored in the answer
    assert "access_denied" in joined  # internal-* needs OU staff
    assert "content_denied" in joined or "pii_blocked" in joined  # a card number to an external model


def test_demo_keeps_its_files_outside_the_checkout(demo):
    assert demo.dir == demo.runtime_dir / "guard-demo"
    assert (demo.dir / "pki" / "ca.pem").exists() and (demo.dir / "audit").is_dir()
    assert ROOT not in demo.dir.parents


def test_demo_default_folder_without_a_runtime_dir(monkeypatch, tmp_path):
    import tempfile

    from guard.demo.cli import default_dir

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert default_dir() == tmp_path / f"guard-demo-{os.getuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert default_dir().parent == tmp_path


def test_readme_yaml_and_json_blocks_are_valid():
    """Configuration examples load with Guard's own schema; JSON examples parse."""
    import yaml

    from guard.audit.settings import AuditSettings

    data_blocks = [b for b in BLOCKS if b.lang in ("yaml", "json")]
    assert data_blocks
    for b in data_blocks:
        if b.lang == "json":
            json.loads(b.body)
            continue
        doc = yaml.safe_load(b.body)
        assert isinstance(doc, dict), f"README.md:{b.line}"
        if set(doc) == {"audit"}:
            AuditSettings.model_validate(doc["audit"])
