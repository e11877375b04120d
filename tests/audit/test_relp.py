"""The RELP sink against rsyslog's own imrelp module (rsyslogd with rsyslog-relp, Debian packages): every event
arrives through an outage, and what is sent twice is at most the batch that was in flight, where plain syslog
re-sends its replay window. The framing parser refuses what is not RELP."""
from __future__ import annotations

from pathlib import Path

import pytest

from guard.audit.relp import _parse
from guard.audit.sinks import SinkError

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
    for bad in (b"x rsp 6 200 OK\n", b"1 r$p 6 200 OK\n", b"1 rsp 6 200 OKX", b"1 rsp 6x200 OK\n",
                b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 40, b"1 rsp " + b"9" * 12 + b" x\n"):
        with pytest.raises(SinkError):
            _parse(bad)
