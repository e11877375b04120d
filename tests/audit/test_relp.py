"""The RELP sink against rsyslog's own imrelp module (rsyslogd with rsyslog-relp, Debian packages): every event
arrives through an outage, and what is sent twice is at most the batch that was in flight, where plain syslog
re-sends its replay window. The framing parser refuses what is not RELP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from guard.audit import layout
from guard.audit.forwarder import Forwarder
from guard.audit.journal import Journal
from guard.audit.relp import _parse
from guard.audit.sinks import SinkError

from .conftest import make_settings, sample
from .rsyslog_helpers import have_imrelp, outage


@pytest.mark.skipif(not have_imrelp(), reason="needs rsyslogd with imrelp (Debian packages rsyslog, rsyslog-relp)")
def test_relp_through_an_outage_loses_nothing_and_resends_at_most_the_batch_in_flight(tmp_path: Path) -> None:
    r = outage(tmp_path, "relp", outage_s=1.0, write_s=3.0, batch_size=50)
    assert r["written"] > 300 and r["missing"] == 0, r
    assert r["duplicates"] <= r["batch_size"], r  # only what was sent and not yet acknowledged


def test_the_relp_parser_takes_whole_frames_and_refuses_what_is_not_relp() -> None:
    assert _parse(b"1 rsp 6 200 OK\n") == (1, b"rsp", b"200 OK", 15)
    assert _parse(b"0 serverclose 0\n") == (0, b"serverclose", b"", 16)
    assert _parse(b"12 rsp 6 200 OK\n3 rsp") == (12, b"rsp", b"200 OK", 16)
    for partial in (b"", b"1", b"1 rsp", b"1 rsp 6", b"1 rsp 6 200 O", b"1 rsp 6 200 OK"):
        assert _parse(partial) is None, partial
    for bad in (
        b"x rsp 6 200 OK\n",
        b"1 r$p 6 200 OK\n",
        b"1 rsp 6 200 OKX",
        b"1 rsp 6x200 OK\n",
        b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 40,
        b"1 rsp " + b"9" * 12 + b" x\n",
    ):
        with pytest.raises(SinkError):
            _parse(bad)


class StandInRelp(threading.Thread):
    """A RELP server speaking the protocol as librelp does (open -> rsp 200 with offers, one rsp per syslog
    frame), that on its first session acknowledges only the first ``ack_first`` messages and then drops the
    connection (a SIEM crashing mid-batch). It records every message it received, per session."""

    def __init__(self, ack_first: int) -> None:
        super().__init__(daemon=True)
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.ack_first = ack_first
        self.sessions: list[list[str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            self._session(conn, first=not self.sessions)

    def _session(self, conn: socket.socket, first: bool) -> None:
        got: list[str] = []
        self.sessions.append(got)
        buf = b""
        with conn:
            while True:
                frame = _parse(buf)
                if frame is None:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    continue
                txnr, command, data, used = frame
                buf = buf[used:]
                if command == b"open":
                    offers = b"200 OK\nrelp_version=0\nrelp_software=stand-in\ncommands=syslog"
                    conn.sendall(b"%d rsp %d %s\n" % (txnr, len(offers), offers))
                elif command == b"syslog":
                    got.append(data.split(b' id="', 1)[1].split(b'"', 1)[0].decode())
                    if first and len(got) > self.ack_first:  # crash: this one and what follows stay unanswered
                        conn.shutdown(socket.SHUT_WR)  # (a FIN after the answers sent, not a reset that drops them)
                        conn.settimeout(5)
                        while conn.recv(65536):
                            pass
                        return
                    conn.sendall(b"%d rsp 6 200 OK\n" % txnr)
                elif command == b"close":
                    conn.sendall(b"%d rsp 0\n" % txnr)
                    return


def test_after_a_session_breaks_mid_batch_relp_resends_from_the_first_unacknowledged_event(tmp_path: Path) -> None:
    server = StandInRelp(ack_first=37)
    server.start()
    s = make_settings(
        tmp_path / "audit",
        sinks=[
            {
                "name": "relp",
                "type": "relp",
                "host": "127.0.0.1",
                "port": server.port,
                "batch_size": 100,
                "backoff_min_s": 0.05,
            }
        ],
    )
    j = Journal(s, "w1")
    for i in range(80):
        j.append_sync(sample(i))
    fwd = Forwarder(s, poll_s=0.05)
    fwd.start()
    want = [e["id"] for _, _, e in layout.iter_events(tmp_path / "audit")]
    try:
        deadline = time.monotonic() + 20
        while len(server.sessions) < 2 or set(want) - {i for sess in server.sessions for i in sess}:
            assert time.monotonic() < deadline, [len(x) for x in server.sessions]
            time.sleep(0.05)
    finally:
        fwd.stop()
        j.close()
        server.stop.set()
    first, second = server.sessions[0], server.sessions[1]
    assert first[:37] == want[:37] and len(first) == 38  # 37 acknowledged, the 38th sent when it crashed
    assert second[0] == want[37], (second[:3], want[36:39])  # the retry starts at the first unacknowledged event
    assert not set(first[:37]) & set(second)  # nothing acknowledged is sent again
