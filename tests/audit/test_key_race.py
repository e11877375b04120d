"""Workers (and their sealers) starting together create the content HMAC key and the signing key once, and
none of them reads a half-written file (the race that made a second worker fail with an empty key)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import sys, time
from pathlib import Path
from guard.audit.settings import AuditSettings
from guard.audit.event import _hmac_key
from guard.audit.seal import load_or_create_signer
d = Path(sys.argv[1])
while time.time() < float(sys.argv[2]):  # every process past its imports, then all at once
    pass
key = _hmac_key(AuditSettings(dir=d))
signer = load_or_create_signer(None, d)
print(key.hex(), signer.key_id)
"""


def test_processes_starting_together_share_one_whole_key(tmp_path: Path) -> None:
    for round_ in range(2):
        d = tmp_path / f"audit{round_}"
        go = str(time.time() + 2.5)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, str(d), go], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(6)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e for _, e in outs if e]
        seen = {o.strip() for o, _ in outs}
        assert len(seen) == 1, seen
        hmac_hex, key_id = seen.pop().split()
        assert len(bytes.fromhex(hmac_hex)) == 32 and len(key_id) == 16
        assert not list((d / "keys").glob(".*.tmp"))  # no temporary file left behind
