"""The README's configuration reference names only keys the schema has (STYLE: docs checked against it)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from guard.config import Config

ROOT = Path(__file__).resolve().parents[2]


def _has(model: type[BaseModel], path: list[str]) -> bool:
    for i, part in enumerate(path):
        if part in ("NAME", "*"):  # a dict value: dict[str, Model]
            continue
        field = model.model_fields.get(part.removesuffix("[]"))
        if field is None:
            return False
        ann = field.annotation
        for arg in getattr(ann, "__args__", ()) or ():  # Optional[Model], list[Model], dict[str, Model]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                ann = arg
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif i < len(path) - 1 and path[i + 1] not in ("NAME",):
            return False
    return True


def _filter_schemas() -> dict[str, type[BaseModel]]:
    """Rows about a screening file (first cell names it, e.g. `safety.yaml`) are checked against its profile
    schema."""
    from guard.screens.denylist.settings import DenylistProfile
    from guard.screens.pii.settings import Profile
    from guard.screens.safety.settings import SafetyProfile

    return {"safety.yaml": SafetyProfile, "pii.yaml": Profile, "denylist.yaml": DenylistProfile}


def test_every_key_in_the_configuration_reference_exists():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    keys: set[tuple[str, str]] = set()
    schemas = _filter_schemas()
    for row in section.splitlines():
        if row.startswith("| `"):
            cell = row.split("|")[1]
            files = [f for f in schemas if f"`{f}`" in cell]
            for part in cell.split(";"):  # "`pii.yaml` `a`; `denylist.yaml` `b`, `c`"
                files = [f for f in schemas if f"`{f}`" in part] or files
                for k in re.findall(r"`([a-z_]+(?:\[\])?(?:\.[A-Za-z_*]+)*)`", part):
                    if k not in schemas:
                        keys.add((files[0] if files else "", k))
    assert len(keys) > 25
    missing = sorted(k for f, k in keys if k != "audit.*" and not _has(schemas[f] if f else Config, k.split(".")))  # type: ignore[arg-type]
    assert not missing, missing


# --- docs/architecture.md: the request path's stages are the code's --------------------------------------


def _code_stages() -> set[str]:
    """Every duration the request path records (guard.stages.TIMINGS): the timed stages and their timed parts."""
    from guard.stages import TIMINGS

    return set(TIMINGS)


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_architecture_stages_match_the_pipeline():
    """The diagram names the code's stages (guard.stages.STAGES), in the order the pipeline runs them, and the
    listing's (LISTING); the table names every duration the code records."""
    from guard.stages import LISTING, STAGES

    code = _code_stages()
    assert {"identity", "parse", "policy", "audit", "upstream_total"} <= code, code
    path = _section((ROOT / "docs/architecture.md").read_text(), "## The request path")
    diagram = path.split("```text", 1)[1].split("```", 1)[0]
    in_diagram = re.findall(r"\[([a-z_]+)\]", diagram)
    assert in_diagram == [s.name for s in STAGES], (in_diagram, [s.name for s in STAGES])
    listing = re.search(r"^`GET /v1/models`.*?\.$", path, re.MULTILINE | re.DOTALL)
    assert listing is not None
    assert re.findall(r"`\[([a-z_]+)\]`", listing.group(0)) == [s.name for s in LISTING]
    in_table = {m for m in re.findall(r"^\| `([a-z_]+)` \|", path, re.MULTILINE)}
    assert in_table == code, (sorted(in_table), sorted(code))


def test_readme_stage_metric_lists_the_pipeline_stages():
    row = next(
        r
        for r in (ROOT / "README.md").read_text().splitlines()
        if "guard_stage_duration_seconds" in r and r.startswith("| ")
    )
    listed = set(re.findall(r"[a-z_]+", row.split("latency per stage:", 1)[1]))
    assert listed == _code_stages(), listed


# --- no development history in the product --------------------------------------------------------------

HISTORY = re.compile(
    "|".join(
        [
            r"\bsessions?\s+\d+",  # "session 9"
            r"\b(?:this|last|previous|earlier|next|that|the\s+session's)\s+session\b",
            r"(?<!TLS )(?<!HTTP )\bsession's\b",
            r"\bround\s+\d+\b(?!\s*\|)",  # "round 3" (a table column named round is fine)
            r"\bearlier\s+figures\b",
            r"\bin\s+an\s+earlier\s+run\b",
        ]
    ),
    re.IGNORECASE,
)


def _product_files() -> list[Path]:
    files = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "audit").rglob("*.md"),
        *(ROOT / "policies").rglob("*.md"),
        *(ROOT / "filters").rglob("*.yaml"),
    ]
    for folder, pattern in (("deploy", "*"), ("guard", "*.py"), ("guard", "*.c"), ("tests", "*.py")):
        files += [p for p in (ROOT / folder).rglob(pattern) if p.is_file() and "__pycache__" not in p.parts]
    this = Path(__file__).resolve()  # holds the pattern's own examples
    return [p for p in files if p.suffix not in (".so", ".pyc", ".png") and p.resolve() != this]


def test_no_development_history_words():
    found = []
    for path in _product_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            m = HISTORY.search(line)
            if m:
                found.append(f"{path.relative_to(ROOT)}:{i}: {m.group(0)!r}")
    assert not found, "words about how the project was developed (history belongs in git):\n" + "\n".join(found)


def test_history_pattern_catches_the_family():
    for bad in (
        "figures from session 9",
        "Session 10 figures",
        "in this session",
        "round 2 gave",
        "Earlier figures (2 cores)",
        "in an earlier run",
    ):
        assert HISTORY.search(bad), bad
    for fine in (
        "a TLS session ticket",
        "the TLS session's keys",
        "aiohttp.ClientSession()",
        "one caller's upstream session",
        "| round | 1 | 2 |",
    ):
        assert not HISTORY.search(fine), fine


# --- docs/benchmarks.md: written by make bench ----------------------------------------------------------


def test_make_bench_writes_docs_benchmarks_md(tmp_path):
    from tests.bench import report

    run = (ROOT / "tests/bench/run.py").read_text()
    assert "from tests.bench.report import write" in run and "write(" in run
    results = {
        "quick": True,
        "time": "2026-01-01T00:00:00Z",
        "core": {
            "rows": [
                {"target": "baseline", "conns": 16, "rps": 9000.0},
                {"target": "guard-mtls", "conns": 16, "rps": 5400.0},
            ],
            "ratios": {"guard-mtls_vs_baseline_c16": 0.6},
        },
    }
    path = report.write(results, {"core": "core proxy benchmark"}, tmp_path / "benchmarks.md")
    text = path.read_text()
    assert "| date (UTC) | 2026-01-01T00:00:00Z |" in text
    assert re.search(r"^\| commit \| [0-9a-f]{7,}", text, re.MULTILINE)
    assert re.search(r"^\| cpu \| .+ \|$", text, re.MULTILINE) and re.search(
        r"^\| cores \| \d+ usable of \d+ \|$", text, re.MULTILINE
    )
    assert "## core proxy benchmark (`core`)" in text
    assert "| baseline | 16 | 9,000 |" in text and "| guard-mtls | 16 | 5,400 |" in text
    assert "| `ratios.guard-mtls_vs_baseline_c16` | 0.600 |" in text
    committed = (ROOT / "docs/benchmarks.md").read_text()
    assert "| date (UTC) |" in committed and "| commit |" in committed and "| cpu |" in committed
    readme = (ROOT / "README.md").read_text()
    assert "](docs/benchmarks.md)" in readme and "](docs/architecture.md)" in readme
