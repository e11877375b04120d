"""rsyslogd as a SIEM for the sink tests and benchmarks: imrelp (RELP) or imtcp (plain syslog), and an outage
scenario that counts what arrived, what is missing and what came twice."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from guard.audit.forwarder import Forwarder
from guard.audit.journal import Journal
from guard.audit.settings import AuditSettings

from .conftest import make_settings, sample
from .receivers import free_port

_CONF = """
global(workDirectory="{work}" maxMessageSize="64k")
module(load="{module}")
template(name="msgonly" type="string" string="%msg%\\n")
ruleset(name="guard") {{ action(type="omfile" file="{out}" template="msgonly") }}
input(type="{input}" {addr}port="{port}" ruleset="guard")
"""


def have_imrelp() -> bool:
    return shutil.which("rsyslogd") is not None and any(
        Path(d).glob("**/rsyslog/imrelp.so") for d in ("/usr/lib", "/usr/lib64")
    )


class Receiver:
    """rsyslogd listening with imrelp (``relp``) or imtcp (``syslog``), writing each message's text to a file."""

    def __init__(self, tmp: Path, kind: str) -> None:
        self.port, self.out = free_port(), tmp / "received.log"
        (tmp / "work").mkdir(parents=True)
        self.conf = tmp / "rsyslog.conf"
        module, inp, addr = ("imrelp", "imrelp", "") if kind == "relp" else ("imtcp", "imtcp", 'address="127.0.0.1" ')
        self.conf.write_text(
            _CONF.format(work=tmp / "work", out=self.out, port=self.port, module=module, input=inp, addr=addr)
        )
        self.pid = tmp / "rsyslog.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert time.monotonic() < deadline and self.proc.poll() is None, "rsyslogd did not listen"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def ids(self) -> Counter[str]:
        got: Counter[str] = Counter()
        if self.out.exists():
            for line in self.out.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    got[json.loads(line.strip())["id"]] += 1
        return got


def _journal_ids(root: Path) -> set[str]:
    from guard.audit import layout

    return {e["id"] for _, _, e in layout.iter_events(root) if e.get("id")}


def outage(
    tmp: Path, kind: str, outage_s: float, write_s: float, rate: float = 400.0, batch_size: int = 100
) -> dict[str, Any]:
    """Events written at ``rate`` for ``write_s`` while the receiver is down for ``outage_s`` in the middle;
    returns how many were written, received and received more than once. Used by tests/bench too."""
    rs = Receiver(tmp / "rs", kind)
    rs.start()
    sink = {
        "name": kind,
        "type": kind,
        "host": "127.0.0.1",
        "port": rs.port,
        "batch_size": batch_size,
        "backoff_max_s": 1.0,
    }
    if kind == "syslog":
        sink["replay_window_s"] = 2.0
    s: AuditSettings = make_settings(tmp / "audit", sinks=[sink])
    j = Journal(s, "w1")
    fwd = Forwarder(s, poll_s=0.05)
    fwd.start()
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            j.append_sync(sample(i))
            i += 1
            time.sleep(1 / rate)

    t = threading.Thread(target=write)
    t.start()
    try:
        time.sleep((write_s - outage_s) / 2)
        rs.stop()
        time.sleep(outage_s)
        rs.start()
        time.sleep((write_s - outage_s) / 2)
        stop.set()
        t.join()
        j.close()
        want = _journal_ids(tmp / "audit")
        deadline = time.monotonic() + 30
        while not want <= set(rs.ids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        got = rs.ids()
        fwd.stop()
    finally:
        stop.set()
        rs.stop()
    return {
        "kind": kind,
        "written": len(want),
        "missing": len(want - set(got)),
        "duplicates": sum(n - 1 for n in got.values()),
        "batch_size": batch_size,
    }
