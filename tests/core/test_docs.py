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


def test_every_key_in_the_configuration_reference_exists():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_]+(?:\[\])?(?:\.[A-Za-z_*]+)*)`", row.split("|")[1]))
    assert len(keys) > 25
    missing = sorted(k for k in keys if k != "audit.*" and not _has(Config, k.split(".")))
    assert not missing, missing
