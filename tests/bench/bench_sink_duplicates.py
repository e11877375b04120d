"""Events a SIEM receives twice after a 15 s outage: plain syslog (re-sends its replay window after a reconnect)
against RELP (each message acknowledged; re-sends at most the batch in flight), both into rsyslogd.

`python -m tests.bench.bench_sink_duplicates` (or BENCH_ONLY=duplicates python -m tests.bench.run); needs rsyslogd
with imrelp (Debian packages rsyslog and rsyslog-relp: `make debian-deps`). Events are written at 400/s for
25 s (BENCH_QUICK=1: 3 s outage in 8 s); the receiver is stopped for the outage in the middle. Reports, per sink,
events written, missing (must be 0) and duplicates (each event's id counted as often as it arrived, minus one).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.audit.rsyslog_helpers import have_imrelp, outage

QUICK = os.environ.get("BENCH_QUICK") == "1"


def run(quick: bool = QUICK) -> dict[str, Any]:
    if not have_imrelp():
        return {"skipped": "needs rsyslogd with imrelp"}
    outage_s, write_s = (3.0, 8.0) if quick else (15.0, 25.0)
    rows = []
    for kind in ("syslog", "relp"):
        with tempfile.TemporaryDirectory() as tmp:
            r = outage(Path(tmp), kind, outage_s=outage_s, write_s=write_s, batch_size=500)
        r["duplicate_pct"] = round(100.0 * r["duplicates"] / max(1, r["written"]), 2)
        rows.append(r)
        print(
            f"{kind:6} written {r['written']:6}  missing {r['missing']:4}  duplicates {r['duplicates']:5} "
            f"({r['duplicate_pct']}%)  batch_size {r['batch_size']}",
            file=sys.stderr,
        )
    return {"outage_s": outage_s, "write_s": write_s, "rate_per_s": 400, "sinks": rows}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
