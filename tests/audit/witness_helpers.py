"""Witnesses for tests: `guard audit witness` started as a real process on loopback, and a log's checkpoints."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import merkle
from guard.audit import note as notes
from guard.audit.witness import witness_keygen


@dataclass
class WitnessProc:
    name: str
    url: str
    vkey: str
    dir: Path
    proc: subprocess.Popen[bytes]
    listen: str
    logs: Path
    extra: tuple[str, ...] = ()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.proc, _ = _spawn(self.dir, self.listen, self.logs, self.extra)  # the same port again

    @property
    def refused(self) -> list[dict[str, object]]:
        p = self.dir / "witness-state" / "refused.jsonl"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def _spawn(d: Path, listen: str, logs: Path, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """Start `guard audit witness`; returns the process and the address it bound (port 0: a free one, read
    from its first stdout line, so no other process can take the port in between)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guard.cli",
            "audit",
            "witness",
            "--listen",
            listen,
            "--key",
            str(d / "witness-key.pem"),
            "--logs",
            str(logs),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=open(d / "witness.log", "ab"),  # noqa: SIM115
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"witness did not start: {(d / 'witness.log').read_text()[-2000:]}")
    return proc, line.split()[-1]


def start_witness(root: Path, name: str, log_lines: list[str], tls: tuple[Path, Path] | None = None) -> WitnessProc:
    d = root / name.replace("/", "_")
    _, vkey = witness_keygen(d, name)  # what `guard audit witness-keygen` does
    logs = d / "logs.conf"
    logs.write_text("# log verifier keys\n" + "\n".join(log_lines) + "\n")
    extra = ("--tls-cert", str(tls[0]), "--tls-key", str(tls[1])) if tls else ()
    proc, listen = _spawn(d, "127.0.0.1:0", logs, extra)
    url = f"https://localhost:{listen.rsplit(':', 1)[1]}" if tls else f"http://{listen}"
    return WitnessProc(name, url, vkey, d, proc, listen, logs, extra)


class TestLog:
    """A log: leaves, its key, checkpoints and consistency proofs (guard.audit.merkle)."""

    __test__ = False

    def __init__(self, origin: str, key: Ed25519PrivateKey | None = None) -> None:
        self.origin = origin
        self.key = key or Ed25519PrivateKey.generate()
        self.leaves: list[bytes] = []

    @property
    def vkey(self) -> str:
        return str(notes.Verifier.for_key(self.origin, self.key.public_key()))

    def add(self, n: int, tag: str = "") -> None:
        for _ in range(n):
            self.leaves.append(merkle.leaf_hash(f"event {len(self.leaves)} {tag}".encode()))

    def text(self, size: int | None = None) -> bytes:
        size = len(self.leaves) if size is None else size
        root = merkle.root(self.leaves[:size])
        return f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()

    def checkpoint(self, size: int | None = None, key: Ed25519PrivateKey | None = None) -> bytes:
        t = self.text(size)
        return t + b"\n" + notes.Signer(self.origin, key or self.key).signature_line(t).encode()

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        return merkle.consistency_proof(self.leaves, old, len(self.leaves) if new is None else new)

    def body(self, old: int, new: int | None = None, key: Ed25519PrivateKey | None = None) -> bytes:
        size = len(self.leaves) if new is None else new
        proof = self.proof(old, size) if 0 < old <= size else []
        lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        return f"old {old}\n{lines}\n".encode() + self.checkpoint(new, key)
