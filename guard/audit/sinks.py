"""SIEM sinks: Splunk HEC, syslog (RFC 5424 over TCP, RFC 5425 octet counting, optional TLS), webhook, file.

Each sink is synchronous and used by one forwarder thread. ``send`` returns only when the destination
acknowledged the batch (HTTP 2xx, fsync) or, for syslog, the bytes were handed to TCP; it raises SinkError
otherwise. Secrets (HEC token, webhook secret) come from environment variables and never appear in errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import select
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from guard.audit.formats import FORMATTERS, as_text, effect, epoch_ms
from guard.audit.settings import SinkSettings

SYSLOG_SD_ID = "guard@32473"  # 32473: the enterprise number RFC 5612 reserves for documentation
_FACILITY = 13  # log audit


class SinkError(Exception):
    """Delivery failed; ``acked``: how many events at the start of the batch the sink did acknowledge."""

    def __init__(self, msg: str, acked: int = 0) -> None:
        super().__init__(msg)
        self.acked = acked


class Sink(Protocol):
    name: str
    stream: bool  # True when TCP acceptance is the only acknowledgement (replayed after a reconnect)

    def send(self, events: list[dict[str, Any]]) -> None: ...

    def alive(self) -> bool: ...

    def reset(self) -> None: ...


def _secret(env: str | None, what: str) -> str:
    v = os.environ.get(env or "", "")
    if not v:
        raise SinkError(f"{what}: environment variable {env} is not set")
    return v


def _ssl_context(ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx  # verification and hostname checks stay on


class _Http:
    """One kept-alive HTTP(S) connection to a URL."""

    def __init__(self, url: str, ca: Path | None, timeout: float) -> None:
        u = urlsplit(url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname or "localhost", u.port or (443 if self.https else 80)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.ctx = _ssl_context(ca) if self.https else None
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = (
                http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ctx)
                if self.https
                else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            )
        try:
            self.conn.request("POST", self.path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise SinkError(f"{self.host}:{self.port}: {type(e).__name__}: {e}") from None
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return resp.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class SplunkHEC:
    stream = False

    def __init__(self, s: SinkSettings) -> None:
        url = (s.url or "").rstrip("/")
        if not url.endswith("/services/collector/event"):
            url += "/services/collector/event"
        self.name, self.s, self.fmt = s.name, s, FORMATTERS[s.format]
        self.http = _Http(url, s.ca, s.timeout_s)
        self.host = socket.gethostname()
        fixed: dict[str, Any] = {"host": self.host, "source": "guard", "sourcetype": s.sourcetype}
        if s.index:
            fixed["index"] = s.index
        self._fixed = json.dumps(fixed, separators=(",", ":"), ensure_ascii=False)[1:-1].encode()

    def _item(self, e: dict[str, Any]) -> bytes:
        head = b'{"time":%.6f,%s,"event":' % (epoch_ms(e["time"]) / 1000, self._fixed)
        raw = getattr(e, "raw", None)
        if raw is not None and self.s.format == "json":
            return head + raw + b"}"  # the journal line as written: no re-encoding
        return head + json.dumps(self.fmt(e), separators=(",", ":"), ensure_ascii=False).encode() + b"}"

    def send(self, events: list[dict[str, Any]]) -> None:
        token = _secret(self.s.token_env, f"sink {self.name}")
        body = b"\n".join(self._item(e) for e in events)
        status, data = self.http.post(body, {"Authorization": f"Splunk {token}", "Content-Type": "application/json"})
        if status != 200:
            raise SinkError(f"sink {self.name}: HEC answered {status}: {data[:200]!r}")

    def alive(self) -> bool:
        return True

    def reset(self) -> None:
        self.http.close()


class Webhook:
    """POST {"events": [...]} with X-Guard-Signature: sha256=HMAC(secret, timestamp + "." + body)."""

    stream = False

    def __init__(self, s: SinkSettings) -> None:
        self.name, self.s, self.fmt = s.name, s, FORMATTERS[s.format]
        self.http = _Http(s.url or "", s.ca, s.timeout_s)

    def send(self, events: list[dict[str, Any]]) -> None:
        secret = _secret(self.s.secret_env, f"sink {self.name}").encode()
        body = json.dumps(
            {"events": [self.fmt(e) for e in events], "count": len(events)}, separators=(",", ":"), ensure_ascii=False
        ).encode()
        ts = str(int(time.time()))
        sig = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        status, _data = self.http.post(
            body, {"Content-Type": "application/json", "X-Guard-Timestamp": ts, "X-Guard-Signature": f"sha256={sig}"}
        )
        if not 200 <= status < 300:
            raise SinkError(f"sink {self.name}: webhook answered {status}")

    def alive(self) -> bool:
        return True

    def reset(self) -> None:
        self.http.close()


def webhook_signature_ok(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
    """For receivers (and tests): check X-Guard-Signature."""
    want = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, header)


def _sd_value(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(e: dict[str, Any], text: str, hostname: str) -> bytes:
    """One RFC 5424 message (without framing)."""
    failed = e.get("type") == "policy.reload_failed" or (e.get("reload") or {}).get("result") == "failed"
    sev = 4 if effect(e) == "deny" or failed else 6
    msgid = "".join(c for c in e.get("type", "-") if 33 <= ord(c) <= 126)[:32] or "-"
    eid, chain = _sd_value(e.get("id", "")), _sd_value(e.get("chain", ""))
    sd = f'[{SYSLOG_SD_ID} id="{eid}" chain="{chain}" seq="{e.get("seq", "")}"]'
    return f"<{_FACILITY * 8 + sev}>1 {e['time']} {hostname or '-'} guard - {msgid} {sd} {text}".encode()


class Syslog:
    stream = True

    def __init__(self, s: SinkSettings) -> None:
        self.name, self.s, self.fmt = s.name, s, FORMATTERS[s.format]
        self.port = s.port or (6514 if s.tls else 601)
        self.ctx = _ssl_context(s.ca) if s.tls else None
        self.sock: socket.socket | None = None
        self.hostname = socket.gethostname().split(".")[0][:255]

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.s.host, self.port), timeout=self.s.timeout_s)
            if self.ctx:
                sock = self.ctx.wrap_socket(sock, server_hostname=self.s.host)
        except OSError as e:
            raise SinkError(f"sink {self.name}: connect {self.s.host}:{self.port}: {e}") from None
        return sock

    def send(self, events: list[dict[str, Any]]) -> None:
        if self.sock is not None and not self.alive():
            self.reset()  # what went out on the old connection may be lost: the forwarder replays it
            raise SinkError(f"sink {self.name}: connection closed by the server")
        if self.sock is None:
            self.sock = self._connect()
        frames = []
        for e in events:
            msg = syslog_message(e, as_text(self.fmt(e)).replace("\n", " "), self.hostname)
            frames.append(b"%d " % len(msg) + msg)
        try:
            self.sock.sendall(b"".join(frames))
        except OSError as e:
            self.reset()
            raise SinkError(f"sink {self.name}: send: {e}") from None

    def alive(self) -> bool:
        """The server never writes to us; a readable socket means it closed (or failed) the connection."""
        if self.sock is None:
            return False
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not r

    def reset(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


class FileSink:
    stream = False

    def __init__(self, s: SinkSettings) -> None:
        self.name, self.s, self.fmt = s.name, s, FORMATTERS[s.format]
        self.path = Path(s.path or "")

    def send(self, events: list[dict[str, Any]]) -> None:
        data = b"".join(
            (e.raw if self.s.format == "json" and hasattr(e, "raw") else as_text(self.fmt(e)).encode()) + b"\n"
            for e in events
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise SinkError(f"sink {self.name}: {self.path}: {e.strerror}") from None

    def alive(self) -> bool:
        return True

    def reset(self) -> None:
        pass
