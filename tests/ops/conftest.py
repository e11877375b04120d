"""Guard as a real process (`guard serve`), for signals, workers and rotation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.demo.stack import free_port, guard_config, screening_filters, write_config

ROOT = Path(__file__).resolve().parents[2]


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("guard did not become healthy")


@dataclass
class GuardProcess:
    proc: subprocess.Popen
    url: str
    admin_url: str
    dir: Path
    config_path: Path
    pki: Path
    log: Path

    def ssl(self, name: str = "app") -> Any:
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        ctx.load_cert_chain(str(self.pki / f"{name}.pem"), str(self.pki / f"{name}-key.pem"))
        return ctx

    def client(self, name: str = "app", **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl(name), timeout=kw.pop("timeout", 20), **kw)

    def events(self) -> list[dict[str, Any]]:
        from guard.audit.layout import iter_events

        return [e for _, _, e in iter_events(self.dir / "audit")]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def guard_process(pki_dir: Path, model_server: tuple[Any, str], tmp_path: Path) -> Iterator[Any]:
    started: list[GuardProcess] = []

    def start(workers: int = 1, **overrides: Any) -> GuardProcess:
        port, admin = free_port(), free_port()
        d = tmp_path / f"p{len(started)}"
        d.mkdir()
        if "filters" not in overrides:
            overrides["filters"] = {"dir": str(screening_filters(d / "filters", model_server[1]))}
        overrides.setdefault("audit", {"dir": str(d / "audit")})
        cfg = guard_config(pki_dir, model_server[1], port, admin, workers=workers, **overrides)
        path = write_config(d / "guard.yaml", cfg)
        log = d / "guard.log"
        with open(log, "wb") as out:  # the child holds its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "guard.cli", "serve", "--config", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        g = GuardProcess(proc, f"https://localhost:{port}", f"http://127.0.0.1:{admin}", d, path, pki_dir, log)
        started.append(g)
        try:
            wait_ready(g.admin_url)
        except TimeoutError:
            proc.kill()
            raise AssertionError(log.read_text()[-3000:]) from None
        return g

    yield start
    for g in started:
        if g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait(10)
