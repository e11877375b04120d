"""CPU per request of Guard's pipeline in-process (no uvicorn, no load generator): where the time goes.

Drives Pipeline with an ASGI scope against a real upstream (nginx with a fixed completion, else the
built-in model server), N sequential requests per variant (two alternating rounds, the best kept), and reports process CPU (the journal's writer
thread included) per request:
  full        shipped policy, signed journal (durability batch), metrics on
  no-metrics  as full, request-path metrics off
  no-journal  as full, audit recorder that writes nothing
  bare        no journal and an allow-all policy
Run: python -m tests.bench.bench_pipeline_cpu [N]
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.common import CHAT_BODY, FIXED_COMPLETION, NGINX, XFCC, free_port, have, nginx_conf, wait_port


class _NullRecorder:
    async def started(self, ex: Any) -> None:
        pass

    async def finished(self, ex: Any, kind: str, outcome: dict[str, Any]) -> None:
        pass


async def _measure(variant: str, cfg_path: Path, n: int) -> float:
    from guard import telemetry
    from guard.config import load_config
    from guard.pipeline import Pipeline
    from guard.runtime import AllowAll, Runtime

    telemetry.configure(variant != "no-metrics")
    rt = Runtime(load_config(cfg_path), recorder=_NullRecorder() if variant in ("no-journal", "bare") else None,
                 policy=AllowAll() if variant == "bare" else None)
    rt.load()
    svc = rt.services()
    pipe = Pipeline(svc)
    body = CHAT_BODY.encode()
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "client": ("127.0.0.1", 5555),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"x-forwarded-client-cert", XFCC.encode())]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_: dict[str, Any]) -> None:
        pass

    for _ in range(200):
        await pipe(scope, receive, send)
    t = time.process_time()
    for _ in range(n):
        await pipe(scope, receive, send)
    us = (time.process_time() - t) / n * 1e6
    await svc.upstreams.close()
    if rt.journal is not None:
        rt.journal.close()
    telemetry.configure(True)
    return us


def run(quick: bool = False) -> dict[str, Any]:
    import uvloop

    from tests.bench.run import guard_config

    n = 1000 if quick else 3000
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        port = free_port()
        if have("nginx"):
            conf = nginx_conf(d / "ng", f"""  server {{ listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{FIXED_COMPLETION}'; }} }}""")
            up = subprocess.Popen([NGINX, "-c", str(conf)])
        else:
            up = subprocess.Popen([sys.executable, "-m", "uvicorn", "guard.demo.modelserver:ModelServer", "--factory",
                                   "--port", str(port), "--log-level", "warning"])
        try:
            wait_port(port)
            cfg = guard_config(d, f"http://127.0.0.1:{port}", False, free_port(), free_port())
            out: dict[str, Any] = {}
            for _round in range(2):  # alternate the variants and keep each one's best: the box is noisy
                for variant in ("full", "no-metrics", "no-journal", "bare"):
                    us = uvloop.run(_measure(variant, cfg, n))
                    out[variant] = round(min(us, out.get(variant, us)), 1)
                    print(f"  {variant:11s} {us:7.1f} us CPU per request", file=sys.stderr)
        finally:
            up.terminate()
            up.wait(10)
    out["journal_us"] = round(out["full"] - out["no-journal"], 1)
    out["metrics_us"] = round(out["full"] - out["no-metrics"], 1)
    out["policy_us"] = round(out["no-journal"] - out["bare"], 1)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
