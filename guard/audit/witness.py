"""A transparency-log witness (C2SP tlog-witness): ``guard audit witness --listen HOST:PORT --key KEY --logs FILE``.

    POST /add-checkpoint      body: "old <size>\\n", up to 63 base64 consistency-proof lines, "\\n", checkpoint note

For a log it knows (``--logs``: one log verifier key per line, ``<vkey> [origin ...]``; an origin ending in
``*`` is a prefix), the witness checks the log's signature on the checkpoint, that ``old`` is the size it
last cosigned (else 409 with its size, ``text/x.tlog.size``), that the proof shows the new tree extends the
one it last saw (else 422), persists the new checkpoint (write, fsync, rename, fsync of the folder) and only
then answers 200 with its cosignature line (tlog-cosignature v1, Ed25519). Unknown origin 404, no valid log
signature 403, malformed or ``old`` above the size 400; the same size with another root hash is a fork: 409.
The check of ``old`` and the write are one step per log (a lock), so two racing requests cannot roll it back.
A refused request whose log signature holds is evidence of a fork: it is appended to ``<state>/refused.jsonl``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import note as notes
from guard.audit.cosign import cosign
from guard.audit.merkle import verify_consistency
from guard.audit.note import Checkpoint, NoteError

log = logging.getLogger("guard.audit.witness")
MAX_BODY = 128 * 1024
MAX_PROOF = 63
SIZE_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class LogEntry:
    key: notes.Verifier
    origins: tuple[str, ...]  # exact origins, or prefixes ending in "*"

    def matches(self, origin: str) -> bool:
        return any(origin.startswith(o[:-1]) if o.endswith("*") else origin == o for o in self.origins)


def load_logs(path: Path) -> list[LogEntry]:
    """``<vkey> [origin ...]`` per line (origin defaults to the key's name); ``#`` comments, blank lines."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        vkey, *origins = line.split()
        try:
            key = notes.Verifier.parse(vkey)
        except NoteError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
        out.append(LogEntry(key, tuple(origins) or (key.name,)))
    return out


def load_witness_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


class Refusal(Exception):
    def __init__(self, status: int, reason: str, body: str = "", content_type: str = "text/plain") -> None:
        super().__init__(reason)
        self.status, self.reason, self.body, self.content_type = status, reason, body, content_type


def parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """(old size, proof hashes, checkpoint note) of an add-checkpoint body; Refusal(400) when malformed."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise Refusal(400, "no empty line before the checkpoint")
    lines = head.split(b"\n")
    first = lines[0].decode("ascii", "replace")
    if not first.startswith("old ") or not (first[4:] == "0" or (first[4:].isdigit() and first[4] != "0")):
        raise Refusal(400, "the first line must be 'old <size>'")
    old = int(first[4:])
    if len(lines) - 1 > MAX_PROOF:
        raise Refusal(400, f"more than {MAX_PROOF} proof lines")
    proof = []
    for ln in lines[1:]:
        try:
            h = base64.b64decode(ln, validate=True)
        except binascii.Error:
            raise Refusal(400, "a proof line is not base64") from None
        if len(h) != 32:
            raise Refusal(400, "a proof hash is not 32 bytes")
        proof.append(h)
    return old, proof, note


class Witness:
    """The witness state: its key, the logs it knows, and the last checkpoint it cosigned per origin."""

    def __init__(self, name: str, key: Ed25519PrivateKey, logs: list[LogEntry], state: Path) -> None:
        self.name, self.key, self.logs = name, key, logs
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self.cosigned = 0
        self.refused: dict[int, int] = {}

    def _file(self, origin: str) -> Path:
        return self.state / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.json"

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        """(size, root) last cosigned for ``origin``; None if never. A state file that cannot be read refuses
        the request (500): taking it for "never" would let any history in."""
        try:
            d = json.loads(self._file(origin).read_text())
            if d["origin"] != origin:
                raise ValueError("another origin")
            root = base64.b64decode(d["root"], validate=True)
            if len(root) != 32:
                raise ValueError("bad root")
            return int(d["size"]), root
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("witness state for %s unreadable: %s", origin, e)
            raise Refusal(500, "witness state unreadable") from None

    def _persist(self, cp: Checkpoint, note: bytes) -> None:
        path = self._file(cp.origin)
        rec = {
            "origin": cp.origin,
            "size": cp.size,
            "root": base64.b64encode(cp.root).decode(),
            "checkpoint": note.decode(),
            "time": int(time.time()),
        }
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(json.dumps(rec, indent=1).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.state, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _evidence(self, origin: str, reason: str, old: int, proof: list[bytes], note: bytes) -> None:
        """Keep a validly signed checkpoint that was refused: it may show the log forked."""
        rec = {
            "time": int(time.time()),
            "origin": origin,
            "reason": reason,
            "old": old,
            "proof": [base64.b64encode(h).decode() for h in proof],
            "checkpoint": note.decode(),
        }
        with contextlib.suppress(OSError), open(self.state / "refused.jsonl", "ab") as f:
            f.write(json.dumps(rec).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    async def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line(s) for a valid request; Refusal otherwise."""
        old, proof, note = parse_request(body)
        try:
            parsed = notes.parse(note)
            cp = notes.parse_checkpoint(parsed.text)
        except NoteError as e:
            raise Refusal(400, f"bad checkpoint: {e}") from None
        text = parsed.text.encode()
        keys = []
        for entry in self.logs:
            if entry.matches(cp.origin):  # the log signs with the key under its origin's name (guard-audit/<chain>)
                keys.append(entry.key)
                if entry.key.name != cp.origin:
                    keys.append(notes.Verifier.for_key(cp.origin, entry.key.public_key))
        if not keys:
            raise Refusal(404, "unknown log")
        try:
            notes.open_note(note, keys)  # a known key's bad signature, or none at all: refused
        except NoteError:
            raise Refusal(403, "no valid signature by the log's key") from None
        if old > cp.size:
            raise Refusal(400, "old size is larger than the checkpoint's")
        lock = self._locks.setdefault(cp.origin, asyncio.Lock())
        async with lock:
            prev = self.latest(cp.origin)
            size, root = prev if prev else (0, b"")
            if old != size:
                raise Refusal(409, "old size is not the latest cosigned size", f"{size}\n", SIZE_TYPE)
            if old == cp.size:
                if prev is not None and cp.root != root:
                    self._evidence(cp.origin, "fork: same size, another root hash", old, proof, note)
                    raise Refusal(409, "same size, another root hash", f"{size}\n", SIZE_TYPE)
                if proof:
                    raise Refusal(422, "a proof between equal sizes must be empty")
            elif old == 0:
                if proof:
                    raise Refusal(422, "a proof from size 0 must be empty")
            elif not verify_consistency(old, cp.size, root, cp.root, proof):
                self._evidence(cp.origin, "inconsistent", old, proof, note)
                raise Refusal(422, "the consistency proof does not verify")
            await asyncio.to_thread(self._persist, cp, note)
            line = cosign(text, self.name, self.key, int(time.time()))
        self.cosigned += 1
        return line

    async def latest_note(self, origin: str) -> str | None:
        """The last checkpoint cosigned for ``origin`` (as the log signed it) with a cosignature made now: as of
        now, this is the largest consistent tree the witness has seen of that log (tlog-cosignature v1)."""
        async with self._locks.setdefault(origin, asyncio.Lock()):
            if self.latest(origin) is None:
                return None
            note = str(json.loads(self._file(origin).read_text())["checkpoint"])
        text = notes.parse(note).text.encode()
        return note + cosign(text, self.name, self.key, int(time.time()))

    async def handle_latest(self, request: web.Request) -> web.Response:
        """GET /checkpoint/<origin>: for monitors and auditors (not part of tlog-witness, which leaves monitor
        retrieval open): compare it with the journal (`guard audit verify --checkpoint`)."""
        origin = request.match_info["origin"]
        if not any(e.matches(origin) for e in self.logs):
            return web.Response(status=404, text="unknown log\n")
        try:
            note = await self.latest_note(origin)
        except Refusal as r:
            return web.Response(status=r.status, text=f"{r.reason}\n")
        if note is None:
            return web.Response(status=404, text="no checkpoint of this log yet\n")
        return web.Response(status=200, text=note, content_type="text/plain")

    async def handle(self, request: web.Request) -> web.Response:
        try:
            try:
                body = await request.read()  # the whole body, chunked or not; over client_max_size: 413
            except web.HTTPRequestEntityTooLarge:
                raise Refusal(413, "request too large") from None
            line = await self.add_checkpoint(body)
        except Refusal as r:
            self.refused[r.status] = self.refused.get(r.status, 0) + 1
            log.info("add-checkpoint refused (%d): %s", r.status, r.reason)
            return web.Response(status=r.status, text=r.body or f"{r.reason}\n", content_type=r.content_type)
        return web.Response(status=200, text=line, content_type="text/plain")


def make_app(w: Witness) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/add-checkpoint", w.handle)
    app.router.add_get("/checkpoint/{origin:.+}", w.handle_latest)
    return app


def serve(listen: str, w: Witness, tls: tuple[Path, Path] | None = None) -> None:
    """Serve until SIGTERM or SIGINT. Port 0 takes a free port; the first line on stdout is always
    ``listening on HOST:PORT`` (what a supervisor or a test reads to find it)."""
    import signal

    host, _, port = listen.rpartition(":")

    async def run() -> None:
        runner = web.AppRunner(make_app(w), access_log=None)
        await runner.setup()
        ctx = None
        if tls is not None:  # HTTPS with this certificate (TLS 1.2 or later); clients verify it with their CA
            import ssl

            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port), ssl_context=ctx)
        await site.start()
        bound = runner.addresses[0]
        print(f"listening on {bound[0]}:{bound[1]}", flush=True)
        log.info("witness %s listening on %s:%s for %d log key(s)", w.name, bound[0], bound[1], len(w.logs))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())


def witness_keygen(out: Path, name: str) -> tuple[Path, str]:
    """Write ``witness-key.pem`` (0600) and ``witness.vkey`` (the verifier key Guard's config names)."""
    from guard.audit.cosign import witness_vkey
    from guard.keyfiles import write_private

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    priv = write_private(out / "witness-key.pem", pem)
    vkey = witness_vkey(name, key)
    (out / "witness.vkey").write_text(vkey + "\n")
    return priv, vkey


def describe(w: Witness) -> dict[str, Any]:
    return {"name": w.name, "cosigned": w.cosigned, "refused": w.refused}
