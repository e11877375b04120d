"""`guard policy check|test|explain`: exit codes, one line per case, errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard.cli import main
from tests.policy.conftest import ROOT


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the defaults are policies/model.conf and policies/*.csv


def test_check_accepts_the_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check"]) == 0
    assert "ok: 15 rules" in capsys.readouterr().out


def test_check_names_file_line_and_reason_for_each_bad_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "# bad\np, access, allow, chat, -, r.sub.cn == 'a'\np, access, allow, chat, -, (x\n"
        "p, acces, allow, chat, -, True\np, access, allow, chat, True\n"
    )
    assert main(["policy", "check", "--rules", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: unbalanced ( ) or [ ]" in err
    assert f"{bad}:4: stage must be one of access, content, console, not 'acces'" in err
    assert f"{bad}:5: 4 fields after 'p', the model wants 5: stage, eft, act, profile, cond" in err
    assert f"{bad}:2" not in err


def test_check_names_the_model_line_of_an_unsupported_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.conf"
    model.write_text(
        (ROOT / "policies/model.conf")
        .read_text()
        .replace("e = some(where (p.eft == allow)) && !some(where (p.eft == deny))", "e = some(where (p.eft == allow))")
    )
    assert main(["policy", "check", "--model", str(model)]) == 2
    line = next(i for i, t in enumerate(model.read_text().splitlines(), 1) if t.startswith("e ="))
    assert f"{model}:{line}: policy_effect must be" in capsys.readouterr().err


def test_test_runner_passes_the_shipped_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", "policies/tests/policy_test.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(line.startswith("PASS") for line in out[:-1]) and out[-1].endswith(")")
    assert "0 failed" in out[-1]


def test_test_runner_reports_each_failing_case_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("""
- name: passes
  sub: {cn: billing-app, ou: [apps]}
  obj: {model: llama-3-8b, upstream: local, external: false}
  act: chat
  env: {time: "2026-01-05T10:00:00Z", pii: [], safety: []}
  expect: allow
  rule: "policies/policy.csv:4"
- name: wrong effect
  sub: {cn: bob, ou: [contractors]}
  obj: {model: llama-3-8b}
  act: chat
  env: {time: "2026-01-05T21:00:00Z"}
  expect: allow
- name: wrong rule
  sub: {cn: billing-app, ou: [apps]}
  obj: {model: llama-3-8b}
  act: chat
  env: {time: "2026-01-05T10:00:00Z"}
  expect: allow
  rule: "policies/policy.csv:5"
""")
    assert main(["policy", "test", str(cases)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"PASS  {cases}:2  passes"
    assert out[1] == (
        f"FAIL  {cases}:9  wrong effect: expected allow, got deny at access (rule policies/policy.csv:13)"
    )
    assert out[2].startswith(f"FAIL  {cases}:15  wrong rule: expected deciding rule policies/policy.csv:5")
    assert out[3] == "1 passed, 2 failed (policy version " + out[3].split("version ")[1]


def test_test_runner_refuses_a_malformed_case_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("- name: x\n  sub: {}\n  obj: {}\n  act: chat\n  expect: maybe\n")
    assert main(["policy", "test", str(cases)]) == 2
    assert f"{cases}:5: 0.expect" in capsys.readouterr().err


def test_explain_prints_the_decision_the_rule_and_the_matches_per_stage(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "policy",
            "explain",
            "--sub",
            '{"cn": "bob", "ou": ["contractors"]}',
            "--obj",
            '{"model": "gpt-4o", "external": true}',
            "--act",
            "chat",
            "--env",
            '{"time": "2026-01-05T10:00:00Z", "pii": ["US_SSN"]}',
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert (out["decision"], out["stage"], out["rule"], out["profile"]) == (
        "deny",
        "content",
        "policies/policy.csv:27",
        "strict",
    )
    assert out["stages"]["access"]["rule"] == "policies/policy.csv:12"
    assert out["stages"]["access"]["matched"] == [
        {"rule": "policies/policy.csv:12", "effect": "allow"},
        {"rule": "policies/policy.csv:22", "effect": "profile"},
    ]
    assert [m["rule"] for m in out["stages"]["content"]["matched"]] == [
        "policies/policy.csv:25",
        "policies/policy.csv:27",
    ]
    assert len(out["policy_version"]) == 64


def test_explain_rejects_bad_json_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--sub", "{cn", "--obj", "{}", "--act", "chat"]) == 2
    assert "--sub: invalid JSON" in capsys.readouterr().err


def test_explain_output_never_changes_what_the_audit_records_of_a_cached_decision() -> None:
    """explain adds rule_condition and rewrites matched on the dict it prints; the engine's cached Decision is
    the one audit events summarise (shared, built once), so explain must work on a copy."""
    from guard.policy.decision import Decision

    d = Decision("access", "allow", "p.csv:4", "f" * 64, ("p.csv:4",))
    shared = d.audit_summary()
    entry = d.to_audit()
    entry["rule_condition"] = "r.sub.cn == 'bob'"
    entry["matched"].append("p.csv:9")
    assert d.audit_summary() is shared and "rule_condition" not in shared and shared["matched"] == ["p.csv:4"]
