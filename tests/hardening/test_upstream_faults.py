"""Upstream faults (issue 8, item 4): whatever the model server does, the client gets a documented error and
the journal a complete record (exchange.started + exchange.completed with the error), within the timeouts.

Before the answer starts: an OpenAI error (502 upstream_bad_response / upstream_error, 504 upstream_timeout).
After a stream started (status 200 already sent): the stream ends with an error event in the OpenAI shape,
``data: {"error": {"message", "type", "code"}}`` then ``data: [DONE]`` (the OpenAI SDK raises APIError on it;
an Ollama NDJSON stream ends with ``{"error": "..."}``), never with a silent truncation."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from guard.demo.stack import free_port
from tests.hardening.conftest import events

CHAT = "/v1/chat/completions"
TIMEOUT_S = 2  # upstreams.*.timeout_s for these tests


class RawUpstream:
    """A model server that misbehaves on purpose, by model name: raw-nonjson (200 with an HTML body),
    raw-truncated (an SSE stream cut in the middle of an event, then a clean end of body), raw-cut (the
    connection closes in the middle of the chunked body), raw-silent (reads the request, never answers)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
        head, _, body = buf.partition(b"\r\n\r\n")
        n = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
        while len(body) < n:
            body += c.recv(65536)
        model = json.loads(body)["model"]
        chunk = (
            b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,'
            b'"delta":{"content":"Hello "},"finish_reason":null}]}\n\n'
        )
        if model == "raw-nonjson":
            page = b"<html><body>502 Bad Gateway</body></html>"
            c.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(page), page)
            )
        elif model == "raw-truncated":
            data = chunk + b'data: {"id":"x","object":"chat.comp'
            c.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                % (len(data), data)
            )
        elif model == "raw-cut":
            c.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(chunk), chunk)
            )
            time.sleep(0.2)
            c.close()
            return
        elif model == "raw-silent":
            self.stop.wait(30)
        c.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


@pytest.fixture
def faulty(guard_factory: Any, model_server: Any) -> Iterator[Any]:
    raw = RawUpstream()
    g = guard_factory(
        upstreams={
            "local": {"url": model_server[1], "api": "openai", "timeout_s": TIMEOUT_S},
            "raw": {"url": f"http://127.0.0.1:{raw.port}", "api": "openai", "timeout_s": TIMEOUT_S},
        },
        routes=[
            {"model": "raw-*", "upstream": "raw"},
            {"model": "llama3*", "upstream": "ollama"},
            {"model": "*", "upstream": "local"},
        ],
    )
    yield g
    raw.close()


def _record(g: Any, rid: str) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        recs = {e["type"]: e for e in events(g.config.audit.dir) if e.get("request_id") == rid}
        if "exchange.completed" in recs or time.monotonic() > deadline:
            return recs


def _check_record(g: Any, rid: str, status: int, reason: str) -> None:
    recs = _record(g, rid)
    assert {"exchange.started", "exchange.completed"} <= set(recs), recs.keys()
    out = recs["exchange.completed"]["outcome"]
    assert out["status"] == status and out.get("error") == reason, out


WHOLE = {  # model, prompt -> status, code
    "nonjson_200": ("raw-nonjson", "hi", 502, "upstream_bad_response"),
    "never_answers": ("raw-silent", "hi", 504, "upstream_timeout"),
    "slow_first_byte": ("m", "[[first_byte_ms=5000]]", 504, "upstream_timeout"),
    "reset_before_answer": ("raw-cut", "hi", 502, "upstream_error"),  # not streamed: the body never completes
}


@pytest.mark.parametrize("case", list(WHOLE))
def test_unstreamed_fault_is_an_openai_error_with_its_record(faulty: Any, case: str) -> None:
    model, prompt, status, code = WHOLE[case]
    t0 = time.monotonic()
    with faulty.client("app", timeout=TIMEOUT_S * 5) as c:
        r = c.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": prompt}]})
    took = time.monotonic() - t0
    print(f"{case}: {r.status_code} {r.json()['error']['code']} after {took:.2f} s")
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert took < TIMEOUT_S + 1.5
    _check_record(faulty, r.headers["x-guard-request-id"], status, code)


STREAMED = {  # model, prompt -> status recorded, reason recorded
    "reset_mid_stream": ("m", "[[reset]]", 502, "upstream_error"),
    "garbage_chunk": ("m", "[[garbage]]", 502, "upstream_bad_stream"),
    "truncated_sse": ("raw-truncated", "hi", 502, "upstream_bad_stream"),
    "connection_cut_mid_stream": ("raw-cut", "hi", 502, "upstream_error"),
    "streams_forever": ("m", "[[forever]]", 504, "upstream_timeout"),
}


@pytest.mark.parametrize("case", list(STREAMED))
def test_streamed_fault_ends_with_an_error_event_and_its_record(faulty: Any, case: str) -> None:
    model, prompt, status, reason = STREAMED[case]
    t0 = time.monotonic()
    with (
        faulty.client("app", timeout=TIMEOUT_S * 5) as c,
        c.stream(
            "POST", CHAT, json={"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
        ) as r,
    ):
        assert r.status_code == 200
        rid = r.headers["x-guard-request-id"]
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    took = time.monotonic() - t0
    print(f"{case}: {len(lines)} events in {took:.2f} s, last two {lines[-2:]}")
    assert took < TIMEOUT_S + 1.5
    assert lines[-1] == "data: [DONE]"
    err = json.loads(lines[-2][6:])
    assert set(err) == {"error"} and err["error"]["code"] == reason and err["error"]["message"], err
    _check_record(faulty, rid, status, reason)


def test_ollama_stream_fault_ends_with_an_error_line(faulty: Any) -> None:
    with (
        faulty.client("app", timeout=TIMEOUT_S * 5) as c,
        c.stream(
            "POST", "/api/chat", json={"model": "llama3", "messages": [{"role": "user", "content": "[[reset]]"}]}
        ) as r,
    ):
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
    assert lines[-1].get("error") and set(lines[-1]) == {"error"}, lines[-1]
    _check_record(faulty, r.headers["x-guard-request-id"], 502, "upstream_error")
