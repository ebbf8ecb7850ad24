"""Dependencies point one way: core <- layers <- orchestration <- CLI (DESIGN.md, "Layout").

Every module of the package is parsed (no import runs, no JVM) and each import, at the
top of a module or inside a function, becomes an edge of a module graph. The tests fail
on an edge against the direction, a private name imported from another module, and a
cycle; each failure names the modules and lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]

CORE = "core"
LAYER = "layer"
ORCHESTRATION = "orchestration"
CLI = "cli"
RANK = {CORE: 0, LAYER: 1, ORCHESTRATION: 2, CLI: 3}
LAYERS = ("bronze", "silver", "gold", "ml", "dashboards", "audit")
# The one layer others may use: features and scoring shared by training, silver and the audits.
SHARED_LAYER = "ml"


def package_dirs() -> dict[str, Path]:
    """Package name -> folder, as pyproject.toml installs them."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup.get("package-dir", {})
    return {package: REPO / dirs.get(package, package.replace(".", "/")) for package in setup["packages"]}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def kind(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "cli":
        return CLI
    if len(parts) > 1 and parts[1] == "orchestration":
        return ORCHESTRATION
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYER
    return CORE  # fraudlake's own modules and fraudlake.conf


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if kind(module) == LAYER else None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        what = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.source}:{self.line} -> {self.target}{what}"


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def edges() -> list[Edge]:
    known = modules()
    found = []
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Edge(module, a.name, node.lineno, ()) for a in node.names if a.name in known]
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, path, node)
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in known:  # from fraudlake.ml import data
                        found.append(Edge(module, submodule, node.lineno, ()))
                    elif target in known:
                        found.append(Edge(module, target, node.lineno, (alias.name,)))
    return [edge for edge in found if edge.target != edge.source]


def test_the_walk_sees_every_part_of_the_package():
    kinds = {kind(module) for module in modules()}
    assert kinds == {CORE, LAYER, ORCHESTRATION, CLI}
    assert {layer_of(m) for m in modules()} >= set(LAYERS)
    assert len(edges()) > 100  # the walk found the imports, lazy ones included


def test_no_module_imports_against_the_direction():
    wrong = [e for e in edges() if RANK[kind(e.target)] > RANK[kind(e.source)]]
    assert not wrong, "imports against core <- layers <- orchestration <- CLI:\n" + "\n".join(map(str, wrong))


def test_layers_meet_only_through_tables_and_the_shared_ml_layer():
    crossing = [
        e
        for e in edges()
        if kind(e.source) == kind(e.target) == LAYER
        and layer_of(e.source) != layer_of(e.target)
        and (layer_of(e.target) != SHARED_LAYER or layer_of(e.source) == SHARED_LAYER)
    ]
    assert not crossing, "a layer imports another layer:\n" + "\n".join(map(str, crossing))


def test_no_private_name_crosses_a_module_boundary():
    private = [e for e in edges() if any(n.startswith("_") and not n.startswith("__") for n in e.names)]
    assert not private, "private names imported from another module:\n" + "\n".join(map(str, private))


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for edge in edges():
        graph.setdefault(edge.source, set()).add(edge.target)
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("fraudlake.tables", "fraudlake.gold.stream", "against"),
        ("fraudlake.gold.stream", "fraudlake.cli.main", "against"),
        ("fraudlake.orchestration.pipeline", "fraudlake.cli.common", "against"),
        ("fraudlake.cli.pipeline", "fraudlake.orchestration.run", "along"),
        ("fraudlake.silver.stream", "fraudlake.tables", "along"),
    ],
)
def test_the_direction_rule_tells_a_wrong_import_from_a_right_one(source, target, expected):
    """The rule the walk applies, on imports the package does not (or does) have."""
    against = RANK[kind(target)] > RANK[kind(source)]
    assert ("against" if against else "along") == expected
