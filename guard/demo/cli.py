"""`guard demo`: a throwaway PKI, the built-in model server and Guard with the shipped policies/ and
filters/, all on loopback; prints commands to try. `guard demo --check` runs a scripted tour against it and
exits 0 only if every step behaved as expected."""

from __future__ import annotations

import argparse
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.demo.stack import (
    ROOT,
    free_port,
    make_pki,
    screening_filters,
    start_model_server,
    write_config,
)


@dataclass
class Demo:
    dir: Path
    url: str
    admin: str
    model_url: str
    config: Path
    runtime: Any
    threads: list[Any]
    model: Any

    def stop(self) -> None:
        for t in reversed(self.threads):
            t.stop()


def start_demo(d: Path, port: int, admin_port: int, model_port: int) -> Demo:
    from guard.config import load_config
    from guard.demo.stack import ServerThread
    from guard.runtime import Runtime
    from guard.serve import admin_server, public_server

    d.mkdir(parents=True, exist_ok=True)
    pki_dir = d / "pki"
    if not (pki_dir / "app.pem").exists():
        make_pki(pki_dir)
    keys = d / "audit-keys"
    if not (keys / "signing-key.pem").exists():
        from guard.audit.seal import keygen

        keygen(keys)
    model, mth, model_url = start_model_server(model_port)
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {"cert": "pki/server.pem", "key": "pki/server-key.pem", "client_ca": "pki/ca.pem"},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstreams": {
            "local": {"url": model_url, "api": "openai"},
            "local-ollama": {"url": model_url, "api": "ollama"},
            "cloud": {"url": model_url, "api": "openai", "external": True},
        },
        "routes": [
            {"model": "llama3*", "upstream": "local-ollama"},
            {"model": "gpt-*", "upstream": "cloud"},
            {"model": "*", "upstream": "local"},
        ],
        "policy": {"model": str(ROOT / "policies/model.conf"), "rules": [str(ROOT / "policies/policy.csv")]},
        "filters": {"dir": str(screening_filters(d / "filters", model_url))},
        "audit": {"dir": "audit", "signing_key": "audit-keys/signing-key.pem"},
    }
    path = write_config(d / "guard.yaml", cfg)
    rt = Runtime(load_config(path))
    rt.load()
    gth = ServerThread(lambda: [public_server(rt), admin_server(rt)]).start()
    return Demo(
        d, f"https://localhost:{port}", f"http://127.0.0.1:{admin_port}", model_url, path, rt, [mth, gth], model
    )


def instructions(demo: Demo) -> str:
    """What `guard demo` prints. Each paragraph that starts with a command (``curl``, ``python``, ``guard``) is
    a block a user can paste as it is; tests/core/test_readme_blocks.py runs every one against the demo."""
    p = demo.dir / "pki"
    curl = (
        f"curl --cacert {p}/ca.pem --cert {p}/app.pem --key {p}/app-key.pem \\\n"
        f"     {demo.url}/v1/chat/completions -H 'content-type: application/json' \\\n"
    )
    return f"""
Guard demo is running.
  Guard (mTLS)      {demo.url}
  admin (metrics)   {demo.admin}/metrics
  model server      {demo.model_url}
  config            {demo.config}
  audit journal     {demo.dir / "audit"}

Try it with curl (client certificate of OU "apps"):

{curl}     -d '{{"model": "llama-3-8b", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

What the model saw, and what came back: jane@example.com is pseudonymized on the way in, restored on the way out:

{curl}     -d '{{"model": "llama-3-8b", "messages": [{{"role": "user", "content": "[[echo]] Mail jane@example.com"}}]}}'

Denied by policy (internal-* models need OU staff):

{curl}     -d '{{"model": "internal-finance", "messages": [{{"role": "user", "content": "Q3 numbers?"}}]}}'

A card number may not go to an external model:

{curl}     -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "card 4012888888881881"}}]}}'

With the openai SDK (the client certificate goes in an ssl.SSLContext):

python - <<'PY'
import ssl, httpx, openai
ctx = ssl.create_default_context(cafile="{p}/ca.pem")
ctx.load_cert_chain("{p}/app.pem", "{p}/app-key.pem")
client = openai.OpenAI(base_url="{demo.url}/v1", api_key="unused", http_client=httpx.Client(verify=ctx))
print(client.chat.completions.create(model="llama-3-8b",
      messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)
PY

Verify the audit trail:

guard audit verify {demo.dir / "audit"} --public-key {demo.dir / "audit-keys"}

Ctrl-C stops the demo; its files stay in {demo.dir} (delete it to start afresh).
"""


def default_dir() -> Path:
    """Where the demo keeps its throwaway files: outside any checkout, in the user's runtime folder
    ($XDG_RUNTIME_DIR) or else the system's temporary folder."""
    import os
    import tempfile

    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "guard-demo"
    return Path(tempfile.gettempdir()) / f"guard-demo-{os.getuid()}"


def _run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level="WARNING")
    if args.check:
        import tempfile

        from guard.demo.tour import run_tour

        with tempfile.TemporaryDirectory() as tmp:
            demo = start_demo(Path(tmp), free_port(), free_port(), free_port())
            try:
                return run_tour(demo)
            finally:
                demo.stop()
    demo = start_demo(Path(args.dir) if args.dir else default_dir(), args.port, args.admin_port, args.model_port)
    print(instructions(demo), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    demo.stop()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run Guard with a built-in model server and a throwaway PKI")
    p.add_argument("--check", action="store_true", help="run the scripted tour and exit 0 only if all steps pass")
    p.add_argument(
        "--dir",
        default=None,
        help="where the demo keeps its PKI, config and audit journal (default: $XDG_RUNTIME_DIR/guard-demo, "
        "else a folder in the system's temporary directory)",
    )
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--admin-port", type=int, default=9090)
    p.add_argument("--model-port", type=int, default=8000)
    p.set_defaults(func=_run)
