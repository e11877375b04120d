"""A whole Guard stack on loopback — throwaway PKI, the built-in model server, Guard itself — for the demo,
the tests and the benchmarks. Servers run in threads with their own event loops."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from guard import pki

ROOT = Path(__file__).resolve().parents[2]  # the repository (policies/, filters/ ship beside the package)


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port to listen on, chosen below Linux's ephemeral range (32768-60999), where outgoing
    connections take their ports: a client connection cannot take it between this check and the server's
    bind. Never the same port twice in one process."""
    for _ in range(500):
        port = random.randint(20000, 32767)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """Runs uvicorn servers in a daemon thread; ``start`` waits until they listen."""

    def __init__(self, make_servers: Callable[[], list[uvicorn.Server]], use_uvloop: bool = True) -> None:
        self._make = make_servers
        self.servers: list[uvicorn.Server] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._uvloop = use_uvloop
        self.error: BaseException | None = None

    def _run(self) -> None:
        if self._uvloop:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.servers = self._make()
            loop.run_until_complete(asyncio.gather(*(s.serve() for s in self.servers)))
        except BaseException as e:
            self.error = e
        finally:
            loop.close()

    def start(self, timeout: float = 20) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error or not self.thread.is_alive():
                raise RuntimeError(f"server failed to start: {self.error!r}")
            if self.servers and all(s.started for s in self.servers):
                return self
            time.sleep(0.01)
        raise TimeoutError("server did not start")

    def stop(self, timeout: float = 10) -> None:
        for s in self.servers:
            s.should_exit = True
        self.thread.join(timeout)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the servers' loop (e.g. a reload) and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


def start_model_server(port: int | None = None, host: str = "127.0.0.1") -> tuple[Any, ServerThread, str]:
    from guard.demo.modelserver import ModelServer

    app = ModelServer()
    port = port or free_port()
    th = ServerThread(
        lambda: [
            uvicorn.Server(
                uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
            )
        ]
    ).start()
    return app, th, f"http://{host}:{port}"


def screening_filters(dest: Path, judge_url: str) -> Path:
    """The shipped filters/, copied to ``dest`` with Llama Guard pointed at ``judge_url`` (the built-in model
    server's stand-in judge, for the demo and the tests)."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "filters", dest)
    safety = dest / "safety.yaml"
    if safety.exists():
        safety.write_text(safety.read_text().replace("http://127.0.0.1:8000", judge_url))
    return dest


def make_pki(d: Path) -> dict[str, Path]:
    """CA, server certificate for localhost, and a few client identities used by the demo and tests."""
    pki.init_ca(d)
    pki.issue(d, "server", server=True, cn="localhost", san_dns=["localhost"], san_ip=["127.0.0.1"])
    pki.issue(d, "app", client=True, cn="billing-app", o=["Example Corp"], ou=["apps"])
    pki.issue(d, "staff", client=True, cn="alice", o=["Example Corp"], ou=["staff"])
    pki.issue(d, "contractor", client=True, cn="bob-contractor", o=["Example Corp"], ou=["contractors"])
    pki.issue(d, "prod-workload", client=True, cn="batch-job", san_uri=["spiffe://example.org/ns/prod/sa/batch"])
    return {"ca": d / "ca.pem", "server": d / "server.pem", "server_key": d / "server-key.pem"}


def guard_config(pki_dir: Path, upstream_url: str, port: int, admin_port: int, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {
            "cert": str(pki_dir / "server.pem"),
            "key": str(pki_dir / "server-key.pem"),
            "client_ca": str(pki_dir / "ca.pem"),
        },
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstreams": {
            "local": {"url": upstream_url, "api": "openai", "timeout_s": 10},
            "ollama": {"url": upstream_url, "api": "ollama", "timeout_s": 10},
            "anthropic": {"url": upstream_url, "api": "anthropic", "timeout_s": 10},
        },
        "routes": [
            {"model": "llama3*", "upstream": "ollama"},
            {"model": "claude*", "upstream": "anthropic"},
            {"model": "*", "upstream": "local"},
        ],
        "policy": {"model": str(ROOT / "policies/model.conf"), "rules": [str(ROOT / "policies/policy.csv")]},
        "filters": {"dir": str(ROOT / "filters")},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
