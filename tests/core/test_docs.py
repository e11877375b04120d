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
    from guard.filters.denylist import DenylistProfile
    from guard.filters.pii_settings import Profile
    from guard.filters.safety_settings import SafetyProfile

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
    missing = sorted(k for f, k in keys if k != "audit.*"
                     and not _has(schemas[f] if f else Config, k.split(".")))  # type: ignore[arg-type]
    assert not missing, missing
