"""Rule index: skip rules whose leading ``attribute == "c"`` or ``"c" in attribute`` test cannot hold.

A rule is filed under a test (say ``r.obj.model == ...``) only when the conjuncts before that test
cannot raise once the walk has read what it read, so skipping the rule changes nothing casbin would
observe: the rule would have evaluated to false without an error. Rules without such a test stay in
``other`` and are always candidates. A lookup that raises (a missing attribute), or a value an "in"
test cannot index (not a list), makes every rule of that node a candidate, in order, like casbin.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from guard.policy.compiler import Path_

LEAF_SIZE = 4
MAX_DEPTH = 5


@dataclass(frozen=True, eq=False)
class Rule:
    index: int  # position in the policy (file order), decides "first" among matches
    loc: str
    eft: str  # allow | deny | profile | anything else (casbin: indeterminate)
    profile: str
    fn: Callable[..., Any]
    reads: frozenset[Path_]
    prefix: tuple[tuple[Path_, str, Any], ...]  # (path, "eq" | "in" | "safe", constant)
    source: str


Test = tuple[Path_, str]  # (path, kind)


class Node:
    __slots__ = ("get", "id", "kind", "other", "path", "rules", "table")

    def __init__(self, rules: Sequence[Rule], nid: int) -> None:
        self.rules = tuple(rules)
        self.id = nid
        self.path: Path_ | None = None
        self.kind = "eq"
        self.get: Callable[..., Any] | None = None
        self.table: dict[str, Node] = {}
        self.other: Node | None = None


def getter(path: Path_, rtokens: tuple[str, ...]) -> Callable[..., Any]:
    """A function of the request tuple that reads ``path`` (``("sub", "ou")`` -> ``r_sub.ou``)."""
    node: ast.expr = ast.Name(f"r_{path[0]}", ast.Load())
    for a in path[1:]:
        node = ast.Attribute(node, a, ast.Load())
    return lambda_of(node, rtokens, {})


def lambda_of(body: ast.expr, rtokens: tuple[str, ...], glb: dict[str, Any]) -> Callable[..., Any]:
    args = ast.arguments(posonlyargs=[], args=[ast.arg(t) for t in rtokens], kwonlyargs=[], kw_defaults=[], defaults=[])
    expr = ast.fix_missing_locations(ast.Expression(ast.Lambda(args, body)))
    return eval(compile(expr, "<policy-index>", "eval"), {"__builtins__": {}, **glb})


_COMBO_PATHS = (("stage",), ("act",))  # the engine splits candidates by these itself (per stage and act)


def _safe(test: Test, used: frozenset[Test]) -> bool:
    """Can this conjunct raise, given what the walk has read? ``==`` cannot once the path was read
    (request tokens always can be); ``in`` cannot once the walk saw the value is a list or tuple."""
    path, kind = test
    if kind == "safe":
        return True
    if kind == "eq":
        return len(path) == 1 or any(p == path for p, _ in used)
    return test in used


def _eligible(rule: Rule, used: frozenset[Test]) -> dict[Test, str]:
    """Tests this rule can be filed under, given the tests already walked to reach this node."""
    out: dict[Test, str] = {}
    unsafe: list[Test] = []  # earlier conjuncts that might raise
    for path, kind, const in rule.prefix:
        test = (path, kind)
        indexable = kind != "safe" and path not in _COMBO_PATHS and isinstance(const, str)
        if indexable and test not in used and test not in out and all(_safe(u, used | {test}) for u in unsafe):
            out[test] = const
        if not _safe(test, used):
            unsafe.append(test)
    return out


class _Builder:
    def __init__(self, rtokens: tuple[str, ...], leaf_size: int) -> None:
        self.rtokens = rtokens
        self.leaf_size = leaf_size
        self.count = 0
        self.getters: dict[Path_, Callable[..., Any]] = {}

    def build(self, rules: Sequence[Rule], used: frozenset[Test] = frozenset(), depth: int = 0) -> Node:
        node = Node(rules, self.count)
        self.count += 1
        if len(rules) <= self.leaf_size or depth >= MAX_DEPTH:
            return node
        elig = [_eligible(r, used) for r in rules]
        buckets: dict[Test, dict[str, int]] = {}
        for e in elig:
            for test, const in e.items():
                b = buckets.setdefault(test, {})
                b[const] = b.get(const, 0) + 1
        best, score = None, 0
        for test, b in buckets.items():
            s = sum(b.values()) - max(b.values())  # rules skipped at least, whatever the value
            if s > score or (s == score and best is not None and test < best):
                best, score = test, s
        if best is None:
            return node
        table: dict[str, list[Rule]] = {}
        other: list[Rule] = []
        for r, e in zip(rules, elig, strict=False):
            if best in e:
                table.setdefault(e[best], []).append(r)
            else:
                other.append(r)
        node.path, node.kind = best
        if node.path not in self.getters:
            self.getters[node.path] = getter(node.path, self.rtokens)
        node.get = self.getters[node.path]
        used = used | {best}
        node.table = {c: self.build(rs, used, depth + 1) for c, rs in table.items()}
        node.other = self.build(other, used, depth + 1)
        return node


def build_index(rules: Sequence[Rule], rtokens: tuple[str, ...], leaf_size: int = LEAF_SIZE) -> tuple[Node, int]:
    b = _Builder(rtokens, leaf_size)
    root = b.build(rules)
    return root, b.count


def collect(node: Node, args: tuple[Any, ...], out: list[Node]) -> None:
    """Append the nodes whose rules are candidates for the request ``args``."""
    while node.get is not None:
        try:
            v = node.get(*args)
        except Exception:
            out.append(node)
            return
        if node.kind == "eq":
            if isinstance(v, str):
                child = node.table.get(v)
                if child is not None:
                    collect(child, args, out)
        elif type(v) is list or type(v) is tuple:
            for i, e in enumerate(v):
                if isinstance(e, str) and e not in v[:i]:
                    child = node.table.get(e)
                    if child is not None:
                        collect(child, args, out)
        else:  # "c" in a string is a substring test, in anything else it may raise: no skipping
            out.append(node)
            return
        node = node.other  # type: ignore[assignment]
    if node.rules:
        out.append(node)
