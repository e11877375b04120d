"""Cost of screening JSON-text fields (tool-call arguments, tool results) decoded, in-process, shipped filters.

  denylist  raw:      DenylistScreen.scan of the text as written (what a screen blind to escapes does)
            decoded:  DenylistScreen.scan_segment (as written, and its decoded view: every escape JSON does
                      not need decoded; edits in offsets of the text as written), on text with JSON escapes
  pii       strings:  parse, rewrite each string value, serialise (string values only, keys and numbers not read)
            all:      ScanPass.json_text (guard.screens.json_text: keys, strings and numbers)

Arguments: an object of 12 members (strings of prose with a few ``\\u`` escapes, numbers, a nested list).
Alternating rounds, median per variant; reported as microseconds per text and the ratio against the first
variant of each pair, measured in the same run.
Run: python -m tests.bench.bench_jsontext   (or BENCH_ONLY=jsontext python -m tests.bench.run)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _arguments() -> str:
    members = []
    for i in range(12):
        if i % 3 == 0:
            members.append(f'"n{i}": {1000 + i * 37}')
        elif i % 3 == 1:
            members.append(f'"items{i}": [1, 2.5, "caf\\u00e9", {{"k": "v{i}"}}]')
        else:
            members.append(f'"note{i}": "the report for week {i} is ready, please check the \\"summary\\" section"')
    return "{" + ", ".join(members) + "}"


def _time(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    return measure(rounds=3 if quick else 7, n=50 if quick else 200)


def measure(rounds: int = 7, n: int = 200) -> dict[str, Any]:
    from guard.screens.denylist.screen import DenylistScreen
    from guard.screens.denylist.settings import load_denylist
    from guard.screens.pii.profile import load_pii_profiles
    from guard.screens.pii.scan import ScanPass
    from guard.screens.pii.transform import Pseudonyms, map_json_strings, parse_json_container

    text = _arguments()
    deny = DenylistScreen.from_settings(load_denylist(ROOT / "filters"))
    profile = load_pii_profiles(ROOT / "filters" / "pii.yaml")["default"]

    def pii_strings() -> str:
        scan = ScanPass(profile, "response", Pseudonyms())
        obj = parse_json_container(text)
        new = map_json_strings(obj, scan.text)
        return text if new == obj else json.dumps(new, ensure_ascii=False)

    def pii_all() -> str:
        return ScanPass(profile, "response", Pseudonyms()).json_text(text)

    variants: dict[str, Callable[[], Any]] = {
        "denylist raw": lambda: deny.scan(text, "prompt"),
        "denylist decoded": lambda: deny.scan_segment(text, "tool_arguments", "prompt"),
        "pii strings": pii_strings,
        "pii all": pii_all,
    }
    for f in variants.values():
        f()  # warm caches (the PII analyzer loads lazily)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in order:
            times[k].append(_time(variants[k], n if k.startswith("denylist") else max(n // 10, 5)))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "text_chars": len(text),
        "us_per_text": {k: round(v, 1) for k, v in med.items()},
        "ratios": {
            "denylist decoded / raw": round(med["denylist decoded"] / med["denylist raw"], 2),
            "pii all / strings": round(med["pii all"] / med["pii strings"], 2),
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
