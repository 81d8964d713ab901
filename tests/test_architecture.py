"""The package's shape, enforced: one layer order, no import circles, no private names across modules.

Read with ast, so imports inside functions count as much as module-level ones. Each top-level
unit of ``popcli`` (a subpackage or a module directly in it) has a rank below; a module may import
its own unit and units of a lower rank, never a higher one (docs/ARCHITECTURE.md draws the same
order). A module added to a new unit must be given a rank here, which is the point: decide which
room it lives in first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "popcli"
# lowest first; data flows recipe -> model -> engine -> run folder -> artifact -> deploy -> measure
LAYERS = [
    "errors", "version",            # the domain errors; the one version string
    "storage",                      # files: atomic writes, run folders, locks, strict JSON, fault points
    "kernels", "rng", "codecs",     # C kernels; the one owner of randomness; mask codecs
    "measure",                      # accuracy, top-5, latency (search, eval and deploy)
    "nn", "methods",                # subnet layers and converters; search methods' layer rules
    "recipe",                       # the typed recipe, YAML, packaged recipes, key reference
    "data", "models",               # datasets and loaders; registry, architectures, building, policies
    "engine",                       # the search loop and its Python API
    "artifact",                     # the file: header, writer, masks, rebuild, multi-mask, preprocessing
    "deploy",                       # bake, ONNX, int8, popcli eval
    "export",                       # run -> artifact, multi-mask bundles
    "sweep",                        # grids, pools, launchers, plots, runs index
    "cli",                          # the command line
    "",                             # the package root (the public API), __main__, the 0.1 pickle shim
]
ROOT_MODULES = {"__init__", "__main__", "sweep_pool"}
RANK = {unit: i for i, unit in enumerate(LAYERS)}
MAX_LINES = 400
MAX_TOP_MODULES = 12


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
PACKAGES = {m for m, p in FILES.items() if p.name == "__init__.py"}


def unit(module: str) -> str:
    """The top-level unit of ``popcli.a.b`` ("a"), or "" for the root modules."""
    parts = module.split(".")
    return "" if len(parts) == 1 or parts[1] in ROOT_MODULES else parts[1]


def owner(target: str) -> str | None:
    """The package module a dotted name lives in (``popcli.a.b.f`` -> ``popcli.a.b``)."""
    while target:
        if target in FILES:
            return target
        target = target.rpartition(".")[0]
    return None


def imports(module: str, text: str | None = None) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every popcli import in ``module`` (its
    source ``text``, default the file's)."""
    tree = ast.parse(FILES[module].read_text(encoding="utf-8") if text is None else text)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(owner(a.name), "", node.lineno) for a in node.names if a.name.split(".")[0] == "popcli"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if module in PACKAGES else module.split(".")[:-1]
                base = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "popcli":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full, "", node.lineno) if full in FILES else (owner(base), alias.name, node.lineno))
    return [(target, name, line) for target, name, line in found if target and target != module]


EDGES = {module: imports(module) for module in FILES}


def test_every_unit_has_a_rank():
    assert {unit(m) for m in FILES} <= set(RANK), sorted({unit(m) for m in FILES} - set(RANK))


@pytest.mark.parametrize("module", sorted(FILES))
def test_no_upward_import(module):
    """A lower layer never imports a higher one, inside functions included."""
    upward = [f"line {line}: {target}" for target, _, line in EDGES[module]
              if RANK[unit(target)] > RANK[unit(module)]]
    assert not upward, f"{module} ({unit(module) or 'root'}) imports a higher layer: {upward}"


def test_no_private_name_across_modules():
    private = [f"{module}:{line} imports {target}.{name}" for module, edges in EDGES.items()
               for target, name, line in edges if name.startswith("_") and not name.startswith("__")]
    assert not private, private


def test_no_import_circle():
    """No strongly connected component of more than one module (Tarjan's algorithm, iteratively)."""
    graph = {m: sorted({t for t, _, _ in edges}) for m, edges in EDGES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    assert not circles, circles


def test_small_files_and_few_top_modules():
    long = {m: n for m, p in FILES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_no_submodule_named_like_a_public_attribute():
    """``popcli.search`` is a function, so no module may be called ``popcli/search.py`` (the
    callable-module trap); likewise in every subpackage."""
    traps = []
    for package in PACKAGES:
        tree = ast.parse(FILES[package].read_text(encoding="utf-8"))
        public = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                public |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
        traps += [f"{package}.{name}" for name in public if f"{package}.{name}" in FILES]
    assert not traps, traps


def test_the_checks_see_function_level_and_private_imports():
    """The parser the tests above rely on finds what they forbid (so they can fail)."""
    probe = "def f():\n    from ..artifact import read\n    from ..nn.topk import _secret\n    import popcli.cli.app\n"
    found = imports("popcli.models.build", probe)
    assert [(t, n) for t, n, _ in found] == [("popcli.artifact", "read"), ("popcli.nn.topk", "_secret"),
                                            ("popcli.cli.app", "")]
    assert all(RANK[unit(t)] > RANK[unit("popcli.models.build")] for t in ("popcli.artifact", "popcli.cli.app"))
