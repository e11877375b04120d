"""The in-pod reloader (deploy/k8s/*, container ``reloader``), its script taken from the gateway Deployment and
run with Python as the pod runs it, against a real Guard whose POST /admin/reload needs a token
(admin.reload_token_env): when Kubernetes swaps the ``..data`` link, the reloader asks Guard to reload with the
bearer token from GUARD_RELOAD_TOKEN; without the token Guard refuses (401), the reloader prints so, and the
refusal is counted in guard_policy_reloads_total{result="unauthorized"}."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.test_metrics import scrape, total

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "reload-token-0123456789abcdef"


def reloader_script() -> str:
    for doc in yaml.safe_load_all((ROOT / "deploy/k8s/gateway/deployment.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["name"] == "reloader":
                    assert c["command"][:2] == ["python", "-c"]
                    return c["command"][2]
    raise AssertionError("the gateway Deployment has no reloader container")


def swap(link: Path, target: Path) -> None:
    """What the kubelet does on a ConfigMap or Secret update: point ..data at a new directory, atomically."""
    tmp = link.with_name("..data_tmp")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def next_report(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if line.startswith("reload"):
                return line.strip()
    raise AssertionError("the reloader reported nothing")


@pytest.fixture
def reloader(tmp_path: Path) -> Any:
    procs: list[subprocess.Popen[str]] = []

    def start(url: str, token: str | None) -> tuple[subprocess.Popen[str], Path]:
        d = tmp_path / f"r{len(procs)}"
        (d / "a").mkdir(parents=True)
        (d / "b").mkdir()
        (d / "..data").symlink_to(d / "a")
        env = {
            "PATH": os.environ["PATH"],
            "GUARD_RELOAD_WATCH": str(d / "..data"),
            "GUARD_RELOAD_URL": url,
            "GUARD_RELOAD_EVERY_S": "0.1",
            **({"GUARD_RELOAD_TOKEN": token} if token else {}),
        }
        p = subprocess.Popen([sys.executable, "-c", reloader_script()], env=env, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        time.sleep(0.5)  # it reads the link once before watching it
        return p, d

    yield start
    for p in procs:
        p.kill()
        p.wait(10)


def test_the_reloader_sends_the_reload_token_and_a_missing_token_is_refused_and_counted(
    guard_factory, monkeypatch, reloader
):
    monkeypatch.setenv("GUARD_RELOAD_TOKEN", TOKEN)
    g = guard_factory(admin={"reload_token_env": "GUARD_RELOAD_TOKEN"})
    url = g.admin_url + "/admin/reload"
    refused = lambda: total(scrape(g.admin_url), "guard_policy_reloads_total", result="unauthorized")  # noqa: E731
    before = refused()

    with_token, d = reloader(url, TOKEN)
    swap(d / "..data", d / "b")
    report = next_report(with_token)
    assert report.startswith("reloaded:") and '"ok":true' in report.replace(" ", ""), report
    assert refused() == before

    without, d2 = reloader(url, None)
    swap(d2 / "..data", d2 / "b")
    report = next_report(without)
    assert report.startswith("reload refused: 401"), report
    assert TOKEN not in report
    assert refused() == before + 1
