"""Compile one rule's matcher (casbin's matcher with the rule's fields filled in) to a Python function.

The text goes through exactly the rewriting casbin does (``eval()`` substitution, ``r.``/``p.`` escaping,
``&&``/``||``/``!``), is parsed with ``ast``, checked against a whitelist (names, functions, methods,
operators: a rule cannot reach anything else), and is then compiled once. Evaluation order, short
circuits and operator results are Python's, which is what casbin's simpleeval evaluator does too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpleeval
from casbin import util as cu

from guard.policy.attributes import CONTENT_ENV_ONLY, KNOWN

Path_ = tuple[str, ...]  # ("sub", "ou") for r.sub.ou

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "keyMatch": cu.key_match_func,
    "keyMatch2": cu.key_match2_func,
    "keyMatch3": cu.key_match3_func,
    "keyMatch4": cu.key_match4_func,
    "keyMatch5": cu.key_match5_func,
    "regexMatch": cu.regex_match_func,
    "ipMatch": cu.ip_match_func,
    "globMatch": cu.glob_match_func,
}  # casbin's function map without timeMatch (it reads the clock, so no decision could be cached)
METHODS = frozenset(
    {
        "startswith",
        "endswith",
        "lower",
        "upper",
        "casefold",
        "strip",
        "lstrip",
        "rstrip",
        "split",
        "rsplit",
        "count",
        "find",
        "rfind",
        "index",
        "replace",
        "isdigit",
        "isalpha",
        "isalnum",
    }
)  # side-effect free methods of str and list
_GLOBALS: dict[str, Any] = {
    "__builtins__": {},
    **FUNCTIONS,
    "_add": simpleeval.safe_add,
    "_mult": simpleeval.safe_mult,
    "_pow": simpleeval.safe_power,
}
_BINOPS = {
    ast.Add: "_add",
    ast.Mult: "_mult",
    ast.Pow: "_pow",
    ast.Sub: None,
    ast.Div: None,
    ast.FloorDiv: None,
    ast.Mod: None,
}
_CMPOPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot)
_BANG = re.compile(r"!(?!=)")


class RuleError(ValueError):
    """The rule's expression is not one Guard accepts (the message says why)."""


@dataclass(frozen=True)
class Compiled:
    fn: Callable[..., Any]
    reads: frozenset[Path_]  # attribute paths the expression reads (cache key)
    prefix: tuple[tuple[Path_, str, Any], ...]  # leading `path == c` / `c in path` conjuncts (index)
    source: str  # the expression as casbin evaluates it, for explain


def casbin_text(matcher: str, params: dict[str, str]) -> str:
    """The expression casbin evaluates for one rule (``CoreEnforcer.enforce_ex`` + ``_get_expression``)."""
    expr = matcher
    if cu.has_eval(expr):
        names = cu.get_eval_value(expr)
        try:
            rules = [cu.escape_assertion(params[n]) for n in names]
        except KeyError as e:
            raise RuleError(f"matcher uses eval({e.args[0].replace('_', '.', 1)}), not a policy field") from None
        expr = cu.replace_eval(expr, rules)
    expr = expr.replace("&&", "and").replace("||", "or")
    return _BANG.sub("not ", expr)


