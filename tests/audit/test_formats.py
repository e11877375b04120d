from __future__ import annotations

from pathlib import Path

from guard.audit import event as ev
from guard.audit.formats import cef_header, cef_value, to_cef, to_ecs, to_ocsf
from guard.audit.journal import Journal
from guard.audit.sinks import syslog_message

from .conftest import make_settings, sample

OCSF_6003_REQUIRED = (
    "activity_id",
    "category_uid",
    "class_uid",
    "severity_id",
    "time",
    "type_uid",
    "metadata",
    "actor",
    "api",
    "src_endpoint",
    "cloud",
)


def _sealed(tmp_path: Path, *events: dict) -> list[dict]:
    j = Journal(make_settings(tmp_path), "w1")
    out = [j.append_sync(e) for e in events]
    j.close()
    return out


def test_ocsf_api_activity_has_the_required_fields_of_class_6003(tmp_path: Path) -> None:
    started, denied, boot = _sealed(
        tmp_path,
        sample(1, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
        ev.new_event(
            "exchange.denied",
            request_id="r2",
            api="openai",
            operation="chat",
            model="gpt-4o",
            decisions={"access": {"effect": "deny", "rule": "default deny", "policy_version": "v1"}},
            outcome={"status": 403, "bytes": 0},
            denial={"stage": "access", "code": "access_denied"},
        ),
        ev.guard_started("0.1.0"),
    )
    for e in (started, denied, boot):
        o = to_ocsf(e)
        missing = [k for k in OCSF_6003_REQUIRED if k not in o]
        assert not missing, missing
        assert o["class_uid"] == 6003 and o["category_uid"] == 6
        assert o["type_uid"] == 600300 + o["activity_id"]
        assert {"name", "vendor_name"} <= set(o["metadata"]["product"]) and o["metadata"]["version"]
        assert isinstance(o["time"], int) and o["api"]["operation"]
        assert "ai_operation" in o["metadata"]["profiles"]
    o = to_ocsf(started)
    assert o["activity_id"] == 1 and o["status_id"] == 1
    assert o["ai_model"]["name"] == "gpt-4o"
    assert o["message_context"]["total_tokens"] == 7 and o["message_context"]["uid"] == "req-1"
    assert o["actor"]["user"]["uid"] == "ab" * 32 and o["src_endpoint"]["ip"] == "127.0.0.1"
    d = to_ocsf(denied)
    assert d["status_id"] == 2 and d["severity_id"] >= 3 and d["http_response"]["code"] == 403
    assert to_ocsf(boot)["activity_id"] == 99


def test_cef_escapes_pipe_backslash_equals_and_newlines() -> None:
    assert cef_header("a|b\\c") == "a\\|b\\\\c"
    assert cef_header("line1\nline2") == "line1 line2"
    assert cef_value("a=b\\c|d\ne\rf") == "a\\=b\\\\c|d\\ne\\rf"
    e = sample(1, model="m|x=y\\z\nw")
    e.update(type="exchange.started", chain="w1", seq=1, hash="00" * 32, time="2026-11-25T01:00:00.000000Z")
    line = to_cef(e)
    assert "\n" not in line and "\r" not in line
    head, ext = line.split("|", 7)[:7], line.split("|", 7)[7]
    assert head[0] == "CEF:0" and head[4] == "exchange.started"
    assert "cs1=m|x\\=y\\\\z\\nw" in ext and "cs1Label=model" in ext


def test_cef_header_pipes_do_not_split_fields() -> None:
    e = {"type": "exchange|denied", "time": "2026-11-25T01:00:00.000000Z"}
    line = to_cef(e)
    assert line.startswith("CEF:0|Guard|Guard|0.1.0|exchange\\|denied|exchange\\|denied|")


def test_ecs_document_names_event_user_and_model(tmp_path: Path) -> None:
    (e,) = _sealed(tmp_path, sample(1))
    d = to_ecs(e)
    assert d["@timestamp"] == e["time"] and d["event"]["id"] == e["id"] and d["event"]["outcome"] == "success"
    assert d["user"]["name"] == "app-a" and d["gen_ai"]["request"]["model"] == "gpt-4o"
    assert d["guard"]["hash"] == e["hash"]


def test_syslog_message_is_rfc5424_with_structured_data(tmp_path: Path) -> None:
    (e,) = _sealed(tmp_path, sample(1))
    msg = syslog_message(e, "{}", "host-1").decode()
    pri, rest = msg.split(">", 1)
    assert pri == "<110" and rest.startswith("1 " + e["time"] + " host-1 guard - exchange.started [guard@32473 ")
    assert f'id="{e["id"]}"' in msg and msg.endswith("] {}")
