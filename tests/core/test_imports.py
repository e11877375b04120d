"""Imports point one way: no import circles among Guard's modules, and no screen reaching up into the
request path. The graph is read from the source (every ``import`` statement, at module level or inside a
function), so an import hidden in a function to dodge a circle still counts."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUARD = ROOT / "guard"
UPWARD_FOR_SCREENS = ("guard.pipeline", "guard.relay", "guard.app")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(GUARD.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _targets(mod: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement may load: the module and, for ``from x import y``, ``x.y`` (y may
    be a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def import_graph() -> dict[str, set[str]]:
    """Guard module -> the Guard modules it imports. A name resolves to the longest Guard module it names,
    and importing ``guard.audit.settings`` also runs the package ``guard.audit`` (its ``__init__``): an
    edge too. A module's own packages (``guard``, ``guard.audit`` for ``guard.audit.x``) are not edges:
    Python has loaded them before the module."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _targets(mod, path, node):
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                while name and name != mod and not mod.startswith(name + "."):
                    graph[mod].add(name)
                    name = name.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root, deps in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(deps)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _show(graph: dict[str, set[str]], comp: list[str]) -> str:
    inside = set(comp)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & inside))}" for m in comp)


def test_the_graph_sees_module_and_function_level_imports():
    g = import_graph()
    assert "guard.pipeline" in g["guard.runtime"]  # module level
    assert "guard.app" in g["guard.runtime"]  # inside a method (Runtime.services)
    assert "guard.audit.verify" in g["guard.audit.prune"]


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_among_guard_modules():
    g = import_graph()
    found = cycles(g)
    assert not found, "import circles (give each one direction): " + " | ".join(_show(g, c) for c in found)


def test_screens_never_import_the_request_path():
    g = import_graph()
    bad = sorted((m, t) for m, ts in g.items() if m.startswith("guard.screens") for t in ts if t in UPWARD_FOR_SCREENS)
    assert not bad, bad


# --- other libraries' private names: only in guard/compat ---------------------------------------------------

# Documented despite the underscore: os._exit (a forked child's exit); argparse._SubParsersAction only names
# in type hints the documented return value of add_subparsers(), which has no public name.
_ALLOWED_PRIVATE = {("os", "_exit"), ("argparse", "_SubParsersAction")}


def private_uses() -> list[str]:
    """``module._name``, ``from module import _name``, ``getattr(x, "_name")`` (x not self) and name-mangled
    ``x._Class__name`` where the module is not Guard's own, in guard/ outside guard/compat. (A private
    attribute of an object held in a variable is beyond a syntax check: review catches those.)"""
    out = []
    for mod, path in _modules().items():
        if mod.startswith("guard.compat"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if not a.name.startswith("guard"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and node.module
                and not node.module.startswith(("guard", "__future__"))
            ):
                out += [
                    f"{path.name}:{node.lineno} from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
                if any(p.startswith("_") for p in node.module.split(".")):
                    out.append(f"{path.name}:{node.lineno} from {node.module}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                name = node.attr
                if "__" in name.strip("_") and name.startswith("_") and not name.endswith("__"):
                    out.append(f"{path.name}:{node.lineno} name-mangled .{name}")
                if (
                    isinstance(node.value, ast.Name)
                    and node.value.id in aliases
                    and name.startswith("_")
                    and not name.startswith("__")
                    and (aliases[node.value.id], name) not in _ALLOWED_PRIVATE
                ):
                    out.append(f"{path.name}:{node.lineno} {node.value.id}.{name}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"))
                and isinstance(node.args[1].value, str)
                and node.args[1].value.startswith("_")
                and not node.args[1].value.startswith("__")
            ):
                out.append(f"{path.name}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
    return out


def test_other_libraries_private_names_are_used_only_through_guard_compat():
    found = private_uses()
    assert not found, "use a public API, or fence the use in one guard/compat adapter: " + "; ".join(found)
