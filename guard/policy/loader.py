"""Load and validate a policy (casbin model + rule files) into an Engine; errors name file and line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from guard.config import ConfigError
from guard.policy.attributes import STAGES
from guard.policy.compiler import RuleError, compile_rule
from guard.policy.engine import Engine
from guard.policy.files import ModelText, RuleLine, display_path, load_model, load_rules, policy_version
from guard.policy.index import LEAF_SIZE, Rule

EFFECT = "some(where (p_eft == allow)) && !some(where (p_eft == deny))"
REQUIRED = ("r_sub", "r_obj", "r_act", "r_env")
ALLOWED = (*REQUIRED, "r_stage")
EFTS = ("allow", "deny", "profile", "quota")
_PROFILE = re.compile(r"^[A-Za-z0-9_.-]*$")


@dataclass
class Policy:
    engine: Engine
    model_path: Path
    rule_paths: list[Path]
    warnings: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return self.engine.version

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.engine.rules


def _check_model(mt: ModelText) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    m, shown = mt.model.model, mt.display  # the plain dict (casbin's Model has no __contains__)
    line = lambda k: mt.lines.get(k, 1)  # noqa: E731
    errs: list[str] = []
    if "r" not in m or "r" not in m["r"]:
        errs.append(f"{shown}:1: missing [request_definition] r = sub, obj, act, env, stage")
    if "p" not in m or "p" not in m["p"]:
        errs.append(f"{shown}:1: missing [policy_definition] p = ...")
    elif set(m["p"]) != {"p"}:
        errs.append(f"{shown}:{line('p2')}: only one policy type (p) is supported")
    if "m" not in m or "m" not in m["m"]:
        errs.append(f"{shown}:1: missing [matchers] m = ...")
    if "g" in m:
        errs.append(f"{shown}:{line('g')}: role definitions (g) are not supported; use attributes")
    if "e" not in m or " ".join(m["e"]["e"].value.split()) != EFFECT:
        errs.append(
            f"{shown}:{line('e')}: policy_effect must be some(where (p.eft == allow)) && !some(where (p.eft == deny))"
        )
    if errs:
        raise ConfigError("\n".join(errs))
    rtokens = tuple(m["r"]["r"].tokens)
    missing = [t[2:] for t in REQUIRED if t not in rtokens]
    extra = [t[2:] for t in rtokens if t not in ALLOWED]
    if missing or extra:
        raise ConfigError(
            f"{shown}:{line('r')}: request_definition must name sub, obj, act, env "
            f"(and optionally stage); missing {missing or '-'}, unknown {extra or '-'}"
        )
    return rtokens, tuple(m["p"]["p"].tokens), m["m"]["m"].value


def _check_fields(rl: RuleLine, params: dict[str, str]) -> str | None:
    stage, eft, profile = params.get("p_stage"), params.get("p_eft"), params.get("p_profile")
    if stage is not None and stage not in STAGES:
        return f"stage must be one of {', '.join(STAGES)}, not {stage!r}"
    if eft is not None and eft not in EFTS:
        return f"effect must be one of {', '.join(EFTS)}, not {eft!r}"
    if profile is not None and not _PROFILE.match(profile):
        return f"profile must be a name (letters, digits, _ . -), not {profile!r}"
    return None


def _compile(rl: RuleLine, index: int, rtokens: tuple[str, ...], ptokens: tuple[str, ...], matcher: str) -> Rule:
    if rl.ptype != "p":
        raise RuleError(f"unknown rule type {rl.ptype!r} (lines start with 'p,')")
    if len(rl.values) != len(ptokens):
        want = ", ".join(t[2:] for t in ptokens)
        raise RuleError(f"{len(rl.values)} fields after 'p', the model wants {len(ptokens)}: {want}")
    params = dict(zip(ptokens, rl.values, strict=False))
    bad = _check_fields(rl, params)
    if bad:
        raise RuleError(bad)
    c = compile_rule(matcher, rtokens, params, params.get("p_stage"), rl.loc)
    return Rule(
        index=index,
        loc=rl.loc,
        eft=params.get("p_eft", "allow"),
        profile=params.get("p_profile", ""),
        fn=c.fn,
        reads=c.reads,
        prefix=c.prefix,
        source=c.source,
    )


def load_policy(model_path: Path, rule_paths: list[Path], cache: bool = True, leaf_size: int = LEAF_SIZE) -> Policy:
    """Parse, validate and compile; raise ConfigError listing every problem as ``file:line: reason``."""
    if not rule_paths:
        raise ConfigError(f"{display_path(model_path)}: no rule files given")
    mt = load_model(model_path)
    rtokens, ptokens, matcher = _check_model(mt)
    errors: list[str] = []
    lines: list[RuleLine] = []
    for p in rule_paths:
        got, errs = load_rules(p)
        lines += got
        errors += errs
    rules: list[Rule] = []
    for i, rl in enumerate(lines):
        try:
            rules.append(_compile(rl, i, rtokens, ptokens, matcher))
        except RuleError as e:
            errors.append(f"{rl.loc}: {e}")
    if errors:
        raise ConfigError("\n".join(errors))
    warnings = []
    if "r_stage" in rtokens and "p_stage" in ptokens and "p_eft" in ptokens:
        for stage in ("access", "content"):  # no console rule: nobody opens the console by certificate
            if not any(
                rl.values[ptokens.index("p_stage")] == stage and rl.values[ptokens.index("p_eft")] == "allow"
                for rl in lines
            ):
                warnings.append(f"no allow rule for stage {stage}: every {stage} decision denies")
    engine = Engine(rules, rtokens, policy_version(model_path, rule_paths), cache=cache, leaf_size=leaf_size)
    return Policy(
        engine=engine, model_path=Path(model_path), rule_paths=[Path(p) for p in rule_paths], warnings=warnings
    )
