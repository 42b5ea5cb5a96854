"""The import graph has floors: a module imports only from floors below its own, or from its own
group (its package: ``dml.data``, ``dml.losses``, ..., or itself for a top-level module). Every
import counts, also one inside a function or under ``TYPE_CHECKING``: a lazy import is still a
dependency, and a type-only one still ties the code together.

Floor 0 (ground) is what everything may use; floor 1 holds the families, each standing on the
ground alone (no family imports another); ``dml.config`` assembles the families' configs into the
params schema; everything that reads ``Params`` or combines families sits above it; stages and
pipelines are the top. A module in no group of :data:`FLOORS` fails, so a new module gets its
floor on purpose. Also: no library module outgrows :data:`MAX_LINES`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("dml", "stages", "pipelines")

# Lowest first. A group is a package (all its modules) or a module; "dml" is the (empty) package
# root module itself only.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("dml", "dml.errors", "dml.paths", "dml.schema", "dml.registry", "dml.io", "dml.tuples", "dml.device")),
    ("families", ("dml.data", "dml.losses", "dml.miners", "dml.samplers", "dml.models", "dml.metrics", "dml.retrieval_config",
                  "dml.training_config")),
    ("helpers over the families", ("dml.catalogue", "dml.plotting")),
    ("params schema", ("dml.config",)),
    ("components", ("dml.embeddings", "dml.indexing", "dml.inference", "dml.model_file", "dml.tracking",
                    "dml.studies")),
    ("workflows", ("dml.training", "dml.evaluation", "dml.gallery", "dml.serving")),
    ("applications", ("dml.query",)),
    ("entry points", ("stages", "pipelines")),
)
FLOOR_OF = {group: level for level, (_, groups) in enumerate(FLOORS) for group in groups}
# The ground is one shared layer (io raises DatasetError, device ConfigError); on every other floor
# the groups are independent of each other.
SHARED_FLOORS = {FLOOR_OF["dml.errors"]}
EXACT_ONLY = {"dml"}  # the package root: its modules belong to their own groups

MAX_LINES = 300
# Generated tables may be longer; no module of the library is today.
LONG_MODULES_ALLOWED: set[str] = set()


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # file:line of the import

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def _modules() -> dict[str, Path]:
    """Every project module by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _project_module(name: str) -> str | None:
    """The project module ``name`` names (its longest importable prefix), or None if external."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import statement in the file, wherever it sits."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                # `from pkg import sub` imports the submodule; `from mod import name` the module.
                yield (f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base), node.lineno


def _edges() -> list[Edge]:
    edges = set()
    for module, path in MODULES.items():
        for name, line in _imported(module, path):
            target = _project_module(name)
            if target is not None and target != module:
                edges.add(Edge(module, target, f"{path.relative_to(ROOT)}:{line}"))
    return sorted(edges, key=lambda e: (e.where.rsplit(":", 1)[0], int(e.where.rsplit(":", 1)[1]), e.target))


EDGES = _edges()


def group_of(module: str) -> str | None:
    """The FLOORS group a module belongs to (the longest matching one), or None."""
    matches = [g for g in FLOOR_OF if module == g or (g not in EXACT_ONLY and module.startswith(g + "."))]
    return max(matches, key=len, default=None)


def _cycles(nodes: set[str], edges: list[tuple[str, str, Edge]]) -> list[list[Edge]]:
    """One concrete cycle per strongly connected component of more than one node."""
    succ: dict[str, list[tuple[str, Edge]]] = {n: [] for n in nodes}
    for a, b, edge in edges:
        succ[a].append((b, edge))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in succ[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            components.append(component)

    for node in sorted(nodes):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        if len(component) < 2:
            continue
        start = min(component)
        paths: dict[str, list[Edge]] = {start: []}
        todo = [start]
        cycle = None
        while todo and cycle is None:  # breadth-first back to start, inside the component
            v = todo.pop(0)
            for w, edge in succ[v]:
                if w == start:
                    cycle = paths[v] + [edge]
                    break
                if w in component and w not in paths:
                    paths[w] = paths[v] + [edge]
                    todo.append(w)
        cycles.append(cycle)
    return cycles


def _describe(cycles: list[list[Edge]]) -> str:
    return "\n".join("cycle:\n  " + "\n  ".join(str(edge) for edge in cycle) for cycle in cycles)


def test_every_module_has_a_floor():
    unplaced = sorted(m for m in MODULES if group_of(m) is None)
    assert not unplaced, f"modules in no group of FLOORS (place them on a floor): {unplaced}"
    stale = sorted(g for g in FLOOR_OF if not any(group_of(m) == g for m in MODULES))
    assert not stale, f"FLOORS names groups that no module belongs to: {stale}"


def test_no_module_import_cycles():
    cycles = _cycles(set(MODULES), [(e.source, e.target, e) for e in EDGES])
    assert not cycles, _describe(cycles)


def test_no_package_import_cycles():
    groups = {group_of(m) or m for m in MODULES}
    edges = [(group_of(e.source) or e.source, group_of(e.target) or e.target, e) for e in EDGES]
    cycles = _cycles(groups, [(a, b, e) for a, b, e in edges if a != b])
    assert not cycles, _describe(cycles)


def test_no_upward_or_sideways_imports():
    """Across groups, only downward (within the ground, anywhere): a family imports the ground
    floor and itself, nothing else."""
    bad = []
    for edge in EDGES:
        source, target = group_of(edge.source), group_of(edge.target)
        if source is None or target is None or source == target:
            continue  # unplaced modules fail test_every_module_has_a_floor
        if FLOOR_OF[target] > FLOOR_OF[source] or (FLOOR_OF[target] == FLOOR_OF[source] and FLOOR_OF[source] not in SHARED_FLOORS):
            bad.append(f"{edge} (floor {FLOORS[FLOOR_OF[source]][0]!r} -> floor {FLOORS[FLOOR_OF[target]][0]!r})")
    assert not bad, "imports that do not go down a floor:\n" + "\n".join(bad)


def test_library_modules_stay_short():
    long = []
    for path in sorted((ROOT / "dml").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and name not in LONG_MODULES_ALLOWED:
            long.append(f"{name}: {lines} lines")
    assert not long, f"library modules longer than {MAX_LINES} lines (split them by concern):\n" + "\n".join(long)


def test_the_graph_sees_every_kind_of_import():
    """The parser itself: imports inside functions and under TYPE_CHECKING are edges too."""
    assert any(e.source == "dml.query" and e.target == "dml.model_file" for e in EDGES)  # inside a function
    assert any(e.source == "dml.indexing" and e.target == "dml.retrieval_config" for e in EDGES)  # TYPE_CHECKING
    assert any(e.source == "dml.models" and e.target == "dml.models.registry" for e in EDGES)  # package __init__
