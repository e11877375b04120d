"""Time to get K=2 witness cosignatures (and an RFC 3161 token) per checkpoint, on loopback, against a
checkpoint without them, in alternating rounds of one run.

    python -m tests.bench.bench_witness            (BENCH_QUICK=1: fewer rounds)

Each round appends 100 events (untimed), then times one of:
  checkpoint            journal.checkpoint_now(): seal the checkpoint event, fsync, sign and store the note
  + 2 cosignatures      the same, then the notary's add-checkpoint to two `guard audit witness` processes
                        (in parallel, keep-alive, consistency proof from the previous checkpoint), both checked
  + RFC 3161 token      the same, then a token from a local `openssl ts -reply` TSA (one process per request)
  + both                the token and the two cosignatures, asked for at the same time (what Guard does)
Medians over the rounds; ratios against the checkpoint row of the same run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import event as ev
from guard.audit import logtree
from guard.audit import note as notes
from guard.audit.journal import Journal
from guard.audit.notary import Notary
from guard.audit.seal import Signer
from guard.audit.settings import AuditSettings, TimestampSettings, WitnessSettings
from tests.audit.conftest import sample
from tests.audit.tsa_server import LocalTsa
from tests.audit.witness_helpers import start_witness

ROUNDS = 10 if os.environ.get("BENCH_QUICK") == "1" else 30


def main() -> None:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        key = Ed25519PrivateKey.generate()
        line = f"{notes.Verifier.for_key('guard-audit', key.public_key())} guard-audit/*"
        w1 = start_witness(tmp, "bench/w1", [line])
        w2 = start_witness(tmp, "bench/w2", [line])
        try:
            with LocalTsa(tmp / "tsa") as tsa:
                root = tmp / "audit"
                base = {"dir": root, "checkpoint_events": 10**6, "checkpoint_seconds": 3600.0}
                j = Journal(AuditSettings(**base), "bench", signer=Signer(key))
                wit = Notary(
                    AuditSettings(**base, witnesses=[WitnessSettings(url=w.url, key=w.vkey) for w in (w1, w2)])
                )
                tsa_s = TimestampSettings(url=tsa.url, ca=tsa.ca)
                tst = Notary(AuditSettings(**base, timestamp=tsa_s))
                both = Notary(
                    AuditSettings(
                        **base, timestamp=tsa_s, witnesses=[WitnessSettings(url=w.url, key=w.vkey) for w in (w1, w2)]
                    )
                )
                assert both.cosigner is not None
                both.cosigner.close()
                both.cosigner = wit.cosigner  # one client knows the size each witness holds (no 409 round trip)
                j.append_sync(ev.guard_started("bench"))
                rows: dict[str, list[float]] = {
                    "checkpoint": [],
                    "+ 2 cosignatures": [],
                    "+ RFC 3161 token": [],
                    "+ both": [],
                }
                n = 0
                for r in range(ROUNDS + 1):
                    for name in rows:
                        for _ in range(100):
                            j.append_sync(sample(n))
                            n += 1
                        t0 = time.perf_counter()
                        j.checkpoint_now()
                        if name == "+ 2 cosignatures":
                            assert wit.run_once() == 1
                        elif name == "+ RFC 3161 token":
                            assert tst.run_once() == 1
                        elif name == "+ both":
                            assert both.run_once() == 1
                        dt = time.perf_counter() - t0
                        if r:  # the first round warms connections and caches
                            rows[name].append(dt)
                            if name == "+ 2 cosignatures":
                                rec = wit.last["bench"]
                                assert len(rec["witnesses"]) == 2, rec["failed"]
                j.close()
                size = logtree.noted_size(root, "bench")
        finally:
            w1.stop()
            w2.stop()
    base_ms = statistics.median(rows["checkpoint"]) * 1000
    print(f"witness benchmark: {ROUNDS} rounds, 100 events between checkpoints, final tree size {size}")
    print(f"{'row':<20} {'median ms':>10} {'p90 ms':>8} {'x checkpoint':>13}")
    for name, xs in rows.items():
        med = statistics.median(xs) * 1000
        p90 = sorted(xs)[int(0.9 * (len(xs) - 1))] * 1000
        print(f"{name:<20} {med:>10.2f} {p90:>8.2f} {med / base_ms:>13.2f}")


if __name__ == "__main__":
    main()
