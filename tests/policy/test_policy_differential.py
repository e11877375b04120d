"""The fast engine decides exactly like plain casbin.Enforcer on the same model and rules.

Random rule sets (seeded) over the attribute contract, random requests (some with attributes missing,
so rules raise), compared one by one: casbin's True is our allow; casbin's False or exception is our deny.
"""

from __future__ import annotations

import random
from pathlib import Path

import casbin
import pytest

from guard.policy.attributes import Attrs
from guard.policy.loader import load_policy

MODELS = {
    "shipped": Path("policies/model.conf").read_text(),
    # a second shape: the model pattern is a field of its own, and the act test comes first
    "model-field": """
[request_definition]
r = sub, obj, act, env, stage
[policy_definition]
p = stage, eft, act, profile, model, cond
[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
[matchers]
m = keyMatch(r.act, p.act) && r.stage == p.stage && globMatch(r.obj.model, p.model) && eval(p.cond)
""",
}

CNS = ["app-1", "app-2", "app-3", "bob", "alice"]
OUS = ["apps", "staff", "contractors"]
MODEL_NAMES = ["m1", "m2", "internal-x", "internal-y", "gpt-4o"]
ATOMS = [
    "r.sub.cn == '{cn}'",
    "'{ou}' in r.sub.ou",
    "r.obj.model == '{model}'",
    "globMatch(r.obj.model, 'int*')",
    "keyMatch(r.sub.spiffe_id, 'spiffe://x/ns/prod/*')",
    "r.env.hour >= {h}",
    "r.env.hour < {h}",
    "r.obj.external == True",
    "r.obj.external",
    "'US_SSN' in r.env.pii",
    "'S1' in r.env.safety",
    "regexMatch(r.obj.model, '^m[0-1]$')",
    "r.sub.cn.startswith('app')",
    "r.env.weekday in ('sat', 'sun')",
    "r.env.body_bytes > 1000",
    "True",
    "False",
    "r.env.safety_score > 0.5",
    "r.env.safety_score",
    "r.env.hour",
    "r.act == 'chat'",
    "r.env.body_bytes + 1 > {h}",
    "r.sub.ou[0] == '{ou}'",
]


CONTENT_ONLY = ("pii", "safety")  # content-stage env attributes: `policy check` refuses them in access rules


def _atom(rng: random.Random, stage: str) -> str:
    atoms = ATOMS if stage == "content" else [a for a in ATOMS if not any(c in a for c in CONTENT_ONLY)]
    return rng.choice(atoms).format(
        cn=rng.choice(CNS), ou=rng.choice(OUS), model=rng.choice(MODEL_NAMES), h=rng.randrange(0, 24)
    )


def _cond(rng: random.Random, stage: str, depth: int = 0) -> str:
    r = rng.random()
    if depth >= 2 or r < 0.35:
        return _atom(rng, stage)
    if r < 0.45:
        return f"!({_cond(rng, stage, depth + 1)})"
    op = "&&" if r < 0.8 else "||"
    return f"({_cond(rng, stage, depth + 1)} {op} {_cond(rng, stage, depth + 1)})"


def _indexed_cond(rng: random.Random, stage: str) -> str:
    """One to three leading `attribute == constant` tests, so the index files the rule under them
    (and must not skip a rule whose earlier test would raise on a missing attribute)."""
    tests = [
        f"r.sub.cn == '{rng.choice(CNS)}'",
        f"r.obj.model == '{rng.choice(MODEL_NAMES)}'",
        f"r.env.weekday == '{rng.choice(['mon', 'sat'])}'",
        "r.sub.spiffe_id == ''",
        f"'{rng.choice(OUS)}' in r.sub.ou",
        f"'{rng.choice(OUS)}' in r.sub.ou",
    ]
    lead = " && ".join(rng.sample(tests, rng.randrange(1, 4)))
    return f"{lead} && {_cond(rng, stage, 1)}" if rng.random() < 0.7 else lead


