"""Forwarding from the journal: at-least-once through outages, cursors, signatures, no secrets."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guard import telemetry as tm
from guard.audit import layout
from guard.audit.forwarder import Forwarder
from guard.audit.journal import Journal
from guard.audit.settings import AuditSettings, SinkSettings

from .conftest import fill, make_settings, sample
from .receivers import Receiver, free_port

TOKEN = "hec-token-DO-NOT-LEAK-7f3a"
SECRET = "webhook-secret-DO-NOT-LEAK-91c2"


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _settings(root: Path, *sinks: dict[str, Any]) -> AuditSettings:
    fast = {"backoff_min_s": 0.05, "backoff_max_s": 0.3, "batch_size": 50}
    return make_settings(root, sinks=[SinkSettings(**{**fast, **s}) for s in sinks])


def _ids(root: Path) -> set[str]:
    return {e["id"] for _, _, e in layout.iter_events(root)}


def _write_during(j: Journal, seconds: float, rate: float = 400.0) -> threading.Thread:
    def run() -> None:
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            j.append_sync(sample(i))
            i += 1
            time.sleep(1 / rate)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_hec_outage_delays_but_loses_nothing_and_lag_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GUARD_TEST_HEC_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    with Receiver(token=TOKEN) as rx:
        s = _settings(
            tmp_path, {"name": "splunk", "type": "splunk_hec", "url": rx.url, "token_env": "GUARD_TEST_HEC_TOKEN"}
        )
        j = Journal(s, "w1")
        fwd = Forwarder(s, poll_s=0.05)
        fwd.start()
        writer = _write_during(j, 2.0)
        time.sleep(0.5)
        rx.failing = True
        time.sleep(0.8)
        lag_during = tm.SINK_LAG.labels("splunk")._value.get()
        rx.failing = False
        writer.join()
        j.close()
        want = _ids(tmp_path)
        assert _wait(lambda: want <= {e["id"] for e in rx.events}), len(want - {e["id"] for e in rx.events})
        fwd.stop()
    assert lag_during > 0 and tm.SINK_ERRORS.labels("splunk")._value.get() > 0
    assert tm.SINK_LAG.labels("splunk")._value.get() >= 0
    assert fwd.lag() == {"splunk": 0}
    cursor = json.loads((tmp_path / "cursors" / "splunk.json").read_text())
    assert cursor["chains"]["w1"]["seq"] == max(e["seq"] for _, _, e in layout.iter_events(tmp_path))
    _assert_no_secret(tmp_path, caplog.text, TOKEN)


def test_forwarder_resumes_from_its_persisted_cursor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_TEST_HEC_TOKEN", TOKEN)
    with Receiver(token=TOKEN) as rx:
        s = _settings(
            tmp_path, {"name": "splunk", "type": "splunk_hec", "url": rx.url, "token_env": "GUARD_TEST_HEC_TOKEN"}
        )
        j = Journal(s, "w1")
        fill(j, 30)
        fwd = Forwarder(s, poll_s=0.05)
        fwd.start()
        assert _wait(lambda: len(rx.events) >= 30 + 3)
        fwd.stop()
        first = len(rx.events)
        fill(j, 20, start=100)
        j.close()
        fwd = Forwarder(s, poll_s=0.05)
        fwd.start()
        assert _wait(lambda: _ids(tmp_path) <= {e["id"] for e in rx.events})
        fwd.stop()
    assert len(rx.events) - first <= 25  # only the new events (and the closing checkpoint) were sent again


def test_webhook_batches_are_hmac_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GUARD_TEST_HOOK_SECRET", SECRET)
    caplog.set_level(logging.DEBUG)
    with Receiver(secret=SECRET.encode()) as rx:
        s = _settings(
            tmp_path,
            {
                "name": "hook",
                "type": "webhook",
                "url": f"{rx.url}/hook",
                "secret_env": "GUARD_TEST_HOOK_SECRET",
                "format": "ecs",
            },
        )
        j = Journal(s, "w1")
        fill(j, 12)
        j.close()
        fwd = Forwarder(s, poll_s=0.05)
        fwd.start()
        assert _wait(lambda: rx.count >= len(_ids(tmp_path)))
        fwd.stop()
    assert rx.rejected == 0 and all(h["X-Guard-Signature"].startswith("sha256=") for h in rx.headers)
    assert {e["event"]["id"] for e in rx.events} == _ids(tmp_path)  # ECS documents
    _assert_no_secret(tmp_path, caplog.text, SECRET)


def test_webhook_with_the_wrong_secret_is_retried_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_TEST_HOOK_SECRET", "wrong")
    with Receiver(secret=SECRET.encode()) as rx:
        s = _settings(
            tmp_path,
            {"name": "hook", "type": "webhook", "url": f"{rx.url}/hook", "secret_env": "GUARD_TEST_HOOK_SECRET"},
        )
        j = Journal(s, "w1")
        fill(j, 3)
        fwd = Forwarder(s, poll_s=0.05)
        fwd.start()
        assert _wait(lambda: rx.rejected >= 2)
        assert rx.count == 0 and fwd.lag()["hook"] > 0
        monkeypatch.setenv("GUARD_TEST_HOOK_SECRET", SECRET)
        assert _wait(lambda: rx.count >= 3)
        fwd.stop()
        j.close()


def test_file_sink_writes_json_lines_in_cef(tmp_path: Path) -> None:
    out = tmp_path / "siem" / "guard.cef"
    s = _settings(tmp_path / "a", {"name": "f", "type": "file", "path": str(out), "format": "cef"})
    j = Journal(s, "w1")
    fill(j, 5)
    j.close()
    fwd = Forwarder(s, poll_s=0.05)
    fwd.start()
    assert _wait(lambda: out.exists() and len(out.read_text().splitlines()) == len(_ids(tmp_path / "a")))
    fwd.stop()
    assert all(line.startswith("CEF:0|Guard|Guard|") for line in out.read_text().splitlines())


# --- rsyslog ------------------------------------------------------------------------------------------

_RSYSLOG_CONF = """
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
template(name="msgonly" type="string" string="%msg%\\n")
ruleset(name="guard") {{ action(type="omfile" file="{out}" template="msgonly") }}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="guard")
"""


class Rsyslog:
    def __init__(self, tmp: Path) -> None:
        self.port, self.out = free_port(), tmp / "received.log"
        (tmp / "work").mkdir()
        self.conf, self.pid = tmp / "rsyslog.conf", tmp / "rsyslog.pid"
        self.conf.write_text(_RSYSLOG_CONF.format(work=tmp / "work", out=self.out, port=self.port))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert _wait(lambda: _port_open(self.port), 10), "rsyslogd did not listen"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def ids(self) -> set[str]:
        if not self.out.exists():
            return set()
        got = set()
        for line in self.out.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError):
                got.add(json.loads(line.strip())["id"])
        return got


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="needs the rsyslog Debian package")
def test_rsyslog_stopped_under_load_then_restarted_receives_every_event(tmp_path: Path) -> None:
    rs = Rsyslog(tmp_path)
    rs.start()
    try:
        s = _settings(
            tmp_path / "a",
            {"name": "rsyslog", "type": "syslog", "host": "127.0.0.1", "port": rs.port, "replay_window_s": 0.5},
        )
        j = Journal(s, "w1")
        fwd = Forwarder(s, poll_s=0.05)
        fwd.start()
        writer = _write_during(j, 3.0)
        time.sleep(0.8)
        rs.stop()
        time.sleep(1.0)
        rs.start()
        writer.join()
        j.close()
        want = _ids(tmp_path / "a")
        assert _wait(lambda: want <= rs.ids(), 30), f"missing {len(want - rs.ids())} of {len(want)}"
        fwd.stop()
        assert tm.SINK_ERRORS.labels("rsyslog")._value.get() > 0  # the outage was seen, and survived
    finally:
        rs.stop()


def _assert_no_secret(root: Path, log_text: str, secret: str) -> None:
    assert secret not in log_text
    for p in root.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_every_chain_in_the_directory_is_forwarded(tmp_path: Path) -> None:
    out = tmp_path / "siem.jsonl"
    s = _settings(tmp_path / "a", {"name": "f", "type": "file", "path": str(out)})
    a, b = Journal(s, "host-w0"), Journal(s, "host-w1")
    fill(a, 7)
    fill(b, 9)
    fwd = Forwarder(s, poll_s=0.05)
    fwd.start()
    fill(a, 3, start=50)  # appended while the forwarder runs
    a.close()
    b.close()
    want = _ids(tmp_path / "a")
    assert _wait(lambda: out.exists() and want <= {json.loads(line)["id"] for line in out.read_text().splitlines()})
    fwd.stop()
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == len(want)  # the file sink acknowledges by fsync: no duplicates without failures
    assert {e["chain"] for e in got} == {"host-w0", "host-w1"}
