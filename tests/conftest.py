"""Shared fixtures: a throwaway PKI, the built-in model server and Guard on loopback with real mTLS."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.config import Config
from guard.demo.modelserver import ModelServer
from guard.demo.stack import ServerThread, free_port, guard_config, make_pki, start_model_server


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_pki(d)
    return d


@pytest.fixture(scope="session")
def model_server() -> Iterator[tuple[ModelServer, str]]:
    app, th, url = start_model_server()
    yield app, url
    th.stop()


@dataclass
class GuardHandle:
    url: str
    admin_url: str
    pki: Path
    config: Config
    runtime: Any
    thread: ServerThread
    extra: dict[str, Any] = field(default_factory=dict)

    def cert(self, name: str = "app") -> tuple[str, str]:
        return str(self.pki / f"{name}.pem"), str(self.pki / f"{name}-key.pem")

    def ssl_context(self, name: str | None = "app") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        if name:
            ctx.load_cert_chain(*self.cert(name))
        return ctx

    def client(self, name: str | None = "app", **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(name), timeout=kw.pop("timeout", 10), **kw)

    def openai(self, name: str = "app", **kw: Any) -> Any:
        import openai

        return openai.OpenAI(
            base_url=self.url + "/v1",
            api_key="client-secret-key",
            http_client=httpx.Client(verify=self.ssl_context(name)),
            max_retries=0,
            **kw,
        )

    def async_openai(self, name: str = "app", **kw: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(
            base_url=self.url + "/v1",
            api_key="client-secret-key",
            http_client=httpx.AsyncClient(verify=self.ssl_context(name)),
            max_retries=0,
            **kw,
        )

    def stop(self) -> None:
        self.thread.stop()


def start_guard(
    pki: Path,
    upstream_url: str,
    tmp: Path,
    *,
    runtime_kw: dict[str, Any] | None = None,
    http: str = "httptools",
    judge_url: str | None = None,
    **overrides: Any,
) -> GuardHandle:
    """Guard on loopback with the shipped policy and filters (Llama Guard pointed at the model server's judge)."""
    from guard.config import load_config
    from guard.demo.stack import screening_filters, write_config

    # In-flight exchanges a test left behind get 2 s when the test ends (the product default is 30 s).
    overrides.setdefault("shutdown_deadline_s", 2)
    if "filters" not in overrides:
        overrides["filters"] = {"dir": str(screening_filters(tmp / "filters", judge_url or upstream_url))}
    from guard.runtime import Runtime
    from guard.serve import admin_server, public_server

    port, admin_port = free_port(), free_port()
    cfg_path = write_config(tmp / "guard.yaml", guard_config(pki, upstream_url, port, admin_port, **overrides))
    cfg = load_config(cfg_path)
    rt = Runtime(cfg, **(runtime_kw or {}))
    rt.load()
    th = ServerThread(lambda: [public_server(rt, http), admin_server(rt)]).start()
    return GuardHandle(f"https://localhost:{port}", f"http://127.0.0.1:{admin_port}", pki, cfg, rt, th)


@pytest.fixture
def guard_factory(
    pki_dir: Path, model_server: tuple[ModelServer, str], tmp_path: Path
) -> Iterator[Callable[..., GuardHandle]]:
    started: list[GuardHandle] = []

    def make(**kw: Any) -> GuardHandle:
        upstream = kw.pop("upstream_url", model_server[1])
        sub = tmp_path / f"g{len(started)}"
        sub.mkdir()
        h = start_guard(pki_dir, upstream, sub, judge_url=model_server[1], **kw)
        started.append(h)
        return h

    yield make
    for h in started:
        h.stop()


@pytest.fixture(scope="module")
def guard(
    pki_dir: Path, model_server: tuple[ModelServer, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuardHandle]:
    h = start_guard(pki_dir, model_server[1], tmp_path_factory.mktemp("guard"))
    yield h
    h.stop()
