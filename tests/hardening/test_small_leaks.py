"""Small but real leaks (issue 21, section 7), attacked through the running proxy:

- metric label values cannot be grown by clients (hundreds of random model names, routed by a wildcard
  route or not routed at all, leave the series count where it was);
- XFCC from a trusted proxy follows Envoy's semantics: one element, or the last one when configured; an
  ambiguous header (several elements, several header lines, an unclosed quote, an empty element) is 403
  bad_client_identity and audited; commas inside a quoted Subject are no element boundary;
- refusals tell the client nothing about the host: no file path, no policy or config file name, no
  upstream name or address, no exception text (those are in the audit record and the log);
- ``audit.capture: full`` never stores what a screen blocked or replaced.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.demo.stack import ROOT, free_port
from tests.conftest import start_guard
from tests.hardening.conftest import events
from tests.hardening.raw_upstream import RawUpstream, chat_body, response

CHAT = "/v1/chat/completions"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
EMAIL = "jane.doe@corp-mail.com"


def _chat(c: httpx.Client, model: str, content: str = "hi", **kw: Any) -> httpx.Response:
    return c.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": content}]}, **kw)


def _records(g: Any, rid: str, want: str | None = None) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        recs = {e["type"]: e for e in events(g.config.audit.dir) if e.get("request_id") == rid}
        done = want in recs if want else ("exchange.completed" in recs or "exchange.denied" in recs)
        if done or time.monotonic() > deadline:
            return recs


# --- metric labels ---------------------------------------------------------------------------------------


def _series(text: str, name: str) -> set[str]:
    return {ln.split(" ")[0] for ln in text.splitlines() if ln.startswith(name + "{")}


def _labels(text: str, label: str) -> set[str]:
    return set(re.findall(rf'{label}="([^"]*)"', text))


def test_random_model_names_do_not_grow_the_metric_series(guard_factory: Any) -> None:
    g = guard_factory(
        routes=[
            {"model": "m-exact", "upstream": "local"},
            {"model": "wild-*", "upstream": "local"},
            {"model": "llama3*", "upstream": "ollama"},
        ],
        telemetry={"model_labels": ["wild-listed"]},
    )
    with g.client() as c:
        for model in ("m-exact", "wild-listed", "wild-seed", "unrouted-seed"):
            _chat(c, model, "[[reply: ok]]")
        before = httpx.get(g.admin_url + "/metrics").text
        statuses, names = set(), []
        for i in range(200):  # half routed by the wildcard route, half routed by nothing
            names.append(f"wild-{secrets.token_hex(6)}" if i % 2 else f"{secrets.token_hex(6)}-x")
            statuses.add(_chat(c, names[-1], "[[reply: ok]]").status_code)
        after = httpx.get(g.admin_url + "/metrics").text
    assert statuses == {200, 404}, statuses
    guard_lines = [ln for ln in after.splitlines() if ln.startswith("guard_") and "{" in ln]
    print(f"{len(guard_lines)} guard_* samples; model labels {sorted(_labels(after, 'model'))}")
    # (the registry is per process: other tests' models may be there already; this one added none)
    assert {"m-exact", "wild-listed", "other"} <= _labels(before, "model")
    assert _labels(after, "model") == _labels(before, "model")
    for name in (
        "guard_requests_total",
        "guard_tokens_total",
        "guard_request_duration_seconds_bucket",
        "guard_upstream_errors_total",
        "guard_screen_results_total",
        "guard_stage_duration_seconds_bucket",
    ):
        assert _series(after, name) == _series(before, name), name
    assert not [n for n in names if n in after]


# --- XFCC ------------------------------------------------------------------------------------------------

MESH = (
    'By=spiffe://example.org/guard;Hash=abc123;Subject="CN=mesh-app,OU=apps,O=Example\\, Inc.";'
    "URI=spiffe://example.org/ns/prod/sa/mesh-app"
)
FAR = 'Hash=ffff;Subject="CN=evil-admin,OU=staff,O=Example";URI=spiffe://example.org/ns/prod/sa/evil'


@pytest.fixture
def proxied(guard_factory: Any) -> Iterator[tuple[Any, Any]]:
    refuse = guard_factory(tls={"trusted_proxies": ["127.0.0.0/8"]})
    last = guard_factory(tls={"trusted_proxies": ["127.0.0.0/8"], "xfcc_multi": "last"})
    yield refuse, last


def _xfcc(g: Any, *values: str) -> httpx.Response:
    with g.client() as c:
        headers = [("x-forwarded-client-cert", v) for v in values]
        return c.post(
            CHAT, headers=headers, json={"model": "m", "messages": [{"role": "user", "content": "[[reply: ok]]"}]}
        )


def _principal(g: Any, r: httpx.Response) -> dict[str, Any]:
    recs = _records(g, r.headers["x-guard-request-id"])
    return next(iter(recs.values()))["principal"]


AMBIGUOUS = {
    "two elements": (f"{FAR},{MESH}",),
    "two header lines": (FAR, MESH),
    "unclosed quote": ('Hash=abc;Subject="CN=mesh-app,OU=apps;URI=spiffe://x',),
    "trailing empty element": (f"{MESH},",),
    "empty": ("",),
    "element without a certificate": (";",),
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
def test_ambiguous_xfcc_is_refused_and_audited(proxied: Any, case: str) -> None:
    g, _ = proxied
    r = _xfcc(g, *AMBIGUOUS[case])
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_client_identity", r.text
    recs = _records(g, r.headers["x-guard-request-id"])
    assert recs["exchange.denied"]["denial"]["code"] == "bad_client_identity"


def test_commas_inside_a_quoted_subject_are_one_element(proxied: Any) -> None:
    g, _ = proxied
    r = _xfcc(g, MESH)
    assert r.status_code == 200, r.text
    p = _principal(g, r)
    assert p["cn"] == "mesh-app" and p["fingerprint"] == "abc123", p
    assert p["subject"] == "CN=mesh-app,OU=apps,O=Example\\, Inc."


def test_xfcc_multi_last_takes_the_element_the_nearest_proxy_appended(proxied: Any) -> None:
    _, g = proxied
    for values in ((f"{FAR},{MESH}",), (FAR, MESH)):  # one header, or one line per hop
        r = _xfcc(g, *values)
        assert r.status_code == 200, r.text
        p = _principal(g, r)
        assert p["cn"] == "mesh-app" and p["spiffe_id"].endswith("/mesh-app"), p
    r = _xfcc(g, f"{MESH},{FAR}")  # the far element last: it is the one the nearest proxy vouches for
    assert _principal(g, r)["cn"] == "evil-admin"
    assert _xfcc(g, f"{FAR},").status_code == 403  # an empty element stays ambiguous


# --- refusals say nothing about the host -----------------------------------------------------------------

POLICY = """\
p, access, deny, *, -, r.obj.model == 'denied-model'
p, access, profile, *, no-such-profile, r.obj.model == 'no-profile'
p, access, allow, *, -, r.sub.cn == 'billing-app'
p, content, allow, *, -, True
p, content, deny, *, -, 'EMAIL_ADDRESS' in r.env.pii && r.obj.model == 'content-deny'
"""
HIDDEN_UP = "secret-cluster-eu7"


def _silent(c: socket.socket, req: dict[str, Any]) -> None:
    time.sleep(3)


def _bad_framing(c: socket.socket, req: dict[str, Any]) -> None:
    c.sendall(response(chat_body("x")) + b"junk after the end")


@pytest.fixture
def leaky(pki_dir: Path, model_server: Any, tmp_path: Path) -> Iterator[tuple[Any, Any, RawUpstream]]:
    raw = RawUpstream(
        {
            "raw-silent": _silent,
            "raw-framing": _bad_framing,
            "raw-nonjson": lambda c, r: c.sendall(response(b"<html>oops</html>")),
            "raw-huge": lambda c, r: c.sendall(response(chat_body("y" * 5000))),
        }
    )
    rules = tmp_path / "rules" / "policy.csv"
    rules.parent.mkdir()
    rules.write_text(POLICY)
    dead = f"http://127.0.0.1:{free_port()}"
    kw: dict[str, Any] = {
        "upstreams": {
            HIDDEN_UP: {"url": model_server[1], "timeout_s": 1},
            f"{HIDDEN_UP}-down": {"url": dead, "timeout_s": 1},
            f"{HIDDEN_UP}-raw": {"url": raw.url, "timeout_s": 1, "max_response_bytes": 2048},
        },
        "routes": [
            {"model": "down", "upstream": f"{HIDDEN_UP}-down"},
            {"model": "raw-*", "upstream": f"{HIDDEN_UP}-raw"},
            {"model": "*", "upstream": HIDDEN_UP},
        ],
        "policy": {"model": str(ROOT / "policies/model.conf"), "rules": [str(rules)]},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    g = start_guard(pki_dir, model_server[1], tmp_path / "a", judge_url=model_server[1], **kw)
    broken_judge = start_guard(pki_dir, model_server[1], tmp_path / "b", judge_url=dead, **kw)
    yield g, broken_judge, raw
    g.stop()
    broken_judge.stop()
    raw.close()


FAMILIES = {  # name -> (which guard, model, prompt, status, code)
    "policy deny": (0, "denied-model", "hi", 403, "access_denied"),
    "no rule allows": (0, "m", "hi", 403, "access_denied"),  # cert below is not billing-app
    "content deny": (0, "content-deny", f"write to {EMAIL}", 403, "content_denied"),
    "profile missing": (0, "no-profile", "hi", 503, "profile_missing"),
    "upstream down": (0, "down", "hi", 502, "upstream_unreachable"),
    "upstream bad response": (0, "raw-nonjson", "hi", 502, "upstream_bad_response"),
    "upstream bad framing": (0, "raw-framing", "hi", 502, "upstream_error"),
    "upstream too large": (0, "raw-huge", "hi", 502, "upstream_response_too_large"),
    "timeout": (0, "raw-silent", "hi", 504, "upstream_timeout"),
    "screen error": (1, "m", "hi", 503, "screen_error"),
    "screen block": (0, "m", f"key {AWS_KEY}", 400, None),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_refusals_name_no_path_no_upstream_no_config_file(leaky: Any, family: str) -> None:
    which, model, prompt, status, code = FAMILIES[family]
    g = leaky[which]
    cert = "staff" if family == "no rule allows" else "app"
    with g.client(cert, timeout=10) as c:
        r = _chat(c, model, prompt)
    err = r.json()["error"]
    print(f"{family}: {r.status_code} {err}")
    assert r.status_code == status and (code is None or err["code"] == code), r.text
    msg = err["message"]
    for leak in (
        "/",
        "\\",
        HIDDEN_UP,
        "127.0.0.1",
        ".csv",
        ".conf",
        ".yaml",
        "policy.csv",
        "guard.yaml",
        "no-such-profile",
        "Error",
        "errno",
        "Traceback",
        str(g.config.audit.dir),
    ):
        assert leak not in msg, (leak, msg)
    assert not re.search(r":\d+\b", msg), msg  # no file:line or host:port
    recs = _records(g, r.headers["x-guard-request-id"])
    rec = recs.get("exchange.completed") or recs["exchange.denied"]
    if family == "policy deny":  # the rule that decided is in the audit record, not in the answer
        assert rec["decisions"]["access"]["rule"].endswith("policy.csv:1")
    if family.startswith("upstream") or family == "timeout":
        assert rec["upstream"].startswith(HIDDEN_UP)


def test_stream_errors_name_no_upstream(leaky: Any) -> None:
    g = leaky[0]
    with (
        g.client(timeout=10) as c,
        c.stream(
            "POST", CHAT, json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "[[garbage]]"}]}
        ) as r,
    ):
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    err = json.loads(lines[-2][6:])["error"]
    assert err["code"] == "upstream_bad_stream" and HIDDEN_UP not in err["message"] and "(" not in err["message"]


# --- capture: full ----------------------------------------------------------------------------------------


def test_capture_full_never_stores_what_a_screen_blocked_or_replaced(guard_factory: Any) -> None:
    g = guard_factory(audit={"capture": "full"})
    with g.client() as c:
        blocked = _chat(c, "m", f"deploy with {AWS_KEY} please")
        mixed = _chat(c, "m", f"[[echo]] mail {EMAIL} and use {AWS_KEY}")
        echoed = _chat(c, "m", f"[[echo]] please mail {EMAIL} today")
        streamed = c.post(
            CHAT,
            json={
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": f"[[echo]] stream to {EMAIL}"}],
            },
        )
    assert blocked.status_code == 400 and mixed.status_code == 400, (blocked.text, mixed.text)
    assert echoed.status_code == 200 and EMAIL in echoed.json()["choices"][0]["message"]["content"]  # the
    # client gets its own value back (pseudonymize restores it) ...
    assert streamed.status_code == 200 and EMAIL in streamed.text
    rid = echoed.headers["x-guard-request-id"]
    recs = _records(g, rid, "exchange.completed")
    done = recs["exchange.completed"]["content"]
    assert done["capture"] == "full" and "<EMAIL_ADDRESS" in done["prompt"] and "<EMAIL_ADDRESS" in done["answer"]
    _records(g, streamed.headers["x-guard-request-id"], "exchange.completed")
    journal = json.dumps(events(g.config.audit.dir))
    # ... but the journal never holds what the screens replaced or blocked
    assert AWS_KEY not in journal and EMAIL not in journal
    denied = _records(g, blocked.headers["x-guard-request-id"])["exchange.denied"]
    assert denied["denial"]["stage"] == "screen" and "prompt" not in (denied.get("content") or {})
