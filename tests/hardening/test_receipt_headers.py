"""Attacks on the receipt header through the running proxy: an upstream (or whoever answers in its place)
that sends its own ``x-guard-audit-leaf``, plain and streamed, and a client that sends one, must never get
its value through: the client sees exactly one header, Guard's, naming the record Guard wrote; the
upstream never sees the client's."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from guard.audit import logtree
from guard.audit.seal import keygen
from tests.audit.proxy_helpers import CHAT, chat, journal_events

FORGED = "guard-audit/evil/0"


class _Upstream(BaseHTTPRequestHandler):
    """An OpenAI chat-completions server that adds forged receipt headers to every answer."""

    seen: ClassVar[list[dict[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if body.get("stream"):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}],
            }
            end = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            data = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode()
            ctype = "text/event-stream"
        else:
            data = json.dumps(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            ).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-guard-audit-leaf", FORGED)
        self.send_header("X-Guard-Audit-Leaf", FORGED + "1")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def forging_upstream() -> Iterator[str]:
    _Upstream.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_forged_receipt_headers_from_upstream_or_client_never_pass(
    guard_factory: Callable[..., Any], tmp_path: Path, forging_upstream: str
) -> None:
    priv, _, _ = keygen(tmp_path / "keys")
    audit = {"dir": str(tmp_path / "audit"), "signing_key": str(priv), "sealer": "thread"}
    g = guard_factory(routes=[{"model": "gpt-*", "upstream": "local"}], audit=audit, upstream_url=forging_upstream)
    got = []
    with g.client("app") as c:
        r = chat(c, "hello", headers={"x-guard-audit-leaf": FORGED})
        got.append(r)
        with c.stream(
            "POST",
            CHAT,
            headers={"x-guard-audit-leaf": FORGED},
            json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as s:
            s.read()
            got.append(s)
    g.stop()
    assert _Upstream.seen and all("x-guard-audit-leaf" not in h for h in _Upstream.seen)
    events = journal_events(Path(audit["dir"]))
    for r in got:
        assert r.status_code == 200
        values = r.headers.get_list("x-guard-audit-leaf")
        assert len(values) == 1 and FORGED not in values[0], values
        log, _, index = values[0].rpartition("/")
        chain = logtree.chain_of(log)
        rec = next(e for e in events if e["chain"] == chain and e["seq"] == int(index) + 1)
        assert rec["type"] == "exchange.started" and rec["request_id"] == r.headers["x-guard-request-id"]
