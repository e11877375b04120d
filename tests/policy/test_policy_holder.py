"""PolicyHolder: shadow-mode disagreements, hot reload (good, broken, failing tests) under load, watcher."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from guard.policy.attributes import make_env, principal, resource
from guard.policy.holder import PolicyHolder
from guard.policy.settings import PolicySettings, ShadowPolicy
from tests.policy.conftest import ROOT, metric

APPS = principal(cn="billing", ou=["apps"])
BOB = principal(cn="bob", ou=["contractors"])
LLAMA = resource(model="llama-3-8b")
NIGHT, DAY = make_env("2026-01-05T21:00:00Z"), make_env("2026-01-05T10:00:00Z")


def test_shadow_disagreements_are_counted_and_carry_both_decisions(settings: PolicySettings, policy_dir: Path) -> None:
    candidate = policy_dir / "candidate.csv"  # the candidate lets contractors work at night
    candidate.write_text(
        (policy_dir / "policy.csv")
        .read_text()
        .replace("'contractors' in r.sub.ou && (r.env.hour >= 20 || r.env.hour < 6)", "False")
    )
    settings.shadow = ShadowPolicy(rules=[candidate])
    holder = PolicyHolder.from_settings(settings)
    before = metric("guard_shadow_disagreements_total", stage="access")

    agree = holder.decide_access(APPS, LLAMA, "chat", NIGHT)
    assert agree.allowed and agree.shadow is None
    d = holder.decide_access(BOB, LLAMA, "chat", NIGHT)
    assert d.effect == "deny" and d.rule.endswith("policy.csv:13")
    assert d.shadow is not None and d.shadow["effect"] == "allow" and d.shadow["rule"].endswith("candidate.csv:12")
    assert d.shadow["policy_version"] != d.policy_version
    assert d.to_audit()["shadow"] == d.shadow
    assert metric("guard_shadow_disagreements_total", stage="access") == before + 1
    again = holder.decide_access(BOB, LLAMA, "chat", NIGHT)  # cached, still counted, cache not polluted
    assert again.shadow is not None and metric("guard_shadow_disagreements_total", stage="access") == before + 2
    assert holder.active.engine.decide("access", BOB, LLAMA, "chat", NIGHT).shadow is None


def _hammer(holder: PolicyHolder, stop: threading.Event, failures: list[str], counts: list[int]) -> None:
    n = 0
    while not stop.is_set():
        try:
            a = holder.decide_access(APPS, LLAMA, "chat", DAY)
            c = holder.decide_content(APPS, LLAMA, "chat", {**DAY, "pii": [], "safety": ["S1"]})
            if not a.allowed or c.allowed or a.error or c.error:
                failures.append(f"{a} {c}")
        except Exception as e:
            failures.append(repr(e))
        n += 1
    counts.append(n)


def test_hot_reload_of_good_and_broken_policies_under_concurrent_decisions(
    settings: PolicySettings, policy_dir: Path
) -> None:
    holder = PolicyHolder.from_settings(settings)
    rules = policy_dir / "policy.csv"
    original = rules.read_text()
    stop, failures, counts = threading.Event(), [], []
    threads = [threading.Thread(target=_hammer, args=(holder, stop, failures, counts)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        ok_before, failed_before = (metric("guard_policy_reloads_total", result=r) for r in ("ok", "failed"))
        v0 = v1 = holder.version  # v1: the last good version, unchanged by a failed reload
        for i in range(5):
            rules.write_text(original + "p, access, allow, chat, -, (r.sub.cn ==\n")  # broken
            ok, err = holder.reload()
            assert not ok and f"policy.csv:{len(original.splitlines()) + 1}" in err
            assert holder.version == v1
            rules.write_text(original + f"# revision {i}\np, access, allow, models, -, r.sub.cn == 'r{i}'\n")
            ok, err = holder.reload()
            assert ok and err == "" and holder.version != v0
            v1 = holder.version
            time.sleep(0.02)
        assert metric("guard_policy_reloads_total", result="failed") == failed_before + 5
        assert metric("guard_policy_reloads_total", result="ok") == ok_before + 5
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and sum(counts) > 100


def test_reload_is_refused_when_the_policy_tests_fail(settings: PolicySettings, policy_dir: Path) -> None:
    settings.tests = [policy_dir / "tests" / "policy_test.yaml"]
    holder = PolicyHolder.from_settings(settings)
    v0 = holder.version
    rules = policy_dir / "policy.csv"
    rules.write_text(rules.read_text().replace("r.env.hour >= 20 || r.env.hour < 6", "r.env.hour >= 22"))
    ok, err = holder.reload()
    assert not ok and "policy tests failed" in err and "contractors are denied at 21:00 UTC" in err
    assert holder.version == v0
    assert not holder.decide_access(BOB, LLAMA, "chat", NIGHT).allowed


def test_the_watcher_reloads_on_change_and_keeps_the_old_policy_on_error(
    settings: PolicySettings, policy_dir: Path
) -> None:
    holder = PolicyHolder.from_settings(settings)
    holder.start_watching()
    try:
        v0 = holder.version
        rules = policy_dir / "policy.csv"
        rules.write_text(rules.read_text() + "p, access, allow, models, -, True\n")
        assert _wait(lambda: holder.version != v0)
        v1 = holder.version
        failed = metric("guard_policy_reloads_total", result="failed")
        rules.write_text("p, access, nonsense\n")
        assert _wait(lambda: metric("guard_policy_reloads_total", result="failed") > failed)
        assert holder.version == v1 and holder.decide_access(APPS, LLAMA, "chat", DAY).allowed
    finally:
        holder.stop_watching()


def _wait(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_a_bad_policy_at_start_up_raises_config_error(settings: PolicySettings, policy_dir: Path) -> None:
    import pytest

    from guard.config import ConfigError

    (policy_dir / "policy.csv").write_text("p, access, allow, chat, -, r.sub.nope == 1\n")
    with pytest.raises(ConfigError, match=r"policy\.csv:1: unknown attribute r\.sub\.nope"):
        PolicyHolder.from_settings(settings)
    assert ROOT.exists()
