"""The audit journal as Guard writes it through the real proxy (mTLS, shipped policy and screens).

Every event validates against audit/event.schema.json, `guard audit verify` passes with the public key, every
request id a client saw has its record, decisions name the deciding rule and policy version, screens record
entity types and counts but never values, shadow decisions are recorded, and nothing secret is written.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from guard.audit.schema import journal_errors
from guard.audit.seal import keygen
from guard.demo.stack import ROOT, free_port, guard_config, screening_filters, write_config
from tests.audit.proxy_helpers import CHAT, GUARD, by_request, chat, journal_bytes, journal_events, metric, verify

ROUTES = [{"model": "gpt-*", "upstream": "local"}, {"model": "internal-*", "upstream": "local"}]
SSN = "536-22-1120"  # Presidio deliberately rejects the well-known sample 078-05-1120 (and 123-45-6789)
EMAIL = "bob.jones@example.com"
AKIA = "AKIAIOSFODNN7EXAMPLE"


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub, _ = keygen(tmp_path / "audit-keys")  # outside audit.dir, as the README asks
    return priv, pub


def _audit(tmp_path: Path, priv: Path, **kw: Any) -> dict[str, Any]:
    return {"dir": str(tmp_path / "audit"), "signing_key": str(priv), "checkpoint_events": 5, **kw}


def _intact(root: Path, pub: Path) -> dict[str, Any]:
    rc, doc = verify(root, pub)
    assert rc == 0 and doc["ok"], doc
    assert all(c["status"] == "ok" or c.get("broken") is None for c in doc["chains"]), doc
    return doc


def test_every_event_of_every_kind_of_exchange_is_valid_signed_and_accounted_for(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    priv, pub = _keys(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    g = guard_factory(
        routes=[*ROUTES, {"model": "dead-*", "upstream": "dead"}],
        audit=_audit(tmp_path, priv),
        upstreams={"dead": {"url": dead, "api": "openai", "timeout_s": 2}},
    )
    version = g.runtime.policy.version
    auth = {"authorization": "Bearer client-secret-0f1e2d3c4b5a"}
    seen: dict[str, tuple[str, httpx.Response]] = {}  # request id -> (case, response)

    def note(case: str, r: httpx.Response) -> httpx.Response:
        rid = r.headers.get("x-guard-request-id")
        assert rid, f"{case}: no x-guard-request-id"
        seen[rid] = (case, r)
        return r

    with g.client("app") as c:
        assert note("allowed", chat(c, "Hello [[reply: hi there]]", headers=auth)).status_code == 200
        with c.stream(
            "POST",
            CHAT,
            headers=auth,
            json={
                "model": "gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": "Tell me a story [[chunks=4]]"}],
            },
        ) as s:
            body = s.read()
            assert s.status_code == 200 and body.rstrip().endswith(b"data: [DONE]")
            note("streamed", s)
        assert note("email", chat(c, f"Write to {EMAIL} please", headers=auth)).status_code == 200
        r = note("policy", chat(c, "Hi", model="internal-finance", headers=auth))
        assert r.status_code == 403 and r.json()["error"]["code"] == "access_denied"
        r = note("pii", chat(c, f"my social security number is {SSN}", headers=auth))
        assert r.status_code == 400 and r.json()["error"]["code"] == "pii_blocked"
        r = note("secret", chat(c, f"use the key {AKIA} for it", headers=auth))
        assert r.status_code == 400 and r.json()["error"]["code"] == "secret_blocked"
        r = note("safety", chat(c, "how to build a bomb", headers=auth))
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsafe_content"
        r = note("unrouted", chat(c, "Hi", model="no-such-model", headers=auth))
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = note(
            "badjson",
            c.post(CHAT, content=b'{"model": "gpt-4o", ', headers={**auth, "content-type": "application/json"}),
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        assert note("models", c.get("/v1/models", headers=auth)).status_code == 200
        r = note("mediatype", c.post(CHAT, content=b"{}", headers={**auth, "content-type": "text/plain"}))
        assert r.status_code == 415
        r = note("unreachable", chat(c, "Hi", model="dead-model", headers=auth))
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
        with c.stream(
            "POST",
            CHAT,
            headers=auth,
            json={
                "model": "gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": "Go on [[forever]] [[delay_ms=20]]"}],
            },
        ) as s:
            assert s.status_code == 200 and next(s.iter_bytes())
            note("abandoned", s)  # the client goes away mid-stream
    with g.client("staff") as c:
        assert note("staff", chat(c, "Hello", model="internal-finance", headers=auth)).status_code == 200
    g.stop()  # closes the journal: guard.stopped and the final checkpoint

    root = Path(g.config.audit.dir)
    assert journal_errors(root) == []
    doc = _intact(root, pub)
    assert all(c["closed"] and not c["torn"] for c in doc["chains"]), doc
    events = journal_events(root)
    types = {e["type"] for e in events}
    assert {"config.loaded", "guard.started", "guard.stopped", "audit.checkpoint"} <= types
    recs = by_request(events)
    cases = {case: recs.get(rid, {}) for rid, (case, _) in seen.items()}
    assert all(cases.values()), {c: rid for rid, (c, _) in seen.items() if not recs.get(rid)}

    for case in ("allowed", "streamed", "email", "staff"):
        rec = cases[case]
        assert set(rec) == {"exchange.started", "exchange.completed"}, (case, set(rec))
        st, done = rec["exchange.started"], rec["exchange.completed"]
        assert st["seq"] < done["seq"] and st["trace_id"] == done["trace_id"]
        assert done["outcome"]["status"] == 200 and done["outcome"]["bytes"] > 0
        for stage in ("access", "content"):
            d = st["decisions"][stage]
            assert d["effect"] == "allow" and d["rule"].startswith("policies/policy.csv:")
            assert d["policy_version"] == version
        assert st["principal"]["cn"] in ("billing-app", "alice") and st["principal"]["fingerprint"]
        assert "prompt_hmac" in st["content"] and st["content"]["capture"] == "hash"
        assert [s["name"] for s in st["screens"]] == ["denylist", "pii", "safety"]
    assert cases["allowed"]["exchange.started"]["decisions"]["access"]["rule"] == "policies/policy.csv:4"
    assert cases["staff"]["exchange.started"]["decisions"]["access"]["rule"] == "policies/policy.csv:9"
    assert cases["streamed"]["exchange.completed"]["stream"] is True
    assert cases["streamed"]["exchange.completed"]["outcome"]["finish_reason"] == "stop"
    assert cases["allowed"]["exchange.completed"]["usage"]["total_tokens"] > 0
    failed = cases["unreachable"]  # decided and recorded durably, then the upstream failed: a closing record too
    assert "exchange.started" in failed and failed["exchange.started"]["upstream"] == "dead"
    assert set(failed) == {"exchange.started", "exchange.completed"}, set(failed)
    assert failed["exchange.completed"]["outcome"]["status"] == 502
    gone = cases["abandoned"]
    assert set(gone) == {"exchange.started", "exchange.completed"}, set(gone)
    assert gone["exchange.completed"]["outcome"]["status"] == 499 and gone["exchange.completed"]["outcome"]["bytes"] > 0
    pii = next(s for s in cases["email"]["exchange.started"]["screens"] if s["name"] == "pii")
    assert pii["entities"] == {"EMAIL_ADDRESS": 1} and pii["action"] == "pseudonymize" and not pii["blocked"]
    models = cases["models"]["exchange.completed"]
    assert models["operation"] == "models" and models["decisions"]["access"]["effect"] == "allow"

    denied = {
        "policy": ("access", "access_denied", 403),
        "pii": ("screen", "pii_blocked", 400),
        "secret": ("screen", "secret_blocked", 400),
        "safety": ("screen", "unsafe_content", 400),
        "unrouted": ("request", "model_not_found", 404),
        "badjson": ("request", "invalid_json", 400),
        "mediatype": ("request", "unsupported_media_type", 415),
    }
    for case, (stage, code, status) in denied.items():
        rec = cases[case]
        assert set(rec) == {"exchange.denied"}, (case, set(rec))  # nothing went upstream: no exchange.started
        e = rec["exchange.denied"]
        assert e["denial"] == {"stage": stage, "code": code} and e["outcome"]["status"] == status, (case, e)
    d = cases["policy"]["exchange.denied"]["decisions"]["access"]
    assert d == {**d, "effect": "deny", "rule": "policies/policy.csv:8", "policy_version": version}
    for case in ("pii", "secret", "safety"):
        assert cases[case]["exchange.denied"]["decisions"]["access"]["rule"] == "policies/policy.csv:4"
    screens = {
        case: {s["name"]: s for s in cases[case]["exchange.denied"]["screens"]} for case in ("pii", "secret", "safety")
    }
    assert screens["pii"]["pii"]["entities"] == {"US_SSN": 1} and screens["pii"]["pii"]["blocked"]
    assert screens["secret"]["denylist"]["entities"] == {"aws_access_key_id": 1}
    assert screens["secret"]["denylist"]["blocked"] and screens["secret"]["denylist"]["action"] == "block"
    assert screens["safety"]["safety"]["categories"] == ["S9"] and screens["safety"]["safety"]["blocked"]
    assert screens["safety"]["safety"]["score"] > 0.5

    raw = journal_bytes(root)
    for value in (SSN, SSN.replace("-", ""), EMAIL, AKIA, "build a bomb", "hi there", "client-secret-0f1e2d3c4b5a"):
        assert value.encode() not in raw, f"{value!r} is in the journal"


def test_shadow_policy_decisions_are_recorded_beside_the_active_ones(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    active = (policies / "policy.csv").read_text()
    allow_apps_chat = "p, access, allow, chat, -, 'apps' in r.sub.ou && !globMatch(r.obj.model, 'internal-*')"
    assert allow_apps_chat in active
    # The candidate stops apps from chatting, and lets them use internal-* models.
    candidate = active.replace(allow_apps_chat, "p, access, allow, chat, -, 'nobody' in r.sub.ou")
    candidate = candidate.replace(
        "p, access, deny, *, -, globMatch(r.obj.model, 'internal-*') && !('staff' in r.sub.ou)", ""
    )
    candidate += "p, access, allow, *, -, 'apps' in r.sub.ou && globMatch(r.obj.model, 'internal-*')\n"
    (policies / "candidate.csv").write_text(candidate)
    # The active policy also refuses prompts that carry an e-mail address (content stage); the candidate not.
    (policies / "policy.csv").write_text(active + "p, content, deny, *, -, 'EMAIL_ADDRESS' in r.env.pii\n")
    email_rule = f"{policies}/policy.csv:{len(active.splitlines()) + 1}"
    priv, pub = _keys(tmp_path)
    g = guard_factory(
        routes=ROUTES,
        audit=_audit(tmp_path, priv),
        policy={
            "model": str(policies / "model.conf"),
            "rules": [str(policies / "policy.csv")],
            "shadow": {"rules": [str(policies / "candidate.csv")]},
            "watch": False,
        },
    )
    with httpx.Client(timeout=10) as admin:
        before = metric(admin.get(g.admin_url + "/metrics").text, "guard_shadow_disagreements_total", stage="access")
    with g.client("app") as c:
        live_allow = chat(c, "Hello")  # active allows, the candidate would deny
        live_deny = chat(c, "Hello", model="internal-finance")  # active denies, the candidate would allow
    with g.client("staff") as c:
        agree = chat(c, "Hello")  # both allow
        content = chat(c, f"Write to {EMAIL}")  # content stage: active denies, the candidate would allow
    assert (live_allow.status_code, live_deny.status_code, agree.status_code) == (200, 403, 200)
    assert content.status_code == 403 and content.json()["error"]["code"] == "content_denied"
    with httpx.Client(timeout=10) as admin:
        after = metric(admin.get(g.admin_url + "/metrics").text, "guard_shadow_disagreements_total", stage="access")
    assert after - before == 2
    assert metric(admin_metrics(g), "guard_shadow_disagreements_total", stage="content") >= 1
    # Reloads leave their own events: a broken file is refused (policy.reload_failed), a good one taken.
    good = (policies / "policy.csv").read_text()
    (policies / "policy.csv").write_text(good + "p, access, allow, chat, -, (\n")
    assert httpx.post(g.admin_url + "/admin/reload", timeout=10).status_code == 422
    (policies / "policy.csv").write_text(good + "# reviewed\n")
    assert httpx.post(g.admin_url + "/admin/reload", timeout=10).status_code == 200
    g.stop()

    root = Path(g.config.audit.dir)
    assert journal_errors(root) == []
    _intact(root, pub)
    events = journal_events(root)
    recs = by_request(events)
    reloads = [e for e in events if e["type"].startswith("policy.")]
    assert [e["type"] for e in reloads] == ["policy.reload_failed", "policy.reloaded"], reloads
    failed, reloaded = reloads[0]["policy"], reloads[1]["policy"]
    version = failed["kept_version"]  # the version that decided the requests above
    assert "policy.csv" in failed["error"] and reloaded["version"] == g.runtime.policy.version != version
    shadow_version = g.runtime.policy.shadow.version
    assert reloaded["shadow_version"] == shadow_version != version

    allowed = recs[live_allow.headers["x-guard-request-id"]]
    for kind in ("exchange.started", "exchange.completed"):
        d = allowed[kind]["decisions"]["access"]
        assert (d["effect"], d["rule"], d["policy_version"]) == ("allow", f"{policies}/policy.csv:4", version)
        assert d["shadow"]["effect"] == "deny" and d["shadow"]["policy_version"] == shadow_version, d
        assert d["shadow"]["rule"] == ""  # no candidate rule allows it: default deny
    denied = recs[live_deny.headers["x-guard-request-id"]]
    assert set(denied) == {"exchange.denied"}
    d = denied["exchange.denied"]["decisions"]["access"]
    assert (d["effect"], d["rule"], d["policy_version"]) == ("deny", f"{policies}/policy.csv:8", version)
    assert d["shadow"]["effect"] == "allow" and d["shadow"]["rule"].startswith(f"{policies}/candidate.csv:"), d
    same = recs[agree.headers["x-guard-request-id"]]["exchange.started"]["decisions"]
    assert "shadow" not in same["access"] and "shadow" not in same.get("content", {})
    refused = recs[content.headers["x-guard-request-id"]]
    assert set(refused) == {"exchange.denied"}
    e = refused["exchange.denied"]
    assert e["denial"] == {"stage": "content", "code": "content_denied"} and e["outcome"]["status"] == 403
    d = e["decisions"]["content"]
    assert (d["effect"], d["rule"], d["policy_version"]) == ("deny", email_rule, version)
    assert d["shadow"]["effect"] == "allow" and d["shadow"]["policy_version"] == shadow_version, d
    assert "shadow" not in e["decisions"]["access"]
    assert {s["name"]: s.get("entities") for s in e["screens"]}["pii"] == {"EMAIL_ADDRESS": 1}
    assert EMAIL.encode() not in journal_bytes(root)


def admin_metrics(g: Any) -> str:
    return httpx.get(g.admin_url + "/metrics", timeout=10).text


def _key_forms(priv: Path) -> list[bytes]:
    key = serialization.load_pem_private_key(priv.read_bytes(), None)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem_body = b"".join(priv.read_bytes().splitlines()[1:-1])
    return [
        raw,
        raw.hex().encode(),
        base64.b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        pem_body,
        pem_body[:40],
        pem_body[-40:],
    ]


def test_no_secret_reaches_the_journal_or_the_logs(
    guard_factory: Callable[..., Any],
    tmp_path: Path,
    model_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.audit.receivers import Receiver

    client_secret = "client-secret-7c1a9e55d0b34f2a"
    upstream_key = "upstream-key-3b9f0c21aa7d4e6b"
    hec_token = "hec-token-5d2e8a4f19c07b63"
    monkeypatch.setenv("GUARD_TEST_UPSTREAM_KEY", upstream_key)
    monkeypatch.setenv("GUARD_TEST_HEC_TOKEN", hec_token)
    priv, pub = _keys(tmp_path)
    caplog.set_level(logging.DEBUG)
    with Receiver(token=hec_token) as hec:
        hec.failing = True  # the SIEM is down at first: the forwarder retries and logs why
        sink = {
            "name": "splunk",
            "type": "splunk_hec",
            "url": hec.url,
            "token_env": "GUARD_TEST_HEC_TOKEN",
            "batch_size": 50,
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.2,
        }
        g = guard_factory(
            routes=ROUTES,
            audit=_audit(tmp_path, priv, sinks=[sink]),
            log_level="debug",
            upstreams={
                "local": {
                    "url": model_server[1],
                    "api": "openai",
                    "timeout_s": 10,
                    "api_key_env": "GUARD_TEST_UPSTREAM_KEY",
                },
                "ollama": {"url": model_server[1], "api": "ollama", "timeout_s": 10},
            },
        )
        auth = {"authorization": f"Bearer {client_secret}"}
        with g.client("app") as c:
            assert chat(c, "Hello [[reply: fine]]", headers=auth).status_code == 200
            with c.stream(
                "POST",
                CHAT,
                headers=auth,
                json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
            ) as s:
                assert s.status_code == 200 and s.read()
            assert chat(c, "fail [[status=500]]", headers=auth).status_code == 500
            assert chat(c, f"key {AKIA}", headers=auth).status_code == 400
            assert chat(c, "Hi", model="internal-finance", headers=auth).status_code == 403
            assert chat(c, "Hi", model="nope", headers=auth).status_code == 404
            # The client presents its own secret as the prompt: the journal keeps only a keyed hash of it.
            assert chat(c, f"my token is {client_secret} ok", headers=auth).status_code in (200, 400)
        upstream_seen = [
            r["headers"]
            for r in model_server[0].requests
            if r["headers"].get("x-guard-request-id") and "guard" not in str(r["body"].get("model"))
        ]
        assert upstream_seen and all(h.get("authorization") == f"Bearer {upstream_key}" for h in upstream_seen[-3:])
        assert all(client_secret not in str(h) for h in upstream_seen)  # never forwarded upstream
        deadline = time.monotonic() + 5
        while hec.requests < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        hec.failing = False
        while hec.count == 0 and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        g.stop()
        assert hec.count > 0 and hec.rejected == 0  # the token was used, and accepted
    root = Path(g.config.audit.dir)
    assert journal_errors(root) == []
    _intact(root, pub)
    # Guard's logs (the test's own HTTP client logs the client's headers at debug level: not Guard's)
    mine = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore", "openai"))]
    assert any(r.name.startswith("guard.audit") and r.levelno >= logging.WARNING for r in mine), "outage not logged"
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in mine).encode()
    written = journal_bytes(root)
    hmac_key = (root / "keys" / "content-hmac.key").read_bytes()  # makes prompt hashes unguessable: secret too
    secrets = [
        client_secret.encode(),
        upstream_key.encode(),
        hec_token.encode(),
        *_key_forms(priv),
        hmac_key,
        hmac_key.hex().encode(),
        base64.b64encode(hmac_key),
    ]
    for s in secrets:
        assert s not in written, f"secret {s[:12]!r}... in the journal"
        assert s not in logs, f"secret {s[:12]!r}... in the logs"


def test_redacted_capture_keeps_texts_only_as_the_screens_left_them(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    from guard.audit import recorder
    from guard.screens.pii.transform import CTX_KEY

    assert recorder._PSEUDONYMS == CTX_KEY
    priv, pub = _keys(tmp_path)
    g = guard_factory(routes=ROUTES, audit=_audit(tmp_path, priv, capture="redacted"))
    with g.client("app") as c:
        echoed = chat(c, f"Write to {EMAIL} [[echo]]")  # pseudonymized upstream, restored in the answer
        assert echoed.status_code == 200 and EMAIL in echoed.json()["choices"][0]["message"]["content"]
        refused = [
            chat(c, f"my social security number is {SSN}"),
            chat(c, f"use {AKIA}"),
            chat(c, f"mail {EMAIL}", model="no-such-model"),
            chat(c, f"mail {EMAIL}", model="internal-x"),
        ]
    assert [r.status_code for r in refused] == [400, 400, 404, 403]
    g.stop()
    root = Path(g.config.audit.dir)
    assert journal_errors(root) == []
    _intact(root, pub)
    recs = by_request(journal_events(root))
    done = recs[echoed.headers["x-guard-request-id"]]["exchange.completed"]["content"]
    assert done["capture"] == "redacted"
    assert "<EMAIL_ADDRESS_1>" in done["prompt"] and "<EMAIL_ADDRESS_1>" in done["answer"]
    for r in refused:  # refused before or by the screens: never redacted, so not kept
        assert "prompt" not in recs[r.headers["x-guard-request-id"]]["exchange.denied"].get("content", {})
    raw = journal_bytes(root)
    for value in (SSN, EMAIL, AKIA):
        assert value.encode() not in raw, f"{value!r} is in the journal"


def test_an_exchange_that_failed_after_going_upstream_is_completed_not_denied(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    priv, _ = _keys(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    g = guard_factory(
        routes=[*ROUTES, {"model": "dead-*", "upstream": "dead"}],
        audit=_audit(tmp_path, priv),
        upstreams={"dead": {"url": dead, "api": "openai", "timeout_s": 2}},
    )
    with g.client("app") as c:
        unreachable = chat(c, "Hi", model="dead-model")
        with c.stream(
            "POST", CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "[[reset]]"}]}
        ) as s:  # the upstream drops the connection
            s.read()
    assert unreachable.status_code == 502
    g.stop()
    recs = by_request(journal_events(Path(g.config.audit.dir)))
    for r in (unreachable, s):
        assert set(recs[r.headers["x-guard-request-id"]]) == {"exchange.started", "exchange.completed"}


# --- crash: kill -9 of `guard serve` under concurrent load --------------------------------------------------


class GuardProcess:
    """`guard serve --config FILE` as an operator runs it, its log in a file."""

    def __init__(self, cfg_path: Path, log: Path, env: dict[str, str], admin_url: str) -> None:
        self.cfg_path, self.log, self.env, self.admin_url = cfg_path, log, env, admin_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> GuardProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [GUARD, "serve", "--config", str(self.cfg_path)], stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"guard serve exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(self.admin_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"guard serve did not start: {self.log.read_text()[-3000:]}")

    def signal(self, sig: int, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _load(
    url: str,
    ctx: Any,
    stop: threading.Event,
    results: list[tuple[int, str]],
    errors: list[str],
    headers: dict[str, str],
    limit: int = 300,
) -> None:
    """One client: chat requests until ``stop`` (at most ``limit``); records (status, request id) of every
    response it received whole."""
    with httpx.Client(base_url=url, verify=ctx, timeout=5) as c:
        for i in range(limit):
            if stop.is_set():
                return
            try:
                r = chat(c, f"Hello number {i} [[reply: ok {i}]]", headers=headers)
                results.append((r.status_code, r.headers.get("x-guard-request-id", "")))
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
                time.sleep(0.02)


def test_kill_9_under_load_leaves_a_verifiable_journal_with_every_answered_request(
    pki_dir: Path, model_server: Any, tmp_path: Path
) -> None:
    url = model_server[1]
    priv, pub = _keys(tmp_path)
    port, admin_port = free_port(), free_port()
    client_secret, upstream_key = "client-secret-crash-91be2f0c", "upstream-key-crash-6d0a47e3"
    filters = screening_filters(tmp_path / "filters", url)
    (filters / "pii.yaml").unlink()  # denylist and Llama Guard only: Presidio's import costs seconds per start
    cfg = guard_config(
        pki_dir,
        url,
        port,
        admin_port,
        routes=ROUTES,
        log_level="debug",
        shutdown_deadline_s=2,
        audit=_audit(tmp_path, priv, checkpoint_events=50),
        filters={"dir": str(filters)},
        policy={
            "model": str(ROOT / "policies/model.conf"),
            "rules": [str(ROOT / "policies/policy.csv")],
            "watch": False,
        },
        upstreams={"local": {"url": url, "api": "openai", "timeout_s": 10, "api_key_env": "GUARD_TEST_UPSTREAM_KEY"}},
    )
    cfg_path = write_config(tmp_path / "guard.yaml", cfg)
    env = {**os.environ, "GUARD_TEST_UPSTREAM_KEY": upstream_key}
    log = tmp_path / "guard.log"
    gp = GuardProcess(cfg_path, log, env, f"http://127.0.0.1:{admin_port}")
    root = tmp_path / "audit"
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    ctx.load_cert_chain(str(pki_dir / "app.pem"), str(pki_dir / "app-key.pem"))
    try:
        gp.start()
        stop = threading.Event()
        results: list[tuple[int, str]] = []
        errors: list[str] = []
        auth = {"authorization": f"Bearer {client_secret}"}
        threads = [
            threading.Thread(target=_load, args=(f"https://localhost:{port}", ctx, stop, results, errors, auth))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(results) < 60 and time.monotonic() < deadline:  # under load: answers flowing
            time.sleep(0.05)
        time.sleep(0.3)
        assert gp.proc is not None
        os.kill(gp.proc.pid, signal.SIGKILL)
        gp.proc.wait(10)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(15)
        answered = [rid for status, rid in results if status == 200]
        assert len(answered) >= 60 and errors, (len(answered), errors[:5])  # killed mid-load
        assert all(status == 200 for status, _ in results), {s for s, _ in results}

        assert journal_errors(root) == []
        doc = _intact(root, pub)
        assert not any(c["closed"] for c in doc["chains"])  # no final checkpoint: it was killed
        recs = by_request(journal_events(root))
        missing = [rid for rid in answered if "exchange.started" not in recs.get(rid, {})]
        assert not missing, f"{len(missing)} answered requests without exchange.started"

        # A crash mid-write leaves a torn last line: reported as torn, not as tampering. kill -9 during a
        # group-commit write() often tears one for real; where it did not, tear one as the kernel would.
        seg = sorted((root / "chains").glob("*/*.jsonl"))[-1]
        data = seg.read_bytes()
        if data.endswith(b"\n"):
            last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            with open(seg, "ab") as f:
                f.write(last[: len(last) // 2])
            rc, doc = verify(root, pub)
            assert rc == 0 and doc["ok"], doc
        torn_bytes = len(seg.read_bytes().rsplit(b"\n", 1)[-1])
        torn = [t for c in doc["chains"] for t in c["torn"]]
        assert len(torn) == 1 and not torn[0]["acknowledged"] and torn[0]["bytes"] == torn_bytes, doc
        assert all(c.get("broken") is None for c in doc["chains"]), doc

        # The same writer starts again: it continues the chain and acknowledges the torn line.
        gp.start()
        with httpx.Client(base_url=f"https://localhost:{port}", verify=ctx, timeout=10) as c:
            after = chat(c, "Hello again", headers=auth)
        assert after.status_code == 200
        assert gp.signal(signal.SIGTERM) == 0
        rc, doc = verify(root, pub)
        assert rc == 0 and doc["ok"], doc
        torn = [t for c in doc["chains"] for t in c["torn"]]
        assert len(torn) == 1 and torn[0]["acknowledged"], doc
        assert journal_errors(root) == []
        events = journal_events(root)
        recovery = [
            e["checkpoint"]["recovery"]
            for e in events
            if e["type"] == "audit.checkpoint" and e["checkpoint"].get("recovery")
        ]
        assert any(r.get("torn_bytes") == torn_bytes for r in recovery), recovery
        assert "exchange.completed" in by_request(events)[after.headers["x-guard-request-id"]]
        # Nothing secret in the journal or in Guard's own log (debug level).
        written, logged = journal_bytes(root), log.read_bytes()
        for secret in (client_secret.encode(), upstream_key.encode(), *_key_forms(priv)):
            assert secret not in written and secret not in logged, secret[:12]
        forwarded = [
            r
            for r in model_server[0].requests
            if r["headers"].get("x-guard-request-id") == after.headers["x-guard-request-id"]
        ]
        assert [r["headers"].get("authorization") for r in forwarded] == [f"Bearer {upstream_key}"]
    finally:
        gp.kill()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return sorted(out)


def _process_config(pki_dir: Path, url: str, tmp_path: Path, priv: Path, **over: Any) -> tuple[Path, str, int]:
    filters = screening_filters(tmp_path / "filters", url)
    (filters / "pii.yaml").unlink()  # denylist and Llama Guard only: Presidio's import costs seconds per start
    port, admin_port = free_port(), free_port()
    cfg = guard_config(
        pki_dir,
        url,
        port,
        admin_port,
        routes=ROUTES,
        shutdown_deadline_s=2,
        audit=_audit(tmp_path, priv, checkpoint_events=50),
        filters={"dir": str(filters)},
        policy={
            "model": str(ROOT / "policies/model.conf"),
            "rules": [str(ROOT / "policies/policy.csv")],
            "watch": False,
        },
        **over,
    )
    return write_config(tmp_path / "guard.yaml", cfg), f"http://127.0.0.1:{admin_port}", port


def _client_ctx(pki_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    ctx.load_cert_chain(str(pki_dir / "app.pem"), str(pki_dir / "app-key.pem"))
    return ctx


def test_a_worker_killed_under_load_is_restarted_and_continues_its_own_chain(
    pki_dir: Path, model_server: Any, tmp_path: Path
) -> None:
    priv, pub = _keys(tmp_path)
    cfg_path, admin_url, port = _process_config(pki_dir, model_server[1], tmp_path, priv, workers=2)
    gp = GuardProcess(cfg_path, tmp_path / "guard.log", dict(os.environ), admin_url)
    root = tmp_path / "audit"
    try:
        gp.start()
        assert gp.proc is not None
        deadline = time.monotonic() + 20
        while len(_children(gp.proc.pid)) < 2 or len(list((root / "chains").glob("*/*.jsonl"))) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        workers = _children(gp.proc.pid)
        stop = threading.Event()
        results: list[tuple[int, str]] = []
        errors: list[str] = []
        threads = [
            threading.Thread(
                target=_load, args=(f"https://localhost:{port}", _client_ctx(pki_dir), stop, results, errors, {})
            )
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        while len(results) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)

        def worker0_pid() -> int | None:  # worker 0's pid, by its own guard.started record
            return next(
                (
                    e["guard"]["pid"]
                    for e in journal_events(root)
                    if e["type"] == "guard.started" and e["guard"]["worker"] == 0
                ),
                None,
            )

        while worker0_pid() is None:
            assert time.monotonic() < deadline + 10, "worker 0 did not start"
            time.sleep(0.1)
        worker0 = worker0_pid()
        assert worker0 in workers
        os.kill(worker0, signal.SIGKILL)

        def restarted() -> bool:  # the master started a new worker, and it is serving (guard.started written)
            return sum(e["type"] == "guard.started" for e in journal_events(root)) == 3

        while not (restarted() and len(results) >= 150) and time.monotonic() < deadline + 10:
            time.sleep(0.1)  # load goes on meanwhile
        stop.set()
        for t in threads:
            t.join(15)
        assert gp.signal(signal.SIGTERM) == 0
        answered = [rid for status, rid in results if status == 200]
        assert len(answered) >= 150 and {s for s, _ in results} == {200}
        assert _children(gp.proc.pid) == []
    finally:
        gp.kill()
    assert journal_errors(root) == []
    doc = _intact(root, pub)
    assert len(doc["chains"]) == 2 and all(c["closed"] for c in doc["chains"]), doc  # one chain per worker
    events = journal_events(root)
    recs = by_request(events)
    assert not [rid for rid in answered if "exchange.started" not in recs.get(rid, {})]
    started = [e for e in events if e["type"] == "guard.started"]
    assert sorted(e["guard"]["worker"] for e in started) == [0, 0, 1]
    w0 = [e for e in events if e["chain"] == started[0]["chain"] if e["type"] == "audit.checkpoint"]
    assert any(e["checkpoint"]["reason"] == "recovery" for e in w0), w0  # the restarted worker says so


def test_workers_do_not_outlive_a_master_killed_with_9(pki_dir: Path, model_server: Any, tmp_path: Path) -> None:
    priv, _ = _keys(tmp_path)
    cfg_path, admin_url, _ = _process_config(pki_dir, model_server[1], tmp_path, priv, workers=2)
    gp = GuardProcess(cfg_path, tmp_path / "guard.log", dict(os.environ), admin_url)
    workers: list[int] = []
    try:
        gp.start()
        assert gp.proc is not None
        deadline = time.monotonic() + 20
        while len(workers := _children(gp.proc.pid)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        gp.proc.kill()
        gp.proc.wait(10)
        deadline = time.monotonic() + 3
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if Path(f"/proc/{w}").exists()]
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)


# --- disk full: the journal cannot be written ---------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs the right to mount; skipped where the test may not)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> None:
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        for size in (4096, 512):  # the last partial pages too
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


def test_a_full_disk_refuses_requests_with_503_and_never_answers_unrecorded(
    guard_factory: Callable[..., Any], tmp_path: Path, small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="guard")
    client_secret = "client-secret-diskfull-4e7a0b19"
    priv, pub = _keys(tmp_path)
    root = small_fs / "audit"
    g = guard_factory(routes=ROUTES, audit={**_audit(tmp_path, priv), "dir": str(root)})
    metrics_url = g.admin_url + "/metrics"

    def fail_closed() -> float:
        return metric(httpx.get(metrics_url, timeout=10).text, "guard_fail_closed_total", component="audit")

    answered: list[str] = []
    refused: list[httpx.Response] = []

    def send(c: httpx.Client, text: str) -> httpx.Response:
        r = chat(c, text, headers={"authorization": f"Bearer {client_secret}"})
        assert r.headers.get("x-guard-request-id")
        if r.status_code == 200:
            answered.append(r.headers["x-guard-request-id"])
        elif r.status_code == 503:
            refused.append(r)
        else:
            raise AssertionError(f"unexpected {r.status_code}: {r.text}")
        return r

    with g.client("app") as c:
        assert send(c, "before").status_code == 200
        before = fail_closed()
        _fill(small_fs / "filler")
        for i in range(12):
            send(c, f"while full {i} " + "x" * 200)
        results: list[int] = []

        def burst() -> None:
            with g.client("app") as cc:
                for j in range(4):
                    results.append(send(cc, f"burst {j}").status_code)

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 16 and set(results) == {503}, results
        assert len(refused) >= 20, len(refused)
        for r in refused:
            err = r.json()["error"]
            assert err["code"] == "audit_unavailable" and err["type"] and err["message"], err
        assert fail_closed() - before >= len(refused)
        assert httpx.get(g.admin_url + "/readyz", timeout=10).status_code == 503  # journal unhealthy
        # a request the HTTP layer refuses cannot be recorded either: it is refused harder, not answered unrecorded
        from tests.hardening.conftest import tls_socket

        with tls_socket(g.url, g.ssl_context("app")) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}"
            )
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        assert raw.startswith(b"HTTP/1.1 503 ") and b'"audit_unavailable"' in raw, raw[:300]

        (small_fs / "filler").unlink()  # space returns
        deadline = time.monotonic() + 5
        while send(c, "after").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert send(c, "after, again").status_code == 200
        assert httpx.get(g.admin_url + "/readyz", timeout=10).status_code == 200
    g.stop()

    assert journal_errors(root) == []
    _intact(root, pub)
    events = journal_events(root)
    recs = by_request(events)
    missing = [rid for rid in answered if "exchange.started" not in recs.get(rid, {})]
    assert not missing, f"answered without exchange.started: {missing}"
    assert any(e["type"] == "audit.checkpoint" and e["checkpoint"]["reason"] == "recovery" for e in events)
    refusals = [r.getMessage() for r in caplog.records if r.name.startswith("guard") and "refusing" in r.getMessage()]
    assert refusals and len(refusals) < len(refused)  # refusals are logged with a request id, thinned (ratelog) ...
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("guard"))
    assert client_secret not in logged and client_secret.encode() not in journal_bytes(root)  # ... and no secret


def test_listing_models_is_refused_with_503_while_the_journal_cannot_be_written(
    guard_factory: Callable[..., Any], tmp_path: Path, small_fs: Path
) -> None:
    priv, _ = _keys(tmp_path)
    g = guard_factory(routes=ROUTES, audit={**_audit(tmp_path, priv), "dir": str(small_fs / "audit")})
    with g.client("app") as c:
        assert c.get("/v1/models").status_code == 200
        before = metric(admin_metrics(g), "guard_fail_closed_total", component="audit")
        _fill(small_fs / "filler")
        for _ in range(3):  # the first may still fit in the segment's last page
            r = c.get("/v1/models")
        assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable", r.text
        assert r.headers.get("x-guard-request-id")
        assert metric(admin_metrics(g), "guard_fail_closed_total", component="audit") > before
