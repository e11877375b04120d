"""Benchmark plumbing: processes, nginx configs, wrk runs and their parsing, RSS."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

CHAT_BODY = (
    '{"model":"bench-model","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16}'
)
FIXED_COMPLETION = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench-model",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark."},'
    '"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":3,"total_tokens":11}}'
)
XFCC = 'Hash=00;Subject="CN=bench-app,OU=apps,O=Example";URI=spiffe://example.org/ns/dev/sa/bench'


def free_port() -> int:
    from guard.demo.stack import free_port as pick

    return pick()


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@contextmanager
def process(
    cmd: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None, wait: float = 30
) -> Iterator[subprocess.Popen]:
    with open(log or os.devnull, "wb") as out:  # the child holds its own copy of the descriptor
        p = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_port(port, wait)
        yield p
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)
        except Exception:
            os.killpg(p.pid, signal.SIGKILL)


def model_server_cmd(port: int) -> list[str]:
    """The built-in model server (guard.demo.modelserver) as a process of its own on ``port``."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "guard.demo.modelserver:ModelServer",
        "--factory",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None or Path(f"/usr/sbin/{cmd}").exists()


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_conf(d: Path, servers: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
{servers}
}}
""")
    return conf


def wrk_script(d: Path, body: str, headers: dict[str, str]) -> Path:
    lua = d / "post.lua"
    hdr = "\n".join(f'wrk.headers["{k}"] = [[{v}]]' for k, v in headers.items())
    lua.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{body}]]\nwrk.headers["Content-Type"] = "application/json"\n{hdr}\n'
    )
    return lua


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(url: str, script: Path, conns: int, seconds: float, threads: int = 1) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{min(threads, conns)}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": _ms(p50.group(1)) if p50 else float("nan"),
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errs.group(1) if errs else "",
    }


def paced(
    url: str,
    body: str,
    headers: dict[str, str],
    conns: int,
    rate_per_conn: float,
    seconds: float,
    tls: tuple[Path, Path, Path] | None = None,
) -> dict[str, float]:
    """Paced load with precise latencies (tests/bench/paced_client.py, in its own process); ``tls``: the
    client certificate, its key and the CA, used only for an https URL."""
    import json

    out = subprocess.run(
        [
            PY,
            "-m",
            "tests.bench.paced_client",
            url,
            body,
            json.dumps(headers),
            str(conns),
            str(rate_per_conn),
            str(seconds),
            *map(str, tls or ()),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        cwd=Path(__file__).resolve().parents[2],
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    r = json.loads(out.stdout)
    r.pop("lat_ms", None)  # every latency: only the benchmarks that pool phases keep them (bench_hostile)
    return r


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it (/proc/PID/task/*/children); processes that are gone are skipped."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):  # gone
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
    return out


def workers_cpu(pid: int) -> float:
    """CPU seconds of a Guard server's own processes: ``pid`` and its descendants, except audit sealer
    processes (their CPU is the audit's, and with one worker they run on the other core)."""
    total = 0.0
    for p in tree(pid):
        try:
            if b"guard.audit.sealer" not in Path(f"/proc/{p}/cmdline").read_bytes():
                total += proc_cpu(p)
        except OSError:
            pass  # gone
    return total


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return round(total, 1)


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)
