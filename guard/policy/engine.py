"""Engine: decides one request with casbin's semantics, fast.

Effect (the only one Guard's models use): ``some(where (p.eft == allow)) && !some(where (p.eft == deny))``.
A rule whose condition raises, or returns something other than a bool or a float (casbin raises then
too), denies the request: fail closed. Decisions are cached per candidate-rule set and the values of
exactly the attributes those rules read, so a rule that reads ``r.env.hour`` makes the hour part of
the key and a rule that reads ``r.env.time`` makes the cache useless for those requests, never wrong.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from casbin.util import key_match_func

from guard.policy.attributes import Attrs, freeze, wrap
from guard.policy.decision import Decision
from guard.policy.index import LEAF_SIZE, Node, Rule, build_index, collect, lambda_of
from guard.telemetry import POLICY_ERRORS

log = logging.getLogger("guard.policy")

CACHE_ENTRIES = 200_000  # decisions cached in all; everything is dropped when reached (bounded memory)
MAX_COMBOS = 20_000  # candidate sets remembered (each with its compiled cache key function)
_NO_PROFILE = ("", "-")


class _Combo:
    """The candidate rules of one walk through the index, their cache key function and cache."""

    __slots__ = ("cache", "key", "rules")

    def __init__(self, rules: tuple[Rule, ...], key: Callable[..., Any] | None) -> None:
        self.rules = rules
        self.key = key
        self.cache: dict[Any, Decision] = {}


def _key_function(rules: Sequence[Rule], rtokens: tuple[str, ...]) -> Callable[..., Any]:
    """``lambda r_sub, ...: (freeze(r_sub.ou), ...)`` over the paths the rules read, str fast path."""
    # one combo serves one stage and act: they need not be part of the key
    paths = sorted({p for r in rules for p in r.reads if p not in (("stage",), ("act",))})
    elts: list[ast.expr] = []
    for path in paths:
        node: ast.expr = ast.Name(f"r_{path[0]}", ast.Load())
        for a in path[1:]:
            node = ast.Attribute(node, a, ast.Load())
        v = ast.NamedExpr(ast.Name("_v", ast.Store()), node)
        is_str = ast.Compare(ast.Call(ast.Name("type", ast.Load()), [v], []), [ast.Is()], [ast.Name("str", ast.Load())])
        frozen = ast.Call(ast.Name("freeze", ast.Load()), [ast.Name("_v", ast.Load())], [])
        elts.append(ast.IfExp(is_str, ast.Name("_v", ast.Load()), frozen))
    return lambda_of(ast.Tuple(elts, ast.Load()), rtokens, {"type": type, "str": str, "freeze": freeze})


class Engine:
    """Immutable after construction except for its decision cache (safe to share between threads)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        rtokens: tuple[str, ...],
        version: str,
        cache: bool = True,
        leaf_size: int = LEAF_SIZE,
    ) -> None:
        self.rules = tuple(rules)
        self.rtokens = rtokens
        self.version = version
        self.cache_enabled = cache
        self.root, self.index_nodes = build_index(self.rules, rtokens, leaf_size)
        self._combos: dict[tuple[Any, ...], _Combo] = {}  # (stage, act, node ids...)
        self._entries = 0  # approximate under threads, which is all a memory bound needs
        names = [t[2:] for t in rtokens]
        self._order = lambda d: tuple(d[n] for n in names)

    def decide(
        self,
        stage: str,
        sub: Mapping[str, Any] | Attrs,
        obj: Mapping[str, Any] | Attrs,
        act: str,
        env: Mapping[str, Any] | Attrs,
    ) -> Decision:
        if type(act) is not str or type(stage) is not str:  # the index relies on it (STR_TOKENS)
            raise TypeError("act and stage must be strings")
        args = self._order({"stage": stage, "sub": wrap(sub), "obj": wrap(obj), "act": act, "env": wrap(env)})
        return self._decide_args(stage, act, args)

    def _decide_args(self, stage: str, act: str, args: tuple[Any, ...]) -> Decision:
        nodes: list[Node] = []
        collect(self.root, args, nodes)
        ids = (stage, act, *[n.id for n in nodes])
        combo = self._combos.get(ids)
        if combo is None:
            combo = self._combo(ids, nodes, stage, act)
        if combo.key is None:
            return self._evaluate(stage, combo.rules, args)
        try:
            k = combo.key(*args)
            hit = combo.cache.get(k)
        except Exception:
            return self._evaluate(stage, combo.rules, args)
        if hit is not None:
            return hit
        d = self._evaluate(stage, combo.rules, args)
        if not d.error:
            self._entries += 1
            if self._entries > CACHE_ENTRIES:
                self.clear_cache()
            combo.cache[k] = d
        return d

    def _combo(self, ids: tuple[Any, ...], nodes: list[Node], stage: str, act: str) -> _Combo:
        rules = tuple(r for r in _merge(nodes) if _may_match(r, stage, act))
        key = _key_function(rules, self.rtokens) if self.cache_enabled else None
        combo = _Combo(rules, key)
        if len(self._combos) >= MAX_COMBOS:
            self._combos.clear()
        self._combos[ids] = combo
        return combo

    def _evaluate(self, stage: str, rules: Sequence[Rule], args: tuple[Any, ...]) -> Decision:
        matched: list[Rule] = []
        errors: list[tuple[Rule, str]] = []
        for r in rules:
            try:
                res = r.fn(*args)
            except Exception as e:
                errors.append((r, f"{type(e).__name__}: {e}"))
                continue
            if res is True:
                matched.append(r)
            elif res is False:
                continue
            elif isinstance(res, float) and not isinstance(res, bool):
                if res != 0:
                    matched.append(r)
            else:
                errors.append((r, f"condition returned {type(res).__name__}, not a bool"))
        return self._conclude(stage, matched, errors)

    def _conclude(self, stage: str, matched: list[Rule], errors: list[tuple[Rule, str]]) -> Decision:
        deny = next((r for r in matched if r.eft == "deny"), None)
        allow = next((r for r in matched if r.eft == "allow"), None)
        profile = next(
            (r.profile for r in matched if r.eft in ("allow", "profile") and r.profile not in _NO_PROFILE), "default"
        )
        tier = next((r.profile for r in matched if r.eft == "quota" and r.profile not in _NO_PROFILE), "default")
        locs = tuple(r.loc for r in matched)
        if errors:
            for r, msg in errors:
                POLICY_ERRORS.inc()
                log.warning("policy rule %s failed at run time, request denied: %s", r.loc, msg)
            first = errors[0]
            return Decision(
                stage,
                "deny",
                deny.loc if deny else first[0].loc,
                self.version,
                locs,
                profile,
                "; ".join(f"{r.loc}: {m}" for r, m in errors),
                quota_tier=tier,
            )
        if deny is not None:
            return Decision(stage, "deny", deny.loc, self.version, locs, profile, quota_tier=tier)
        if allow is not None:
            return Decision(stage, "allow", allow.loc, self.version, locs, profile, quota_tier=tier)
        return Decision(stage, "deny", "", self.version, locs, profile, quota_tier=tier)

    def clear_cache(self) -> None:
        self._entries = 0
        for combo in list(self._combos.values()):
            combo.cache.clear()

    def rule_at(self, loc: str) -> Rule | None:
        return next((r for r in self.rules if r.loc == loc), None)


def _may_match(rule: Rule, stage: str, act: str) -> bool:
    """False when the rule's leading tests on stage and act fail: then it is false without an error."""
    known = {"stage": stage, "act": act}
    for path, kind, const in rule.prefix:
        if len(path) != 1 or path[0] not in known:
            break
        v = known[path[0]]
        if (kind == "eq" and v != const) or (kind == "safe" and not key_match_func(v, const)):
            return False
        if kind == "in":
            break
    return True


def _merge(nodes: Sequence[Node]) -> tuple[Rule, ...]:
    if len(nodes) == 1:
        return nodes[0].rules
    return tuple(sorted((r for n in nodes for r in n.rules), key=lambda r: r.index))
