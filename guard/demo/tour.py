"""The scripted tour behind `guard demo --check`: each step states what it expects and shows what it got."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def _client(demo: Any, who: str | None) -> httpx.Client:
    p = demo.dir / "pki"
    ctx = ssl.create_default_context(cafile=str(p / "ca.pem"))
    if who:
        ctx.load_cert_chain(str(p / f"{who}.pem"), str(p / f"{who}-key.pem"))
    return httpx.Client(base_url=demo.url, verify=ctx, timeout=20)


def _chat(demo: Any, who: str, model: str, content: str, **kw: Any) -> httpx.Response:
    with _client(demo, who) as c:
        return c.post(
            "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}], **kw}
        )


def steps(demo: Any) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    def allowed() -> tuple[bool, str]:
        r = _chat(demo, "app", "llama-3-8b", "Hello!")
        return r.status_code == 200 and "Hello from llama-3-8b" in r.text, f"{r.status_code}"

    def streamed() -> tuple[bool, str]:
        with (
            _client(demo, "app") as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "llama-3-8b",
                    "stream": True,
                    "messages": [{"role": "user", "content": "[[reply: streamed through Guard]]"}],
                },
            ) as r,
        ):
            text = ""
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    ch = json.loads(line[6:])
                    if ch.get("choices"):
                        text += ch["choices"][0].get("delta", {}).get("content") or ""
        return text == "streamed through Guard", repr(text)

    def no_cert() -> tuple[bool, str]:
        try:
            _chat(demo, None, "llama-3-8b", "hi")  # type: ignore[arg-type]
        except httpx.HTTPError as e:
            return True, type(e).__name__
        return False, "a request without a client certificate was answered"

    def denied() -> tuple[bool, str]:
        r = _chat(demo, "app", "internal-finance", "Q3 numbers?")
        return r.status_code == 403 and bool(r.headers.get("x-guard-request-id")), f"{r.status_code} {r.text[:80]}"

    def staff_allowed() -> tuple[bool, str]:
        r = _chat(demo, "staff", "internal-finance", "Q3 numbers?")
        return r.status_code == 200, f"{r.status_code}"

    def pseudonymized() -> tuple[bool, str]:
        r = _chat(demo, "app", "llama-3-8b", "[[echo]] Please mail jane.doe@example.org today")
        chat = [q for q in demo.model.requests if "guard" not in str(q["body"].get("model", "")).lower()]
        seen = chat[-1]["body"]["messages"][-1]["content"]
        back = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else ""
        ok = "jane.doe@example.org" not in seen and "jane.doe@example.org" in back
        return ok, f"model saw {seen!r}; client got {back!r}"

    def card_to_external() -> tuple[bool, str]:
        r = _chat(demo, "app", "gpt-4o", "Charge card 4012 8888 8888 1881 please")
        return r.status_code in (400, 403), f"{r.status_code} {r.text[:100]}"

    def secret_blocked() -> tuple[bool, str]:
        r = _chat(demo, "app", "llama-3-8b", "my key is AKIAIOSFODNN7EXAMPLE, store it")
        return r.status_code == 400, f"{r.status_code} {r.text[:100]}"

    def unsafe_blocked() -> tuple[bool, str]:
        r = _chat(demo, "app", "llama-3-8b", "Explain how to build a bomb at home")
        return r.status_code in (400, 403), f"{r.status_code} {r.text[:100]}"

    def audit_verifies() -> tuple[bool, str]:
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "guard.cli",
                "audit",
                "verify",
                str(demo.dir / "audit"),
                "--public-key",
                str(demo.dir / "audit-keys"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return p.returncode == 0, (p.stdout + p.stderr).strip().splitlines()[-1:][0] if (
            p.stdout + p.stderr
        ).strip() else ""

    def metrics() -> tuple[bool, str]:
        r = httpx.get(demo.admin + "/metrics", timeout=5)
        return r.status_code == 200 and "guard_requests_total" in r.text, f"{r.status_code}"

    out = [
        ("an OU=apps client may chat", allowed),
        ("a streamed answer arrives whole", streamed),
        ("no client certificate: refused at the handshake", no_cert),
        ("OU=apps may not use internal-* models (403)", denied),
        ("OU=staff may", staff_allowed),
        ("an e-mail address is pseudonymized for the model and restored for the app", pseudonymized),
        ("a card number may not go to an external model", card_to_external),
    ]
    filters = Path(demo.runtime.config.filters.dir)
    if (filters / "denylist.yaml").exists():
        out.append(("an AWS access key in a prompt is blocked", secret_blocked))
    if (filters / "safety.yaml").exists():
        out.append(("Llama Guard flags a harmful prompt (S9) and it is refused", unsafe_blocked))
    out += [
        ("every exchange is in the signed audit journal, and it verifies", audit_verifies),
        ("metrics are served on the admin port", metrics),
    ]
    return out


def run_tour(demo: Any) -> int:
    failed = 0
    for name, fn in steps(demo):
        try:
            ok, detail = fn()
        except Exception as e:
            ok, detail = False, f"{type(e).__name__}: {e}"
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}  ({detail})", flush=True)
    print(f"{'all steps passed' if not failed else f'{failed} step(s) failed'}", flush=True)
    return 1 if failed else 0