def _rule(rng: random.Random, shape: str, indexed: float = 0.5) -> str:
    stage = rng.choice(["access", "content"])
    eft = rng.choices(["allow", "deny", "profile"], [6, 3, 1])[0]
    act = rng.choice(["chat", "embeddings", "models", "*", "emb*", "c*"])
    profile = rng.choice(["-", "-", "strict"])
    cond = _indexed_cond(rng, stage) if rng.random() < indexed else _cond(rng, stage)
    if shape == "model-field":
        return f"p, {stage}, {eft}, {act}, {profile}, {rng.choice(['*', 'm*', 'internal-*', 'gpt-4o'])}, {cond}"
    return f"p, {stage}, {eft}, {act}, {profile}, {cond}"


def _request(rng: random.Random, sloppy: float = 0.1) -> tuple[Attrs, Attrs, str, Attrs, str]:
    ou = rng.sample(OUS, rng.randrange(0, 3)) if rng.random() > sloppy else rng.choice(["apps", None, ("staff",)])
    sub = {
        "cn": rng.choice(CNS),
        "ou": ou,
        "spiffe_id": rng.choice(["", "spiffe://x/ns/prod/a", "spiffe://x/ns/dev/a"]),
    }
    obj = {"model": rng.choice(MODEL_NAMES), "external": rng.choice([True, False])}
    env = {
        "hour": rng.randrange(0, 24),
        "weekday": rng.choice(["mon", "sat", "sun"]),
        "body_bytes": rng.choice([10, 5000]),
        "pii": rng.choice([[], ["US_SSN"], ["EMAIL"]]),
        "safety": rng.choice([[], ["S1"], ["S6"]]),
        "safety_score": rng.choice([0.0, 0.2, 0.9]),
    }
    for d in (sub, obj, env):  # now and then an attribute is missing: rules that read it raise
        if rng.random() < sloppy * 0.8:
            d.pop(rng.choice(sorted(d)))
    return (
        Attrs(sub),
        Attrs(obj),
        rng.choice(["chat", "embeddings", "models"]),
        Attrs(env),
        rng.choice(["access", "content"]),
    )


def _casbin_allows(e: casbin.Enforcer, req: tuple) -> bool:
    sub, obj, act, env, stage = req
    try:
        return bool(e.enforce(sub, obj, act, env, stage))
    except Exception:
        return False


RUNS = [  # (model shape, index leaf size, share of rules with indexable leading tests, sloppy requests)
    ("shipped", 4, 0.5, 0.1),
    ("model-field", 4, 0.5, 0.1),
    ("shipped", 1, 0.5, 0.1),  # leaf size 1: index as deep as it goes, so every skip is tested
    ("shipped", 1, 1.0, 0.3),  # every rule indexable, many missing or odd attribute values
]


@pytest.mark.parametrize("shape, leaf_size, indexed, sloppy", RUNS)
def test_engine_agrees_with_casbin_on_random_rules_and_requests(
    tmp_path: Path, shape: str, leaf_size: int, indexed: float, sloppy: float
) -> None:
    rng = random.Random(f"guard-policy-{shape}-{leaf_size}-{indexed}")
    model = tmp_path / "model.conf"
    model.write_text(MODELS[shape])
    compared = 0
    for n in range(45):
        rules = tmp_path / f"rules{n}.csv"
        lines = [_rule(rng, shape, indexed) for _ in range(rng.randrange(1, 30))]
        rules.write_text("\n".join(["# random rules", *lines]))
        ours = load_policy(model, [rules], leaf_size=leaf_size).engine
        theirs = casbin.Enforcer(str(model), str(rules))
        pool = [_request(rng, sloppy) for _ in range(40)]
        for _ in range(60):  # drawing from a pool repeats requests, so cache hits are compared too
            req = rng.choice(pool)
            sub, obj, act, env, stage = req
            mine = ours.decide(stage, sub, obj, act, env)
            expected = _casbin_allows(theirs, req)
            assert mine.allowed == expected, (rules.read_text(), req, mine)
            compared += 1
    assert compared >= 2_500  # 4 runs: more than 10,000 requests in all
