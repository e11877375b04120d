"""Content keys: captured prompts and answers are encrypted per period, so destroying a key deletes them.

With ``audit.capture`` ``redacted`` or ``full`` the texts do not enter the journal in clear: the recorder
puts an AES-256-GCM ciphertext in the event's ``content.sealed`` member, under the key of the UTC day the
record was made (``<key_dir>/<YYYY-MM-DD>.key``, 32 random bytes, mode 0600). The journal hashes and signs
the event with that ciphertext in it, so every hash, link, checkpoint and proof commits to the ciphertext.
``guard audit prune`` destroys the keys of days older than ``audit.retention.content_days``
(crypto-shredding): the texts can no longer be read anywhere the journal was copied to, while the journal
still verifies byte for byte. ``guard audit export`` opens what it still has a key for and marks the rest
``shredded``. The metadata (who, when, which model, decisions, finding types) stays readable until
``audit.retention.metadata_days`` and the ordinary prune of whole segments.

The associated data binds a ciphertext to its period and request id, so it cannot be moved to another
event's record unnoticed (and the event's hash covers it anyway). A marker file ``SHREDDED`` holds the last
day shredded: no key is created again for a day at or before it (a clock set back cannot revive a period).
Encryption and key handling are ``cryptography``'s AESGCM; nothing here is hand-written crypto.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from guard.keyfiles import write_private

ALG = "AES-256-GCM"
MARKER = "SHREDDED"
_AAD = b"guard-audit-content\x00"
_KEEP = 4  # periods whose keys stay cached in a running worker
_PERIOD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ContentKeyError(Exception):
    """A content key cannot be made or read (the record is refused: fail closed)."""


def period_of(ns: int) -> str:
    """The key period of a time in ns since the epoch: its UTC day."""
    return time.strftime("%Y-%m-%d", time.gmtime(ns // 1_000_000_000))


def _aad(period: str, request_id: str) -> bytes:
    return _AAD + period.encode() + b"\x00" + request_id.encode("utf-8", "surrogatepass")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


class ContentKeys:
    """The key folder of one journal. ``clock`` (ns since the epoch) picks the period; tests pass their own."""

    def __init__(self, key_dir: Path, clock: Callable[[], int] = time.time_ns) -> None:
        self.dir = Path(key_dir)
        self.clock = clock
        self._cache: dict[str, AESGCM] = {}
        self._opened: dict[str, AESGCM | None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ContentKeys({str(self.dir)!r})"

    def path(self, period: str) -> Path:
        return self.dir / f"{period}.key"

    def shredded_through(self) -> str:
        try:
            return (self.dir / MARKER).read_text().strip()
        except OSError:
            return ""

    def _key(self, period: str, create: bool) -> AESGCM | None:
        with self._lock:
            k = self._cache.get(period)
        if k is not None:
            return k
        p = self.path(period)
        if not p.exists():
            if not create:
                return None
            if period <= self.shredded_through():
                raise ContentKeyError(f"content key period {period} was shredded; the clock is behind")
            try:
                self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                with contextlib.suppress(FileExistsError):  # workers starting a day together race for it
                    write_private(p, AESGCM.generate_key(bit_length=256))
            except OSError as e:
                raise ContentKeyError(f"cannot create content key {p}: {e.strerror or e}") from None
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ContentKeyError(f"cannot read content key {p}: {e.strerror or e}") from None
        if len(raw) != 32:
            raise ContentKeyError(f"content key {p} is not 32 bytes")
        k = AESGCM(raw)
        if create:  # only the writer's current periods are kept in memory
            with self._lock:
                self._cache[period] = k
                for old in sorted(self._cache)[:-_KEEP]:
                    del self._cache[old]
        return k

    def ready(self) -> None:
        """Make (or read) the current period's key now: a key folder Guard cannot use fails at start-up, with
        its reason, rather than refusing every request that captures text."""
        self._key(period_of(self.clock()), create=True)

    def seal(self, texts: dict[str, str], request_id: str) -> dict[str, Any]:
        """``texts`` (prompt and/or answer) encrypted under the current period's key: the ``sealed`` member."""
        period = period_of(self.clock())
        key = self._key(period, create=True)
        assert key is not None
        nonce = os.urandom(12)
        data = json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
        ct = key.encrypt(nonce, data, _aad(period, request_id))
        return {"alg": ALG, "period": period, "nonce": _b64(nonce), "ct": _b64(ct)}

    def open(self, sealed: dict[str, Any], request_id: str) -> dict[str, str] | None:
        """The texts, or None when the period's key is gone (shredded). ContentKeyError when the key exists
        and the ciphertext does not open under it."""
        period = str(sealed.get("period", ""))
        if sealed.get("alg") != ALG or not _PERIOD.fullmatch(period):
            raise ContentKeyError(f"unknown sealed content ({sealed.get('alg')!r}, period {period[:40]!r})")
        if period not in self._opened:  # a reader (export) keeps what it read: one file read per period
            self._opened[period] = self._key(period, create=False)
        key = self._opened[period]
        if key is None:
            return None
        try:
            nonce, ct = base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ct"])
            out = json.loads(key.decrypt(nonce, ct, _aad(period, request_id)).decode("utf-8", "surrogatepass"))
        except (InvalidTag, KeyError, ValueError) as e:
            raise ContentKeyError(f"sealed content of period {period} does not open: {type(e).__name__}") from None
        return {k: v for k, v in out.items() if k in ("prompt", "answer") and isinstance(v, str)}

    def periods(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.key") if p.is_file())

    def shred_before(self, day: str, dry_run: bool = False) -> list[str]:
        """Destroy the keys of every period before ``day`` (YYYY-MM-DD); return those periods. The marker is
        written first, so a worker cannot recreate a key for a period being shredded."""
        gone = [p for p in self.periods() if p < day]
        if dry_run or not gone:
            return gone
        last = max(gone[-1], self.shredded_through())
        write_private(self.dir / MARKER, (last + "\n").encode(), replace=True)
        for period in gone:
            p = self.path(period)
            with contextlib.suppress(FileNotFoundError):
                with open(p, "r+b") as f:  # overwrite first: a plain unlink leaves the bytes on many disks
                    f.write(b"\0" * 32)
                    f.flush()
                    os.fsync(f.fileno())
                p.unlink()
            with self._lock:
                self._cache.pop(period, None)
                self._opened.pop(period, None)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return gone


def cutoff_day(now_ns: int, days: int) -> str:
    """The first day kept when ``days`` days are kept up to ``now_ns`` (periods before it are shredded)."""
    return period_of(now_ns - days * 86_400 * 1_000_000_000)


def reveal(event: dict[str, Any], keys: ContentKeys | None) -> dict[str, Any]:
    """``event`` with its sealed content opened (``prompt``/``answer``) or marked ``shredded``; unchanged when it
    has none. The result no longer hashes to the event's ``hash``: it is for reading, not for verifying."""
    c = event.get("content")
    if not isinstance(c, dict) or not isinstance(c.get("sealed"), dict):
        return event
    sealed = c["sealed"]
    out = {k: v for k, v in c.items() if k != "sealed"}
    out["period"] = sealed.get("period", "")
    texts = None
    if keys is not None:
        try:
            texts = keys.open(sealed, str(event.get("request_id", "")))
        except ContentKeyError as e:
            out["unreadable"] = str(e)
            return {**event, "content": out}
    if texts is None:
        out["shredded"] = True
    else:
        out.update(texts)
    return {**event, "content": out}


def parse_day(ts: str) -> str:
    """YYYY-MM-DD of an RFC 3339 time or date."""
    d = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).strftime("%Y-%m-%d")
