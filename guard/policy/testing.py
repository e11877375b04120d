"""Policy tests: YAML cases run against a policy the way the proxy decides (access, then content)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, RootModel

from guard.config import ConfigError, load_yaml, validate
from guard.policy.attributes import access_env, content_env, make_env, principal, resource
from guard.policy.decision import Decision
from guard.policy.engine import Engine
from guard.policy.files import display_path


class CaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sub: dict[str, Any]
    obj: dict[str, Any]
    act: str
    env: dict[str, Any] = {}
    expect: Literal["allow", "deny"]
    rule: str | None = None  # the deciding rule must be this one ("policies/policy.csv:4"; "" = none)
    profile: str | None = None  # the selected screening profile must be this one
    quota_tier: str | None = None  # the selected quota tier must be this one (chosen at access)
    stage: Literal["access", "content", "console"] | None = None  # decide only this stage


class _Cases(RootModel[list[CaseModel]]):
    pass


@dataclass(frozen=True)
class Case:
    loc: str
    spec: CaseModel


@dataclass(frozen=True)
class Outcome:
    case: Case
    passed: bool
    reason: str
    final: Decision
    decisions: dict[str, Decision]

    def line(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.case.loc}  {self.case.spec.name}"
        return head if self.passed else f"{head}: {self.reason}"


def load_cases(path: Path) -> list[Case]:
    data, lines = load_yaml(path)
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"{display_path(path)}:1: a policy test file is a YAML list of cases")
    cases = validate(_Cases, data, Path(display_path(path)), lines).root
    shown = display_path(path)
    return [Case(loc=f"{shown}:{lines.get((i,), 1)}", spec=c) for i, c in enumerate(cases)]


def decide(
    engine: Engine, sub: dict[str, Any], obj: dict[str, Any], act: str, env: dict[str, Any], stage: str | None = None
) -> tuple[Decision, dict[str, Decision]]:
    """Decide like the proxy: access (without the screening labels); if allowed, content.

    ``env`` may give ``time`` only: ``hour`` and ``weekday`` are derived from it; ``sub`` and ``obj``
    attributes not given take their defaults (empty strings and lists, ``external: false``).
    """
    sub, obj = principal(**sub), resource(**obj)
    env = make_env(env.get("time"), **{k: v for k, v in env.items() if k != "time"})
    out: dict[str, Decision] = {}
    if stage == "console":  # who may open the compliance console (guard/console): one decision of its own
        out["console"] = engine.decide("console", sub, obj, act, access_env(env))
        return out["console"], out
    if stage in (None, "access"):
        out["access"] = engine.decide("access", sub, obj, act, access_env(env))
        if stage == "access" or not out["access"].allowed:
            return out["access"], out
    out["content"] = engine.decide("content", sub, obj, act, content_env(env))
    return out["content"], out


def same_rule(actual: str, expected: str) -> bool:
    """``policies/policy.csv:4`` also matches ``../policies/policy.csv:4`` (another working directory)."""
    return actual == expected or (expected != "" and actual.endswith("/" + expected))


def run_case(engine: Engine, case: Case) -> Outcome:
    c = case.spec
    final, decisions = decide(engine, c.sub, c.obj, c.act, c.env, c.stage)
    problems = []
    if final.effect != c.expect:
        problems.append(
            f"expected {c.expect}, got {final.effect} at {final.stage} "
            f"(rule {final.rule or 'none: no allow rule matched'})"
        )
    # an allowed request was decided by its access rule (the content stage only lets it through)
    deciders = [final.rule] + ([decisions["access"].rule] if final.allowed and "access" in decisions else [])
    if c.rule is not None and not any(same_rule(r, c.rule) for r in deciders):
        problems.append(f"expected deciding rule {c.rule or 'none'}, got {' / '.join(deciders) or 'none'}")
    profile = decisions.get("access", final).profile  # screening profiles are chosen at access
    if c.profile is not None and profile != c.profile:
        problems.append(f"expected profile {c.profile}, got {profile}")
    tier = decisions.get("access", final).quota_tier
    if c.quota_tier is not None and tier != c.quota_tier:
        problems.append(f"expected quota tier {c.quota_tier}, got {tier}")
    if final.error:
        problems.append(f"rule error: {final.error}")
    return Outcome(case, not problems, "; ".join(problems), final, decisions)


def run_files(engine: Engine, paths: list[Path]) -> list[Outcome]:
    """Run every case of every file; ConfigError when a file is not a valid test file."""
    cases = [c for p in paths for c in load_cases(p)]
    return [run_case(engine, c) for c in cases]


def explain(
    policy: Any, sub: dict[str, Any], obj: dict[str, Any], act: str, env: dict[str, Any], stage: str | None = None
) -> dict[str, Any]:
    """The decision for one request and why (`guard policy explain`, and the console's policy page).
    ``policy``: a loaded guard.policy.loader.Policy."""
    final, decisions = decide(policy.engine, sub, obj, act, env, stage)
    engine = policy.engine
    out: dict[str, Any] = {
        "decision": final.effect,
        "stage": final.stage,
        "rule": final.rule,
        "profile": decisions.get("access", final).profile,
        "quota_tier": decisions.get("access", final).quota_tier,
        "policy_version": policy.version,
        "stages": {},
    }
    for st, d in decisions.items():
        entry = d.to_audit()
        rule = engine.rule_at(d.rule)
        entry["rule_condition"] = rule.source if rule else ""
        entry["matched"] = [{"rule": loc, "effect": engine.rule_at(loc).eft} for loc in d.matched]
        out["stages"][st] = entry
    return out
