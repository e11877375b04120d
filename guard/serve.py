"""Running Guard: the public mTLS listener and the admin listener in one event loop per worker, signals,
and the supervisor that forks workers sharing both listening sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn

from guard import gc_tuning
from guard.app import GuardApp, admin_app
from guard.compat.uvicorn_protocols import QuietServer, bound_port
from guard.config import Config, ConfigError
from guard.procs import die_with_parent
from guard.runtime import Runtime
from guard.server import protocol_class

log = logging.getLogger("guard.serve")


def public_server(rt: Runtime, http: str = "httptools") -> QuietServer:
    cfg = rt.config
    app = GuardApp(rt.services(), rt)
    tls_front = rt.tls.front
    ucfg = uvicorn.Config(
        app,
        host=cfg.listen.host,
        port=cfg.listen.port,
        http=protocol_class(http),
        ssl_context_factory=(lambda _c, _d: tls_front) if tls_front is not None else None,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=cfg.shutdown_deadline_s or None,  # type: ignore[arg-type]  # a float: uvicorn hands it to asyncio.wait_for
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=65536,
        backlog=4096,
        proxy_headers=False,
    )  # client address from the socket: X-Forwarded-For is not trusted
    return QuietServer(ucfg)


def admin_tls(cfg: Config) -> Any:
    """With ``console.client_ca`` the admin listener speaks TLS with the server certificate and asks for a
    client certificate signed by that CA; asks, not requires: probes and token users have none."""
    c = cfg.console
    if not (c.enabled and c.client_ca is not None):
        return None
    import ssl

    from guard.server import build_server_context

    try:
        ctx = build_server_context(cfg.tls.cert, cfg.tls.key, c.client_ca, cfg.tls.crl, cfg.tls.min_version)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{cfg.source or 'config'}: console.client_ca: cannot load: {e}") from None
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def admin_server(rt: Runtime) -> QuietServer:
    cfg = rt.config
    ctx = admin_tls(cfg)
    ucfg = uvicorn.Config(
        admin_app(rt),
        host=cfg.admin.host,
        port=cfg.admin.port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        http=protocol_class("h11") if ctx is not None else "auto",
        ssl_context_factory=(lambda _c, _d: ctx) if ctx is not None else None,
        timeout_graceful_shutdown=cfg.shutdown_deadline_s or None,  # type: ignore[arg-type]  # see public_server
    )
    return QuietServer(ucfg)


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def announce(cfg: Config, workers: int, public_port: int | None = None, admin_port: int | None = None) -> str:
    """The start-up line on stderr: where Guard listens (public and admin URLs) and with how many workers."""
    from guard import __version__

    public = _url("https" if cfg.tls.enabled else "http", cfg.listen.host, public_port or cfg.listen.port)
    mode = "mTLS, client certificate required" if cfg.tls.enabled else "plain HTTP, no client certificates"
    admin_scheme = "https" if cfg.console.enabled and cfg.console.client_ca is not None else "http"
    admin = (
        _url(admin_scheme, cfg.admin.host, admin_port or cfg.admin.port)
        + " (/healthz /readyz /metrics"
        + (" /console/" if cfg.console.enabled else "")
        + ")"
        if cfg.admin.enabled
        else "off"
    )
    line = (
        f"guard {__version__}: listening on {public} ({mode}); admin {admin}; "
        f"{workers} worker{'s' if workers != 1 else ''}"
    )
    print(line, file=sys.stderr, flush=True)
    return line


async def _announce_when_listening(rt: Runtime, servers: list[QuietServer], tasks: list[asyncio.Task[Any]]) -> None:
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            return  # a listener failed to start: uvicorn has said why
        await asyncio.sleep(0.01)
    announce(rt.config, 1, bound_port(servers[0]), bound_port(servers[1]) if len(servers) > 1 else None)


async def serve(
    rt: Runtime, http: str = "httptools", sockets: tuple[socket.socket, socket.socket] | None = None
) -> int:
    """Serve until SIGTERM/SIGINT (graceful: in-flight requests and streams get shutdown_deadline_s), SIGHUP
    reloads policies, filters and TLS files."""
    pub = public_server(rt, http)
    servers = [pub] + ([admin_server(rt)] if rt.config.admin.enabled else [])
    loop = asyncio.get_running_loop()
    background: set[asyncio.Task[Any]] = set()  # strong references: the loop holds tasks only weakly

    def keep(task: asyncio.Task[Any]) -> None:
        background.add(task)
        task.add_done_callback(background.discard)

    def stop() -> None:
        for s in servers:
            s.should_exit = True

    def hup() -> None:
        keep(loop.create_task(rt.reload()))

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        loop.add_signal_handler(signal.SIGHUP, hup)
    socks: list[Any] = [[sockets[0]], [sockets[1]]] if sockets else [None, None]
    tasks = [asyncio.create_task(s.serve(sockets=socks[i])) for i, s in enumerate(servers)]
    if sockets is None:  # one process; a supervisor announces its workers itself
        keep(loop.create_task(_announce_when_listening(rt, servers, tasks)))
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0 if all(s.started for s in servers) else 1


SWITCH_INTERVAL_S = 0.0002  # see _install_uvloop


def _install_uvloop() -> None:
    """uvloop, and a shorter GIL switch interval: large screens and parses run in worker threads, and each
    time the event loop wakes it waits for the GIL until the thread holding it is asked to let go (5 ms by
    default; 0.2 ms here keeps other clients' latency low while a hostile megabyte is screened: ordinary
    p99 under hostile load about a quarter lower than with 1 ms, tests/bench/bench_hostile.py)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def run_single(cfg: Config, **runtime_kw: Any) -> int:
    """One process: load, tune the collector, serve. ``runtime_kw`` go to Runtime (the benchmark's unaudited
    Guard passes a recorder that records nothing)."""
    rt = Runtime(cfg, **runtime_kw)
    rt.load()
    gc_tuning.tune()
    _install_uvloop()
    return asyncio.run(serve(rt))


