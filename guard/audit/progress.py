"""Progress of long `guard audit verify` / `export` runs, for people and for scripts.

On a terminal: one line rewritten in place, ``verify: 42% (84,000 of ~200,000 events), about 12 s left``.
Otherwise (a pipe, a CI log, a GUI wrapper): one JSON object per line on stderr, at most once a second or
every 5 percent, whichever comes first, and a last one with ``"done": true``::

    {"progress": "verify", "events": 84000, "total_estimate": 200000, "percent": 42.0, "eta_s": 12.1,
     "elapsed_s": 8.8, "done": false}

The total is an estimate: the journal's size divided by the mean size of an event, taken from a sample of the
newest segment's first 256 KiB (counting the events exactly would mean reading everything twice).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

from guard.audit import layout

_SAMPLE = 256 * 1024


def estimate_events(root: Path) -> int:
    """About how many events the journal under ``root`` holds (0 when it holds none)."""
    segs = [s for c in layout.chain_names(root) for s in layout.segments(root, c)]
    total = sum(s.stat().st_size for s in segs)
    if not total:
        return 0
    with open(max(segs, key=lambda s: s.stat().st_size), "rb") as f:
        sample = f.read(_SAMPLE)
    lines = sample.count(b"\n")
    mean = len(sample[: sample.rfind(b"\n") + 1]) / lines if lines else float(len(sample) or 1)
    return max(1, round(total / mean))


class Progress:
    def __init__(
        self, label: str, total: int, stream: TextIO | None = None, tty: bool | None = None, every_s: float = 1.0
    ) -> None:
        self.label, self.total = label, max(0, total)
        self.out = stream or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.every_s = every_s
        self.t0 = time.monotonic()
        self._last_t = -1e9
        self._last_pct = -100.0
        self.n = 0

    def _doc(self, n: int, done: bool) -> dict[str, object]:
        el = time.monotonic() - self.t0
        total = max(self.total, n)
        pct = 100.0 if done else (100.0 * n / total if total else 0.0)
        eta = 0.0 if done else (el * (total - n) / n if n else None)
        return {
            "progress": self.label,
            "events": n,
            "total_estimate": total,
            "percent": round(min(pct, 99.9 if not done else 100.0), 1),
            "eta_s": None if eta is None else round(eta, 1),
            "elapsed_s": round(el, 1),
            "done": done,
        }

    def __call__(self, n: int) -> None:
        self.n = n
        now = time.monotonic()
        d = self._doc(n, False)
        pct = float(d["percent"])  # type: ignore[arg-type]
        if now - self._last_t < self.every_s and pct - self._last_pct < 5.0:
            return
        self._last_t, self._last_pct = now, pct
        self._emit(d)

    def finish(self, n: int | None = None) -> None:
        self._emit(self._doc(self.n if n is None else n, True))
        if self.tty:
            print(file=self.out, flush=True)

    def _emit(self, d: dict[str, object]) -> None:
        if not self.tty:
            print(json.dumps(d), file=self.out, flush=True)
            return
        eta = d["eta_s"]
        left = "" if d["done"] else (", estimating time left" if eta is None else f", about {_span(float(eta))} left")  # type: ignore[arg-type]
        line = f"\r{self.label}: {d['percent']}% ({d['events']:,} of ~{d['total_estimate']:,} events){left}"
        print(line.ljust(78), end="", file=self.out, flush=True)


def _span(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
