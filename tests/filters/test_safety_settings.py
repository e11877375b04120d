"""filters/safety.yaml: the shipped file and its commented examples validate; mistakes name file:line: key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guard.config import ConfigError
from guard.screens.safety.settings import LocalBackend, OllamaBackend, load_safety

SHIPPED = Path(__file__).resolve().parents[2] / "filters" / "safety.yaml"


def test_shipped_settings_load() -> None:
    s = load_safety(SHIPPED.parent)
    p = s.profile()
    assert p.backend.type == "openai" and p.threshold == 0.5 and p.fail.on_error == "block"
    assert p.taxonomy().default and len(p.taxonomy().categories) == 14


def test_commented_examples_validate(tmp_path: Path) -> None:
    head, _, tail = SHIPPED.read_text().partition("More examples")
    text = head + re.sub(r"^(\s*)# (?=\s*[a-z_]+:|\s*- )", r"\1", tail, flags=re.M)
    f = tmp_path / "safety.yaml"
    f.write_text(text)
    s = load_safety(f)
    assert {"default", "ollama", "local", "custom"} <= set(s.profiles)
    assert isinstance(s.profile("ollama").backend, OllamaBackend)
    assert isinstance(s.profile("local").backend, LocalBackend)
    assert s.profile("local").taxonomy().codes == {f"S{i}" for i in range(1, 14)}
    assert not s.profile("custom").taxonomy().default
    assert s.injection is not None and s.injection.window_tokens == 512


@pytest.mark.parametrize(
    "body,where",
    [
        (
            "profiles:\n  a:\n    backend: {type: openai, url: http://x}\n    treshold: 0.4\n",
            r":5: profiles.a.treshold: unknown key",
        ),
        ("profiles:\n  a:\n    backend: {type: carrier-pigeon}\n", r":4: profiles.a.backend"),
        (
            "profiles:\n  a:\n    backend:\n      type: openai\n      url: ftp://x\n",
            r":6: profiles.a.backend.openai.url",
        ),
        ("default: b\nprofiles:\n  a:\n    backend: {type: ollama}\n", r":1: .*unknown profile 'b'"),
        (
            "profiles:\n  a:\n    backend: {type: ollama}\n"
            "    excluded_categories: [S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11, S12, S13, S14]\n",
            r"every category is excluded",
        ),
    ],
)
def test_mistakes_name_file_line_and_key(tmp_path: Path, body: str, where: str) -> None:
    f = tmp_path / "safety.yaml"
    f.write_text("default: a\n" + body if not body.startswith("default") else body)
    with pytest.raises(ConfigError, match=where):
        load_safety(f)


def test_relative_model_path_is_relative_to_the_file(tmp_path: Path) -> None:
    f = tmp_path / "safety.yaml"
    f.write_text("profiles:\n  default:\n    backend: {type: local, model_path: models/lg}\n")
    assert load_safety(f).profile().backend.model_path == tmp_path / "models/lg"
