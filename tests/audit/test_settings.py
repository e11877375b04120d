from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from guard.audit import event as ev
from guard.audit.journal import Journal, default_writer_id
from guard.audit.settings import AuditSettings
from guard.config import ConfigError, load_yaml, validate

from .conftest import make_settings

YAML = """
dir: var/audit
signing_key: keys/audit.pem
durability: batch
batch_window_ms: 20
capture: none
checkpoint_events: 500
checkpoint_seconds: 5
sinks:
  - {name: splunk, type: splunk_hec, url: "https://splunk:8088", token_env: SPLUNK_HEC_TOKEN, ca: ca.pem, format: ocsf}
  - {name: syslog, type: syslog, host: siem.example, port: 6514, tls: true, format: cef}
  - {name: hook, type: webhook, url: "https://hooks.example/guard", secret_env: HOOK_SECRET}
  - {name: archive, type: file, path: out/audit.jsonl, format: ecs}
"""


def test_audit_section_loads_and_resolves_paths(tmp_path: Path) -> None:
    f = tmp_path / "audit.yaml"
    f.write_text(YAML)
    data, lines = load_yaml(f)
    s: AuditSettings = validate(AuditSettings, data, f, lines)
    s.resolve(tmp_path)
    assert s.dir == tmp_path / "var/audit" and s.signing_key == tmp_path / "keys/audit.pem"
    assert [k.type for k in s.sinks] == ["splunk_hec", "syslog", "webhook", "file"]
    assert s.sinks[0].ca == tmp_path / "ca.pem" and s.sinks[3].path == tmp_path / "out/audit.jsonl"


def test_sink_settings_name_what_is_missing(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("sinks:\n  - {name: splunk, type: splunk_hec, url: 'https://x'}\n")
    data, lines = load_yaml(f)
    with pytest.raises(ConfigError, match=r"a.yaml:2: sinks.0: .*needs token_env"):
        validate(AuditSettings, data, f, lines)
    with pytest.raises(ValidationError):
        AuditSettings(sinks=[{"name": "a", "type": "file", "path": "x"}, {"name": "a", "type": "file", "path": "y"}])
    with pytest.raises(ValidationError):
        AuditSettings(sinks=[{"name": "bad name!", "type": "file", "path": "x"}])


def test_writer_ids_are_stable_per_worker_and_sanitised(tmp_path: Path) -> None:
    assert default_writer_id(3).endswith("-w3")
    j = Journal(make_settings(tmp_path), "host/../w 1")
    assert j.chain == "host_.._w_1" and (tmp_path / "chains" / "host_.._w_1").is_dir()
    j.close()


def test_client_supplied_text_that_json_cannot_encode_is_cleaned_not_fatal(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path), "w1")
    e = j.append_sync(
        ev.new_event(
            "exchange.denied",
            request_id="r",
            api="openai",
            operation="chat",
            model="bad\ud800model",
            decisions={},
            outcome={"status": 400, "bytes": 0},
            denial={"stage": "parse", "code": "bad_request"},
        )
    )
    j.close()
    assert e["model"] == "bad?model"
    from guard.audit.seal import load_public_keys
    from guard.audit.verify import verify_dir

    assert verify_dir(tmp_path, load_public_keys([tmp_path / "keys"]), jobs=1).ok


def test_writer_id_template_gives_each_worker_its_own_stable_chain(tmp_path: Path) -> None:
    import os
    import socket

    host = socket.gethostname().split(".")[0]
    s = make_settings(tmp_path)
    j0, j1 = Journal(s, worker=0), Journal(s, worker=1)
    assert (j0.chain, j1.chain) == (f"{host}-w0", f"{host}-w1")
    j0.close()
    j1.close()
    assert default_writer_id(None) == f"{host}-{os.getpid()}"
    assert default_writer_id(2, "guard-{worker}-{host}") == f"guard-2-{host}"
    with pytest.raises(ValidationError, match="writer_id"):
        AuditSettings(writer_id="{hostname}")


def test_segments_also_rotate_by_age(tmp_path: Path) -> None:
    import time

    from guard.audit import layout

    from .conftest import fill

    j = Journal(make_settings(tmp_path, segment_max_seconds=0.1), "w1")
    fill(j, 2)
    time.sleep(0.15)
    fill(j, 2)
    j.close()
    assert len(layout.segments(tmp_path, "w1")) == 2


def test_retention_and_start_record_errors_name_file_line_and_key(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("dir: a\nretention:\n  metadata_days: 183\n  content_days: 400\n")
    data, lines = load_yaml(f)
    with pytest.raises(ConfigError, match=r"r.yaml:2: retention: .*content_days \(400\) must not exceed metadata_days"):
        validate(AuditSettings, data, f, lines)
    f.write_text("dir: a\nstart_record: sometimes\n")
    data, lines = load_yaml(f)
    with pytest.raises(ConfigError, match=r"r.yaml:2: start_record: .*overlap.*before_forward"):
        validate(AuditSettings, data, f, lines)
    f.write_text("dir: a\nretention: {content_days: 0}\n")
    data, lines = load_yaml(f)
    with pytest.raises(ConfigError, match=r"r.yaml:2: retention.content_days"):
        validate(AuditSettings, data, f, lines)
    s: AuditSettings = validate(AuditSettings, {"dir": "a", "retention": {"key_dir": "ck"}}, f, {})
    s.resolve(tmp_path)
    assert s.content_key_dir() == tmp_path / "ck" and AuditSettings().retention.metadata_days >= 183
