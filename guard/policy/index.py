"""Rule index: skip rules whose leading ``attribute == "constant"`` test cannot hold for a request.

A rule is filed under a path (say ``r.obj.model``) only when the conjuncts before that test cannot raise
once the walk has read the path, so skipping the rule changes nothing casbin would observe: the rule
would have evaluated to false without an error. Rules without such a test stay in ``other`` and are
always candidates. A lookup that raises (a missing attribute) evaluates every rule of that node, in
order, exactly like casbin.
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
    prefix: tuple[tuple[Path_, Any], ...]
    source: str


class Node:
    __slots__ = ("path", "get", "table", "other", "rules", "id")

    def __init__(self, rules: Sequence[Rule], nid: int) -> None:
        self.rules = tuple(rules)
        self.id = nid
        self.path: Path_ | None = None
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
    args = ast.arguments(posonlyargs=[], args=[ast.arg(t) for t in rtokens], kwonlyargs=[],
                         kw_defaults=[], defaults=[])
    expr = ast.fix_missing_locations(ast.Expression(ast.Lambda(args, body)))
    return eval(compile(expr, "<policy-index>", "eval"), {"__builtins__": {}, **glb})  # noqa: S307


def _eligible(rule: Rule, used: frozenset[Path_]) -> dict[Path_, str]:
    """Paths this rule can be filed under, given the paths already read on the way to this node."""
    out: dict[Path_, str] = {}
    unsafe: set[Path_] = set()  # earlier conjuncts' paths that may not be readable
    for path, const in rule.prefix:
        if unsafe <= {path} and isinstance(const, str) and path not in used and path not in out:
            out[path] = const
        if len(path) > 1 and path not in used:
            unsafe.add(path)
    return out


class _Builder:
    def __init__(self, rtokens: tuple[str, ...]) -> None:
        self.rtokens = rtokens
        self.count = 0
        self.getters: dict[Path_, Callable[..., Any]] = {}

    def build(self, rules: Sequence[Rule], used: frozenset[Path_] = frozenset(), depth: int = 0) -> Node:
        node = Node(rules, self.count)
        self.count += 1
        if len(rules) <= LEAF_SIZE or depth >= MAX_DEPTH:
            return node
        elig = [_eligible(r, used) for r in rules]
        buckets: dict[Path_, dict[str, int]] = {}
        for e in elig:
            for path, const in e.items():
                b = buckets.setdefault(path, {})
                b[const] = b.get(const, 0) + 1
        best, score = None, 1
        for path, b in buckets.items():
            s = sum(b.values()) - max(b.values())  # rules skipped at least, whatever the value
            if s > score or (s == score and best is not None and path < best):
                best, score = path, s
        if best is None:
            return node
        table: dict[str, list[Rule]] = {}
        other: list[Rule] = []
        for r, e in zip(rules, elig):
            if best in e:
                table.setdefault(e[best], []).append(r)
            else:
                other.append(r)
        node.path = best
        if best not in self.getters:
            self.getters[best] = getter(best, self.rtokens)
        node.get = self.getters[best]
        used = used | {best}
        node.table = {c: self.build(rs, used, depth + 1) for c, rs in table.items()}
        node.other = self.build(other, used, depth + 1)
        return node


def build_index(rules: Sequence[Rule], rtokens: tuple[str, ...]) -> tuple[Node, int]:
    b = _Builder(rtokens)
    root = b.build(rules)
    return root, b.count


def collect(node: Node, args: tuple[Any, ...], out: list[Node]) -> bool:
    """Append the nodes whose rules are candidates; False when a lookup raised (then the node's
    whole rule list is a candidate and the decision must not be cached)."""
    exact = True
    while node.get is not None:
        try:
            v = node.get(*args)
        except Exception:  # noqa: BLE001 - a missing attribute: evaluate everything below, in order
            out.append(node)
            return False
        if isinstance(v, str):
            child = node.table.get(v)
            if child is not None:
                exact = collect(child, args, out) and exact
        node = node.other  # type: ignore[assignment]
    if node.rules:
        out.append(node)
    return exact
