"""Configuration errors name the file, the line and the key path; `guard serve` exits 2 on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard.config import ConfigError, load_config

GOOD = """listen: {host: 127.0.0.1, port: 8443}
tls:
  cert: s.pem
  key: s-key.pem
  client_ca: ca.pem
upstreams:
  local: {url: "http://127.0.0.1:8000", api: openai}
routes:
  - {model: "*", upstream: local}
"""


def write(tmp: Path, text: str) -> Path:
    p = tmp / "guard.yaml"
    p.write_text(text)
    return p


def test_good_config_loads_with_paths_relative_to_the_file(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.tls.cert == tmp_path / "s.pem"
    assert cfg.route("llama").upstream == "local"


@pytest.mark.parametrize(
    "change,needle",
    [
        (("  local: {url:", "  local: {urll:"), "guard.yaml:7: upstreams.local.urll: unknown key"),
        (("port: 8443", "port: eighty"), "guard.yaml:1: listen.port: Input should be a valid integer"),
        (("api: openai", "api: grpc"), "guard.yaml:7: upstreams.local.api:"),
        (("routes:", "routez:"), "guard.yaml:8: routez: unknown key"),
        (("upstream: local}", "upstream: nowhere}"), "routes[0] names unknown upstream 'nowhere'"),
        (('url: "http://127.0.0.1:8000"', 'url: "ftp://x"'), "upstreams.local.url: must start with http"),
    ],
)
def test_errors_name_line_and_key_path(tmp_path, change, needle):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD.replace(*change)))
    assert needle in str(e.value)


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD + "limits: {max_body_bytes: [\n"))
    assert "guard.yaml:" in str(e.value) and "invalid YAML" in str(e.value)


def test_duplicate_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="duplicate key 'listen'"):
        load_config(write(tmp_path, GOOD + "listen: {port: 1}\n"))


def test_guard_serve_exits_2_with_the_message(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "guard.cli",
            "serve",
            "--config",
            str(write(tmp_path, GOOD.replace("port: 8443", "port: -1"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "guard.yaml:1: listen.port" in p.stderr


def test_guard_serve_exits_2_when_tls_files_are_missing(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "guard.cli", "serve", "--config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert "tls" in p.stderr