def _bind(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(4096)
    s.set_inheritable(True)
    return s


def _child(cfg: Config, worker: int, socks: tuple[socket.socket, socket.socket], master: int) -> None:
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        die_with_parent(master)
        rt = Runtime(cfg, worker=worker)
        rt.supervised = True
        rt.load()
        gc_tuning.tune()
        _install_uvloop()
        code = asyncio.run(serve(rt, sockets=socks))
    except ConfigError as e:  # a file a person wrote: the supervisor stops and exits 2
        print(f"guard: {e}", file=sys.stderr)
        code = 2
    except BaseException:
        log.exception("worker %d failed", worker)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_workers(cfg: Config, workers: int) -> int:
    """Fork ``workers`` processes sharing the listening sockets; restart a worker that dies; forward SIGTERM
    and SIGHUP. Each worker writes its own audit chain (audit.writer_id includes the worker index)."""
    from guard.policy.holder import PolicyHolder

    # A bad policy refuses to start (exit 2) before forking. The screening profiles are loaded by each worker
    # only: building them here would import Presidio/torch, whose threads must not exist across a fork.
    PolicyHolder.from_settings(cfg.policy)
    socks = (_bind(cfg.listen.host, cfg.listen.port), _bind(cfg.admin.host, cfg.admin.port))
    announce(cfg, workers, socks[0].getsockname()[1], socks[1].getsockname()[1])
    children: dict[int, int] = {}
    stopping = False
    keeper = _start_keeper(cfg, workers)  # (pid, socket path) of the memory quota keeper, or None

    def spawn(i: int) -> None:
        master = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child(cfg, i, socks, master)
        children[pid] = i

    def forward(sig: int, _frame: Any = None) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if sig == signal.SIGINT else sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(workers):
        spawn(i)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if keeper is not None and pid == keeper[0]:
            if not stopping:
                log.error(
                    "quota keeper exited (%s); restarting it with empty counters", os.waitstatus_to_exitcode(status)
                )
                keeper = _start_keeper(cfg, workers, keeper[1])
            continue
        slot = children.pop(pid, None)
        rc = os.waitstatus_to_exitcode(status)
        if rc == 2 and not stopping:  # a worker refused its configuration: restarting cannot help
            stopping, code = True, 2
            forward(signal.SIGTERM)
        elif slot is not None and not stopping:
            log.error("worker %d exited (%s); restarting it", slot, rc)
            time.sleep(0.5)
            spawn(slot)
        elif rc != 0 and code == 0:
            code = 1
    if keeper is not None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(keeper[0], signal.SIGTERM)
            os.waitpid(keeper[0], 0)
        with contextlib.suppress(OSError):
            os.unlink(keeper[1])
            os.rmdir(os.path.dirname(keeper[1]))
    return code


def _start_keeper(cfg: Config, workers: int, path: str | None = None) -> tuple[int, str] | None:
    """Several workers and memory quotas: fork the keeper that holds the counters (guard.quota.local) and
    name its socket to the workers forked after it."""
    if cfg.quotas is None or cfg.quotas.backend != "memory" or workers < 2:
        return None
    from guard.quota import local

    pid, local.SOCKET = local.start_keeper(path)
    local.wait_ready(local.SOCKET)
    return pid, local.SOCKET
