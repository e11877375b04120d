"""The shipped policy passes its own tests, and every rule line is exercised by at least one case."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.policy.files import load_rules
from guard.policy.loader import load_policy
from guard.policy.testing import run_files
from tests.policy.conftest import ROOT


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_every_shipped_case_passes_and_every_rule_is_exercised() -> None:
    policy = load_policy(Path("policies/model.conf"), sorted(Path("policies").glob("*.csv")))
    assert policy.warnings == []
    outcomes = run_files(policy.engine, sorted(Path("policies/tests").glob("*.yaml")))
    assert [o.line() for o in outcomes if not o.passed] == []
    exercised = {loc for o in outcomes for d in o.decisions.values() for loc in d.matched}
    deciding = {o.case.spec.rule for o in outcomes if o.case.spec.rule}
    for path in policy.rule_paths:
        for rule in load_rules(path)[0]:
            assert rule.loc in exercised, f"no case exercises {rule.loc}"
            assert rule.loc in deciding or policy.engine.rule_at(rule.loc).eft == "profile", (
                f"no case names {rule.loc} as its deciding rule"
            )
