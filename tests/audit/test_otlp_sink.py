"""The OTLP logs sink against a small OTLP/HTTP receiver on loopback that decodes the protobuf requests with
opentelemetry-proto's own classes: every journal event arrives as a log record (body = the journal line,
which still hashes to its ``hash``), including the events written while the receiver was down (it is
stopped, its port closed, and started again on the same port)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from guard.audit import layout
from guard.audit.forwarder import Forwarder
from guard.audit.journal import Journal
from guard.audit.seal import canonical
from guard.audit.settings import SinkSettings

from .conftest import make_settings, sample
from .receivers import free_port

TOKEN = "otlp-token-DO-NOT-LEAK-5d1e"


class OtlpReceiver:
    """OTLP/HTTP logs endpoint (POST /v1/logs, application/x-protobuf) in a thread."""

    def __init__(self, port: int, records: list[dict[str, Any]], headers: list[dict[str, str]]) -> None:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/logs" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                req = ExportLogsServiceRequest()
                req.ParseFromString(data)
                with rx.lock:
                    headers.append(dict(self.headers))
                    for rl in req.resource_logs:
                        res = {a.key: a.value.string_value for a in rl.resource.attributes}
                        for sl in rl.scope_logs:
                            for r in sl.log_records:
                                attrs = {a.key: a.value for a in r.attributes}
                                records.append(
                                    {
                                        "body": r.body.string_value,
                                        "event_name": r.event_name,
                                        "severity": r.severity_text,
                                        "time_ns": r.time_unix_nano,
                                        "chain": attrs["guard.chain"].string_value,
                                        "seq": attrs["guard.seq"].int_value,
                                        "scope": sl.scope.name,
                                        "service": res.get("service.name"),
                                    }
                                )
                out = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_otlp_sink_delivers_every_event_through_a_receiver_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GUARD_TEST_OTLP_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    port = free_port()
    records: list[dict[str, Any]] = []
    headers: list[dict[str, str]] = []
    rx = OtlpReceiver(port, records, headers)
    sink = SinkSettings(
        name="otel",
        type="otlp",
        url=f"http://127.0.0.1:{port}",
        token_env="GUARD_TEST_OTLP_TOKEN",
        timeout_s=0.5,
        backoff_min_s=0.05,
        backoff_max_s=0.3,
        batch_size=50,
    )
    s = make_settings(tmp_path, sinks=[sink])
    j = Journal(s, "w1")
    fwd = Forwarder(s, poll_s=0.05)
    fwd.start()
    try:
        for i in range(40):
            j.append_sync(sample(i))
        assert _wait(lambda: len(records) >= 40)
        rx.stop()  # down: connections refused
        for i in range(40, 100):
            j.append_sync(sample(i))
        time.sleep(1.0)
        got_while_down = len(records)
        rx = OtlpReceiver(port, records, headers)  # back on the same port
        for i in range(100, 120):
            j.append_sync(sample(i))
        j.close()
        want = {e["id"]: e for _, _, e in layout.iter_events(tmp_path)}
        assert _wait(lambda: set(want) <= {json.loads(r["body"])["id"] for r in records}), len(records)
    finally:
        fwd.stop()
        rx.stop()
    assert got_while_down < len(want)  # the outage was real: the rest arrived only after the receiver came back
    assert fwd.lag() == {"otel": 0}
    lines = {i: raw for i, _, raw in _raw_lines(tmp_path)}
    for r in records:
        ev = json.loads(r["body"])
        assert r["body"].encode() == lines[ev["id"]]  # the journal line itself
        body = {k: v for k, v in ev.items() if k not in ("hash", "sig")}
        assert hashlib.sha256(canonical(body)).hexdigest() == ev["hash"]
        assert r["event_name"] == ev["type"] and (r["chain"], r["seq"]) == (ev["chain"], ev["seq"])
        assert r["scope"] == "guard.audit" and r["service"] == "guard" and r["time_ns"] > 0
    assert all(h.get("authorization") == f"Bearer {TOKEN}" for h in headers)
    assert TOKEN not in caplog.text


def _raw_lines(root: Path) -> list[tuple[str, Path, bytes]]:
    out = []
    for chain in layout.chain_names(root):
        for seg in layout.segments(root, chain):
            out += [(json.loads(line)["id"], seg, line) for _, _, line in layout.iter_lines(seg)]
    return out


def test_otlp_sink_settings_need_a_url() -> None:
    with pytest.raises(ValueError, match="needs url"):
        SinkSettings(name="o", type="otlp")
