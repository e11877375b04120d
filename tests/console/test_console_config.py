"""console: settings are checked at start-up, with the file, line and key of a mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guard.config import ConfigError, load_config
from guard.demo.stack import guard_config, write_config
from guard.runtime import Runtime


def _cfg(pki_dir: Path, tmp_path: Path, **over: Any) -> Path:
    return write_config(tmp_path / "guard.yaml", guard_config(pki_dir, "http://127.0.0.1:9", 0, 0, **over))


def test_console_without_a_way_to_log_in_is_refused(pki_dir: Path, tmp_path: Path) -> None:
    p = _cfg(pki_dir, tmp_path, console={"enabled": True})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:" in str(e.value) and "console" in str(e.value) and "token_env or client_ca" in str(e.value)


def test_console_needs_the_admin_listener_and_knows_its_keys(pki_dir: Path, tmp_path: Path) -> None:
    p = _cfg(pki_dir, tmp_path, console={"enabled": True, "token_env": "X"}, admin={"enabled": False})
    with pytest.raises(ConfigError, match="admin listener only"):
        load_config(p)
    p = _cfg(pki_dir, tmp_path, console={"enabled": True, "token_env": "X", "colour": "red"})
    with pytest.raises(ConfigError, match=r"console\.colour: unknown key"):
        load_config(p)


@pytest.mark.parametrize("value", [None, "", "short"])
def test_an_unset_empty_or_short_token_stops_guard(
    pki_dir: Path, tmp_path: Path, value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("GUARD_TEST_CT", raising=False)
    else:
        monkeypatch.setenv("GUARD_TEST_CT", value)
    cfg = load_config(_cfg(pki_dir, tmp_path, console={"enabled": True, "token_env": "GUARD_TEST_CT"}))
    with pytest.raises(ConfigError, match=r"console\.token_env"):
        Runtime(cfg).load()
