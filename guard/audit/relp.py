"""RELP sink: syslog messages with an acknowledgement for each, as rsyslog's imrelp module offers.

RELP (the Reliable Event Logging Protocol, librelp's protocol, spoken by rsyslog's imrelp/omrelp) frames every
message as ``TXNR SP COMMAND SP DATALEN [SP DATA] LF`` and the server answers each with ``TXNR rsp LEN 200 OK``
once it has taken the message. This module implements that framing only (the session, ``open``, ``syslog``,
``close`` and the ``rsp``/``serverclose`` answers); TLS, when asked, is Python's ssl with verification on, as
for the syslog sink (rsyslog's imrelp with ``tls="on"``).

``send`` returns when every message of the batch was acknowledged, so the forwarder moves its cursor only past
acknowledged events; when the session breaks mid-batch, SinkError says how many leading events were
acknowledged and the forwarder's retry starts at the first that was not. After an outage it re-sends only
messages sent but not acknowledged, not a replay window as plain syslog must. The messages are RFC 5424, the same as the
syslog sink's, so each carries
the event's stable ``id`` (and ``chain``, ``seq``) for SIEM-side de-duplication of that remainder.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from guard.audit.formats import FORMATTERS, as_text
from guard.audit.settings import SinkSettings
from guard.audit.sinks import SinkError, _ssl_context, syslog_message

_OFFERS = b"relp_version=0\nrelp_software=guard\ncommands=syslog"
_MAX_TXNR = 999_999_999
_MAX_FRAME = 1 << 20  # an answer larger than this is not RELP


def _parse(buf: bytes) -> tuple[int, bytes, bytes, int] | None:
    """The first whole frame in ``buf``: (txnr, command, data, bytes used); None when more is needed.
    Raises SinkError when the bytes cannot be RELP."""
    i = buf.find(b" ", 0, 11)
    j = buf.find(b" ", i + 1, i + 34) if i > 0 else -1
    if i < 0 or j < 0:
        if len(buf) > 44:
            raise SinkError("not a RELP frame")
        return None
    txnr, command = buf[:i], buf[i + 1 : j]
    k = j + 1
    while k < len(buf) and k - j <= 10 and 48 <= buf[k] <= 57:
        k += 1
    if k == len(buf):
        return None
    if not (txnr.isdigit() and command.isalpha() and k > j + 1):
        raise SinkError("not a RELP frame")
    size = int(buf[j + 1 : k])
    start = k + 1 if size else k
    if size and buf[k : k + 1] != b" ":
        raise SinkError("not a RELP frame")
    if len(buf) < start + size + 1:
        return None
    if buf[start + size : start + size + 1] != b"\n":
        raise SinkError("RELP frame without its trailer")
    return int(txnr), command, buf[start : start + size], start + size + 1


class Relp:
    stream = False  # each message is acknowledged: the cursor moves only past acknowledged events

    def __init__(self, s: SinkSettings) -> None:
        self.name, self.s, self.fmt = s.name, s, FORMATTERS[s.format]
        self.port = s.port or 2514
        self.ctx = _ssl_context(s.ca) if s.tls else None
        self.sock: socket.socket | None = None
        self.txnr = 0
        self.buf = b""
        self.hostname = socket.gethostname().split(".")[0][:255]

    # --- framing ----------------------------------------------------------------------------------------

    def _frame(self, command: bytes, data: bytes) -> tuple[int, bytes]:
        self.txnr = self.txnr % _MAX_TXNR + 1
        head = b"%d %s %d" % (self.txnr, command, len(data))
        return self.txnr, head + (b" " + data if data else b"") + b"\n"

    def _read_frame(self) -> tuple[int, bytes, bytes]:
        """One frame from the server: (txnr, command, data)."""
        assert self.sock is not None
        while True:
            frame = _parse(self.buf)
            if frame is not None:
                txnr, command, data, used = frame
                self.buf = self.buf[used:]
                return txnr, command, data
            if len(self.buf) > _MAX_FRAME:
                raise SinkError(f"sink {self.name}: not a RELP answer")
            try:
                chunk = self.sock.recv(65536)
            except OSError as e:
                raise SinkError(f"sink {self.name}: receive: {e}") from None
            if not chunk:
                raise SinkError(f"sink {self.name}: connection closed by the server")
            self.buf += chunk

    def _answers(self, expected: set[int]) -> None:
        """Read until every transaction in ``expected`` was answered ``200``."""
        while expected:
            txnr, command, data = self._read_frame()
            if command == b"serverclose":
                raise SinkError(f"sink {self.name}: the server closed the session")
            if command != b"rsp" or txnr not in expected:
                raise SinkError(f"sink {self.name}: unexpected RELP {command[:16]!r} for transaction {txnr}")
            if not data.startswith(b"200"):
                raise SinkError(f"sink {self.name}: refused: {data[:80].decode('utf-8', 'replace')}")
            expected.discard(txnr)

    # --- session ----------------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            sock = socket.create_connection((self.s.host, self.port), timeout=self.s.timeout_s)
            if self.ctx:
                sock = self.ctx.wrap_socket(sock, server_hostname=self.s.host)
        except OSError as e:
            raise SinkError(f"sink {self.name}: connect {self.s.host}:{self.port}: {e}") from None
        self.sock, self.txnr, self.buf = sock, 0, b""
        t, frame = self._frame(b"open", _OFFERS)
        self._sendall(frame)
        self._answers({t})

    def _sendall(self, data: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise SinkError(f"sink {self.name}: send: {e}") from None

    def send(self, events: list[dict[str, Any]]) -> None:
        try:
            if self.sock is None:
                self._open()
            frames, order = [], []
            for e in events:
                msg = syslog_message(e, as_text(self.fmt(e)).replace("\n", " "), self.hostname)
                t, frame = self._frame(b"syslog", msg)
                frames.append(frame)
                order.append(t)
            expected = set(order)
            try:
                self._sendall(b"".join(frames))
                self._answers(expected)
            except SinkError as e:  # the events before the first unanswered one are delivered
                acked = next((i for i, t in enumerate(order) if t in expected), len(order))
                raise SinkError(str(e), acked=acked) from None
        except SinkError:
            self.reset()
            raise

    def alive(self) -> bool:
        return self.sock is not None

    def reset(self) -> None:
        """Close the session (politely when the connection still works) and forget it."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            sock.settimeout(0.5)
            self.txnr = self.txnr % _MAX_TXNR + 1
            sock.sendall(b"%d close 0\n" % self.txnr)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.close()


__all__ = ["Relp"]
