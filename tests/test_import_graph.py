"""No import circle in any lore package, and intra-project imports only at module level.

The graph is built from the source (AST), from every import statement
anywhere in a module -- including ones inside functions -- so a circle cannot
hide behind a function-level import. Lazy imports stay allowed for optional
third-party dependencies (transformers, matplotlib, datasets, ...), never for
lore's own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import packages only: a pip build leaves src/lore_*.egg-info beside them
PACKAGES = {p.parent.name: p.parent
            for p in sorted((ROOT / "packages").glob("*/src/lore_*/__init__.py"))}
PROJECT = tuple(PACKAGES)
# Project modules that need an optional extra at import (starlette, uvicorn: `[serve]`);
# the command that needs them imports them where it runs, so the rest imports without.
OPTIONAL_EXTRA = {"lore_train.serve.app", "lore_train.serve.server"}


def module_name(path: Path, package_dir: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for pkg_dir in PACKAGES.values():
        for path in sorted(pkg_dir.rglob("*.py")):
            found[module_name(path, pkg_dir)] = path
    return found


# Compiled modules (setup.py builds them when it can; a build may skip them).
EXTENSIONS = {"lore_kernels._C"}


def is_extension(package: str, name: str) -> bool:
    """Whether ``package.name`` is a compiled extension: optional, and it imports nothing of ours."""
    return f"{package}.{name}" in EXTENSIONS


def resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int, bool]] = []

    def target(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] in PROJECT and (t := target(alias.name)):
                        found.append((t, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                base = resolve(module, path, child)
                if base.split(".")[0] not in PROJECT:
                    continue
                for alias in child.names:  # `from pkg import submodule` imports the submodule
                    if is_extension(base, alias.name):
                        continue  # a compiled kernel: optional (may not be built), imports nothing
                    t = target(f"{base}.{alias.name}")
                    if t is None or t != f"{base}.{alias.name}":
                        t = target(base)
                    if t:
                        found.append((t, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    lazy = []
    for mod, path in mods.items():
        for target, line, in_function in imports(mod, path, known):
            if target == mod:
                continue
            # a package's __init__ is imported before any of its modules: a module
            # importing its own package's names back is an edge to the __init__
            edges[mod].add(target)
            if in_function and target not in OPTIONAL_EXTRA:
                lazy.append(f"{path.relative_to(ROOT)}:{line}: imports {target} inside a function")
    return edges, lazy


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(edges, WHITE)
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        color[node] = GREY
        stack.append(node)
        for nxt in sorted(edges[node]):
            if color[nxt] == GREY:
                return [*stack[stack.index(nxt):], nxt]
            if color[nxt] == WHITE and (found := dfs(nxt)):
                return found
        stack.pop()
        color[node] = BLACK
        return None

    for node in sorted(edges):
        if color[node] == WHITE and (found := dfs(node)):
            return found
    return None


def test_the_graph_sees_every_package():
    assert set(PROJECT) == {"lore_kernels", "lore_datasets", "lore_train", "lore_eval"}
    edges, _ = graph()
    assert "lore_train.trainer" in edges["lore_train.stopping"] or \
        "lore_train.stopping" in edges["lore_train.trainer"]


def test_no_project_import_inside_a_function():
    _, lazy = graph()
    assert not lazy, "\n".join(lazy)


def test_no_import_circle():
    edges, _ = graph()
    # a package __init__ re-exports its modules; a module importing names from its
    # own package's __init__ would close a circle through it, and is caught here too
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def test_packages_depend_one_way():
    order = ["lore_kernels", "lore_datasets", "lore_train", "lore_eval"]
    edges, _ = graph()
    wrong = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                   if order.index(b.split(".")[0]) > order.index(a.split(".")[0]))
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("cycle", [["a", "b", "a"]])
def test_the_cycle_finder_finds_a_planted_circle(cycle):
    assert find_cycle({"a": {"b"}, "b": {"a"}, "c": set()}) == cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
