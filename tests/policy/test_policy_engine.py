"""Engine behaviour: deny overrides, default deny, profiles, fail-closed rules, the cache, Decision."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from guard.config import ConfigError
from guard.policy.attributes import make_env, principal, resource
from guard.policy.loader import load_policy
from tests.policy.conftest import ROOT, metric

MODEL = ROOT / "policies" / "model.conf"


def _engine(tmp_path: Path, *lines: str, cache: bool = True):
    rules = tmp_path / "rules.csv"
    rules.write_text("# test rules\n" + "\n".join(lines) + "\n")
    return load_policy(MODEL, [rules], cache=cache).engine


APPS = principal(cn="billing", ou=["apps"])
LLAMA = resource(model="llama-3-8b")


def test_deny_overrides_allow_and_names_the_deny_rule(tmp_path: Path) -> None:
    e = _engine(tmp_path, "p, access, allow, *, -, True", "p, access, deny, chat, -, 'apps' in r.sub.ou")
    d = e.decide("access", APPS, LLAMA, "chat", make_env("2026-01-05T10:00:00Z"))
    assert (d.effect, d.rule) == ("deny", f"{tmp_path}/rules.csv:3")
    assert d.matched == (f"{tmp_path}/rules.csv:2", f"{tmp_path}/rules.csv:3")


def test_no_matching_allow_is_a_deny_without_a_rule(tmp_path: Path) -> None:
    e = _engine(tmp_path, "p, access, allow, embeddings, -, True")
    d = e.decide("access", APPS, LLAMA, "chat", make_env())
    assert (d.effect, d.rule, d.matched, d.error) == ("deny", "", (), "")


def test_the_first_matching_rule_naming_a_profile_selects_it(tmp_path: Path) -> None:
    e = _engine(
        tmp_path,
        "p, access, allow, chat, -, True",
        "p, access, profile, *, strict, r.obj.external",
        "p, access, allow, *, lenient, True",
    )
    ext = e.decide("access", APPS, resource(model="gpt-4o", external=True), "chat", make_env())
    local = e.decide("access", APPS, LLAMA, "chat", make_env())
    assert (ext.effect, ext.profile, ext.rule.endswith(":2")) == ("allow", "strict", True)
    assert local.profile == "lenient"


def test_a_rule_that_raises_denies_the_request_and_is_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    e = _engine(tmp_path, "p, access, allow, *, -, True", "p, access, deny, *, -, r.env.hour > 22")
    before = metric("guard_policy_rule_errors_total")
    env = make_env()
    del env["hour"]
    with caplog.at_level(logging.WARNING, logger="guard.policy"):
        d = e.decide("access", APPS, LLAMA, "chat", env)
    assert d.effect == "deny" and d.rule == f"{tmp_path}/rules.csv:3"
    assert f"{tmp_path}/rules.csv:3" in d.error and "hour" in d.error
    assert metric("guard_policy_rule_errors_total") == before + 1
    assert f"{tmp_path}/rules.csv:3" in caplog.text
    again = e.decide("access", APPS, LLAMA, "chat", env)  # errors are never cached
    assert again.error and metric("guard_policy_rule_errors_total") == before + 2


def test_a_condition_that_is_not_a_bool_denies(tmp_path: Path) -> None:
    e = _engine(tmp_path, "p, access, allow, *, -, r.env.hour")  # casbin raises on an int result too
    d = e.decide("access", APPS, LLAMA, "chat", make_env("2026-01-05T10:00:00Z"))
    assert d.effect == "deny" and "not a bool" in d.error


def test_cached_decisions_follow_every_attribute_the_rules_read(tmp_path: Path) -> None:
    e = _engine(tmp_path, "p, access, allow, *, -, True", "p, access, deny, *, -, r.env.hour >= 20")
    for _ in range(3):
        assert e.decide("access", APPS, LLAMA, "chat", make_env("2026-01-05T10:00:00Z")).allowed
        assert not e.decide("access", APPS, LLAMA, "chat", make_env("2026-01-05T21:00:00Z")).allowed
    # True and 1 are equal in Python but not the same attribute value: separate cache entries
    e2 = _engine(tmp_path, "p, access, allow, *, -, r.obj.external is True")
    assert e2.decide("access", APPS, resource(external=True), "chat", make_env()).allowed
    assert not e2.decide("access", APPS, resource(external=1), "chat", make_env()).allowed


def test_decision_carries_version_and_audit_fields(tmp_path: Path) -> None:
    e = _engine(tmp_path, "p, access, allow, chat, -, True")
    d = e.decide("access", APPS, LLAMA, "chat", make_env())
    want = hashlib.sha256(MODEL.read_bytes() + b"\0" + (tmp_path / "rules.csv").read_bytes() + b"\0")
    assert d.policy_version == want.hexdigest()
    assert d.to_audit() == {
        "stage": "access",
        "effect": "allow",
        "rule": f"{tmp_path}/rules.csv:2",
        "policy_version": want.hexdigest(),
        "matched": [f"{tmp_path}/rules.csv:2"],
        "profile": "default",
        "error": "",
    }


@pytest.mark.parametrize(
    "cond, reason",
    [
        ("r.sub.__class__ == 1", "not allowed"),
        ("timeMatch('_', '_')", "unknown function"),
        ("r.sub.ou.append('x')", "method 'append' is not allowed"),
        ("r.sub.OU == 'x'", "unknown attribute r.sub.OU"),
        ("r.env.pii == []", "only at the content stage"),
        ("[x for x in r.sub.ou]", "ListComp is not allowed"),
        ("r.sub.cn == ", "syntax error"),
        ("keyMatch", "must be called"),
    ],
)
def test_unsafe_or_wrong_conditions_are_refused_with_file_and_line(tmp_path: Path, cond: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        _engine(tmp_path, "p, access, allow, *, -, True", f"p, access, allow, *, -, {cond}")
    assert f"{tmp_path}/rules.csv:3: " in str(e.value) and reason in str(e.value)


def test_engine_without_cache_decides_the_same(tmp_path: Path) -> None:
    lines = [ln for ln in (ROOT / "policies/policy.csv").read_text().splitlines()]
    a, b = _engine(tmp_path, *lines), _engine(tmp_path, *lines, cache=False)
    for hour in range(24):
        for ou in ("apps", "contractors", "staff"):
            args = ("access", principal(cn="x", ou=[ou]), LLAMA, "chat", make_env(f"2026-01-05T{hour:02}:00:00Z"))
            assert a.decide(*args) == b.decide(*args)


def test_the_decision_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import guard.policy.engine as engine_mod

    monkeypatch.setattr(engine_mod, "CACHE_ENTRIES", 10)
    e = _engine(tmp_path, "p, access, allow, *, -, r.env.body_bytes >= 0")
    for i in range(100):
        assert e.decide("access", APPS, LLAMA, "chat", make_env(body_bytes=i)).allowed
    assert sum(len(c.cache) for c in e._combos.values()) <= 10