class _Translator(ast.NodeTransformer):
    def __init__(self, rtokens: tuple[str, ...], params: dict[str, str], stage: str | None) -> None:
        self.rtokens = set(rtokens)
        self.params = params
        self.stage = stage
        self.reads: set[Path_] = set()

    def generic_visit(self, node: ast.AST) -> ast.AST:
        raise RuleError(f"{type(node).__name__} is not allowed in a rule")

    def visit_Expression(self, node: ast.Expression) -> ast.AST:
        node.body = self.visit(node.body)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if not isinstance(node.value, (str, int, float, bool, type(None))):
            raise RuleError(f"constant {node.value!r} is not allowed")
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.rtokens:
            self.reads.add((node.id[2:],))
            return node
        if node.id in self.params:
            return ast.copy_location(ast.Constant(self.params[node.id]), node)
        if node.id in FUNCTIONS:
            raise RuleError(f"function {node.id} must be called")
        raise RuleError(f"unknown name {node.id!r} (use r.sub, r.obj, r.act, r.env or a policy field)")

    def _chain(self, node: ast.AST) -> Path_ | None:
        names: list[str] = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in self.rtokens:
            return (node.id[2:], *reversed(names))
        return None

    def _attribute(self, node: ast.Attribute, method: bool) -> ast.AST:
        _check_attr(node.attr)
        path = self._chain(node)
        if path is not None:
            for a in path[1:]:
                _check_attr(a)
            self._check_path(path if not method else path[:-1], node)
            self.reads.add(path[:-1] if method else path)
            return node
        node.value = self.visit(node.value)
        return node

    def _check_path(self, path: Path_, node: ast.AST) -> None:
        if len(path) < 2 or path[0] not in KNOWN:
            return
        obj, name = path[0], path[1]
        if name not in KNOWN[obj]:
            known = ", ".join(sorted(KNOWN[obj]))
            raise RuleError(f"unknown attribute r.{obj}.{name} (known: {known})")
        if obj == "env" and name in CONTENT_ENV_ONLY and self.stage in ("access", "console"):
            raise RuleError(f"r.env.{name} exists only at the content stage")

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        return self._attribute(node, method=False)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if node.keywords:
            raise RuleError("keyword arguments are not allowed")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise RuleError("*arguments are not allowed")
        args: list[ast.expr] = [self.visit(a) for a in node.args]
        f = node.func
        if isinstance(f, ast.Name):
            if f.id not in FUNCTIONS:
                raise RuleError(f"unknown function {f.id!r} (known: {', '.join(FUNCTIONS)})")
            if f.id == "keyMatch" and len(args) == 2 and _plain_key(args[1]):
                # keyMatch(x, "k") with no "*" is exactly x == "k" (casbin's key_match); indexable
                return ast.copy_location(ast.Compare(args[0], [ast.Eq()], [args[1]]), node)
            node.args = args
            return node
        if isinstance(f, ast.Attribute):
            if f.attr not in METHODS:
                raise RuleError(f"method {f.attr!r} is not allowed (allowed: {', '.join(sorted(METHODS))})")
            self._attribute(f, method=True)  # checks and records the read; the node stays as it is
            node.args = args
            return node
        raise RuleError("only named functions and methods can be called")

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        node.values = [self.visit(v) for v in node.values]
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            raise RuleError(f"operator {type(node.op).__name__} is not allowed")
        node.operand = self.visit(node.operand)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        if type(node.op) not in _BINOPS:
            raise RuleError(f"operator {type(node.op).__name__} is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        helper = _BINOPS[type(node.op)]
        if helper is None:
            node.left, node.right = left, right
            return node
        call = ast.Call(ast.copy_location(ast.Name(helper, ast.Load()), node), [left, right], [])
        return ast.copy_location(call, node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if not isinstance(op, _CMPOPS):
                raise RuleError(f"operator {type(op).__name__} is not allowed")
            if isinstance(op, (ast.Is, ast.IsNot)) and not (
                isinstance(operands[i], ast.Constant) or isinstance(operands[i + 1], ast.Constant)
            ):
                raise RuleError("'is' compares with a constant only (True, False, None)")
        node.left = self.visit(node.left)
        node.comparators = [self.visit(c) for c in node.comparators]
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        node.test, node.body, node.orelse = self.visit(node.test), self.visit(node.body), self.visit(node.orelse)
        return node

    def _seq(self, node: ast.List | ast.Tuple | ast.Set) -> ast.AST:
        node.elts = [self.visit(e) for e in node.elts]
        return node

    visit_List = visit_Tuple = visit_Set = _seq

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        node.value = self.visit(node.value)
        node.slice = self.visit(node.slice)
        return node

    def visit_Slice(self, node: ast.Slice) -> ast.AST:
        for k in ("lower", "upper", "step"):
            v = getattr(node, k)
            if v is not None:
                setattr(node, k, self.visit(v))
        return node


def _check_attr(a: str) -> None:
    if a.startswith("_") or a.startswith("func_") or a in simpleeval.DISALLOW_METHODS:
        raise RuleError(f"attribute {a!r} is not allowed")


def _plain_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and "*" not in node.value


def _conjuncts(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [c for v in node.values for c in _conjuncts(v)]
    return [node]


def _prefix(body: ast.AST, rtokens: set[str]) -> tuple[tuple[Path_, str, Any], ...]:
    """Leading conjuncts ``path == constant`` ("eq") and ``"constant" in path`` ("in"), for the index."""
    out: list[tuple[Path_, str, Any]] = []
    for c in _conjuncts(body):
        safe = _safe_call(c)
        if safe is not None:
            out.append((safe[0], "safe", safe[1]))
            continue
        if not (isinstance(c, ast.Compare) and len(c.ops) == 1):
            break
        a, op, b = c.left, c.ops[0], c.comparators[0]
        if isinstance(op, ast.Eq):
            if isinstance(a, ast.Constant):
                a, b = b, a
            path = _path_of(a, rtokens)
            if path is None or not isinstance(b, ast.Constant):
                break
            out.append((path, "eq", b.value))
        elif isinstance(op, ast.In) and isinstance(a, ast.Constant):
            path = _path_of(b, rtokens)
            if path is None:
                break
            out.append((path, "in", a.value))
        else:
            break
    return tuple(out)


STR_TOKENS = frozenset({"r_act", "r_stage"})  # Engine.decide accepts only strings for these


def _safe_call(c: ast.AST) -> tuple[Path_, str] | None:
    """``keyMatch(r.act, "ch*")``: cannot raise, since act is always a string (a prefix conjunct that
    the index does not file under, but that does not end the prefix either)."""
    if (
        isinstance(c, ast.Call)
        and isinstance(c.func, ast.Name)
        and c.func.id == "keyMatch"
        and len(c.args) == 2
        and isinstance(c.args[0], ast.Name)
        and c.args[0].id in STR_TOKENS
        and isinstance(c.args[1], ast.Constant)
        and isinstance(c.args[1].value, str)
    ):
        return (c.args[0].id[2:],), c.args[1].value
    return None


def _path_of(node: ast.AST, rtokens: set[str]) -> Path_ | None:
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in rtokens:
        return (node.id[2:], *reversed(names))
    return None


def compile_rule(
    matcher: str, rtokens: tuple[str, ...], params: dict[str, str], stage: str | None, loc: str
) -> Compiled:
    """Compile the matcher for one rule (``params``: ``{"p_act": "chat", ...}``); raise RuleError."""
    text = casbin_text(matcher, params)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise RuleError(f"syntax error ({e.msg}) in the condition as casbin evaluates it: {text.strip()}") from None
    tr = _Translator(rtokens, params, stage)
    body = tr.visit(tree).body
    args = [ast.copy_location(ast.arg(t), body) for t in rtokens]
    lam = ast.copy_location(
        ast.Lambda(ast.arguments(posonlyargs=[], args=args, kwonlyargs=[], kw_defaults=[], defaults=[]), body), body
    )
    # every node carries a location already (parsed, or copied above): no fix_missing_locations pass,
    # which was a third of the load time at 10,000 rules
    fn = eval(compile(ast.Expression(lam), loc, "eval"), _GLOBALS)
    return Compiled(fn=fn, reads=frozenset(tr.reads), prefix=_prefix(body, set(rtokens)), source=text.strip())
