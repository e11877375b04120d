"""docs/benchmarks.md: the one current performance table, written by `make bench` (tests/bench/run.py) from
the results of the run that just finished, with the machine, the UTC date and the commit it ran on.

Every scenario's result is rendered the same way: lists of rows become tables, nested figures become
``name | value`` rows; nothing is copied by hand, so the page is only ever one run's figures."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, str]:
    """What the figures were measured on: CPU model, cores usable by this process, memory, OS, Python."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": f"{usable} usable of {os.cpu_count()}",
        "memory": mem or "unknown",
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + (" (with uncommitted changes)" if dirty else "")) if rev else "unknown"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols and not isinstance(r[c], (dict, list))]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return out


def _scalars(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _scalars(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def _flatten(value: Any, prefix: str, scalars: list[tuple[str, Any]], tables: list[tuple[str, list[dict]]]) -> None:
    if isinstance(value, dict) and len(value) > 1 and all(isinstance(v, dict) for v in value.values()):
        tables.append((prefix, [{"": k, **_scalars(v)} for k, v in value.items()]))  # e.g. one row per size
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), scalars, tables)
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        tables.append((prefix, value))
    elif isinstance(value, list):
        scalars.append((prefix, ", ".join(_fmt(x) for x in value)))
    else:
        scalars.append((prefix, value))


def render(results: dict[str, Any], what: dict[str, str]) -> str:
    """Markdown for one run's ``results`` (run.py's bench.json); ``what`` names each scenario key."""
    m = machine()
    lines = [
        "# Benchmarks",
        "",
        (
            "Written by `make bench` (`python -m tests.bench.run`, tests/bench/report.py) from one run; do not "
            "edit by hand. Speed figures are meaningful as ratios against the baseline rows measured in the same "
            "run (README: Performance says what each scenario measures)."
        ),
        "",
        "| run | |",
        "|---|---|",
        f"| date (UTC) | {results.get('time', '')} |",
        f"| commit | {commit()} |",
        f"| scenarios | {', '.join(k for k in results if k not in ('time', 'quick', 'only'))} |",
        f"| short run (`BENCH_QUICK`) | {'yes' if results.get('quick') else 'no'} |",
        *(f"| {k} | {_fmt(v)} |" for k, v in m.items()),
        "",
    ]
    run_line = (
        f"Measured {results.get('time', '')}, commit {commit()}, short run: {'yes' if results.get('quick') else 'no'}."
    )
    for key, value in results.items():
        if key in ("time", "quick", "only"):
            continue
        lines += [f"## {what.get(key, key)} (`{key}`)", "", run_line, ""]
        scalars: list[tuple[str, Any]] = []
        tables: list[tuple[str, list[dict]]] = []
        _flatten(value, "", scalars, tables)
        for name, rows in tables:
            if name:
                lines += [f"`{name}`:", ""]
            lines += [*_table(rows), ""]
        if scalars:
            lines += ["| figure | value |", "|---|---|"] + [f"| `{k}` | {_fmt(v)} |" for k, v in scalars] + [""]
    return "\n".join(lines)


def _sections(text: str) -> dict[str, str]:
    """The ``## ... (`key`)`` sections of a written document, by scenario key."""
    out: dict[str, str] = {}
    for part in re.split(r"(?m)^(?=## )", text):
        m = re.match(r"## .*\(`([^`]+)`\)\s*$", part.split("\n", 1)[0])
        if m:
            out[m.group(1)] = part.rstrip("\n") + "\n"
    return out


def write(results: dict[str, Any], what: dict[str, str], path: Path = DOC) -> Path:
    """Write the run's document. A run of some scenarios (``BENCH_ONLY``) keeps the sections of the others
    from the file as it was (each section says when and at which commit it was measured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(results, what)
    if results.get("only") and path.exists():
        kept = {k: s for k, s in _sections(path.read_text()).items() if k not in results}
        if kept:
            text = text.rstrip("\n") + "\n\n" + "\n".join(kept[k] for k in sorted(kept))
    path.write_text(text)
    return path
