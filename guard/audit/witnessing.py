"""Guard's side of tlog-witness: ask the configured witnesses to cosign a checkpoint.

``Cosigner.cosign(note, proof_for)`` sends ``add-checkpoint`` to every witness at once (one keep-alive
connection each), with the size that witness last cosigned for this log as ``old`` and the consistency proof
from it (``proof_for(old)``). A witness that answers 409 names its size; the request is made again once from
that size (after a restart Guard need not remember what each witness saw). Each answer's cosignature is
checked with the witness's configured key before it counts; the note with the valid cosignatures appended is
returned with the names of the witnesses that signed and the reason each other one did not.
"""

from __future__ import annotations

import base64
import http.client
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from guard.audit import note as notes
from guard.audit.cosign import NoteError, WitnessKey, check_cosignature, parse_signature_line
from guard.audit.settings import WitnessSettings

log = logging.getLogger("guard.audit.witnessing")
MAX_REPLY = 64 * 1024


@dataclass
class CosignResult:
    note: bytes  # the checkpoint note with the valid cosignatures appended
    signed: dict[str, int] = field(default_factory=dict)  # witness name -> cosignature timestamp
    failed: dict[str, str] = field(default_factory=dict)  # witness name -> why it did not cosign
    seconds: float = 0.0


class _Client:
    """One witness: a keep-alive HTTP(S) connection and the size it last cosigned per origin."""

    def __init__(self, s: WitnessSettings) -> None:
        self.s, self.key = s, WitnessKey.parse(s.key)
        u = urlsplit(s.url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname or "", u.port or (443 if self.https else 80)
        self.path = u.path.rstrip("/") + "/add-checkpoint"
        self.ctx = ssl.create_default_context(cafile=str(s.ca) if s.ca else None) if self.https else None
        self.sizes: dict[str, int] = {}
        self.conn: http.client.HTTPConnection | None = None
        self.lock = threading.Lock()

    def _post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a keep-alive connection the witness closed is opened again once
            if self.conn is None:
                if self.https:
                    self.conn = http.client.HTTPSConnection(
                        self.host, self.port, timeout=self.s.timeout_s, context=self.ctx
                    )
                else:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.s.timeout_s)
            try:
                self.conn.request("POST", self.path, body=body, headers={"Content-Type": "text/plain"})
                resp = self.conn.getresponse()
                data = resp.read(MAX_REPLY + 1)
                if resp.will_close:
                    self.close()
                return resp.status, data[:MAX_REPLY]
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def cosign(
        self, origin: str, size: int, text: bytes, note: bytes, proof_for: Callable[[int], list[bytes]]
    ) -> tuple[str | None, int | None, str]:
        """(cosignature line, its timestamp, "") or (None, None, why not)."""
        with self.lock:
            old = self.sizes.get(origin, 0)
            for _ in range(2):
                if old > size:
                    return None, None, f"the witness saw a larger tree ({old}) than this checkpoint ({size})"
                try:
                    proof = proof_for(old) if 0 < old < size else []
                except (ValueError, OSError) as e:
                    return None, None, f"no consistency proof from {old}: {e}"
                body = f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof) + b"\n" + note
                try:
                    status, data = self._post(body)
                except (OSError, http.client.HTTPException) as e:
                    return None, None, f"unreachable: {e}"
                if status == 409:
                    try:
                        theirs = int(data.decode().strip())
                    except ValueError:
                        return None, None, "409 without a size"
                    if theirs == old:  # same size, another root: the witness holds a different tree
                        return None, None, "409: the witness holds another tree of this size (fork?)"
                    old = theirs
                    continue
                if status != 200:
                    return None, None, f"{status}: {data.decode('utf-8', 'replace').strip()[:200]}"
                for line in data.decode("utf-8", "replace").splitlines():
                    try:
                        ts = check_cosignature(text, parse_signature_line(line), self.key)
                    except NoteError:
                        continue
                    if ts is not None:
                        self.sizes[origin] = size
                        return line + "\n", ts, ""
                return None, None, "the reply holds no valid cosignature by the configured key"
            return None, None, "409 twice"


class Cosigner:
    """Collects cosignatures from ``witnesses`` for one log's checkpoints (thread-safe)."""

    def __init__(self, witnesses: list[WitnessSettings]) -> None:
        self.clients = [_Client(w) for w in witnesses]
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.clients)), thread_name_prefix="guard-cosign")

    def cosign(self, note: bytes, proof_for: Callable[[int], list[bytes]]) -> CosignResult:
        t0 = time.perf_counter()
        parsed = notes.parse(note)
        text = parsed.text.encode()
        cp = notes.parse_checkpoint(parsed.text)
        futs = [self.pool.submit(c.cosign, cp.origin, cp.size, text, note, proof_for) for c in self.clients]
        out = CosignResult(note)
        lines = []
        for c, f in zip(self.clients, futs, strict=True):
            line, ts, why = f.result()
            if line is None or ts is None:
                out.failed[c.key.name] = why
                log.warning("witness %s did not cosign %s@%d: %s", c.key.name, cp.origin, cp.size, why)
            else:
                out.signed[c.key.name] = ts
                lines.append(line)
        out.note = note + "".join(lines).encode()
        out.seconds = time.perf_counter() - t0
        return out

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.pool.shutdown(wait=False)
