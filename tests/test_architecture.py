"""The package's layout holds: imports run one way through the layers, no circles, no oversized modules.

Layers, highest first (a module may import its own package and any lower layer, never a higher one nor a sibling
of its own layer)::

    cli
    serve
    training | report
    memory | taps
    methods | vision
    core | data | baselines
    pruning
    io | fields
    errors | lazy

Every ``import`` counts, also one deferred inside a function; only imports under ``if TYPE_CHECKING:`` (never run)
are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import laddertune

ROOT = Path(laddertune.__file__).parent
PACKAGE = "laddertune"
LAYERS = {
    "errors": 0,
    "lazy": 0,  # the packages' lazy exports: imports nothing of laddertune
    "io": 1,
    "fields": 1,  # how configuration fields are declared and checked
    "pruning": 2,
    "core": 3,
    "data": 3,
    "baselines": 3,
    "methods": 4,  # the training methods as objects, over core and baselines
    "vision": 4,
    "memory": 5,
    "taps": 5,
    "training": 6,
    "report": 6,  # reads only the JSON the training layer wrote: io and errors
    "serve": 7,  # the HTTP server: checkpoints (training's task.json) on one backbone
    "cli": 8,
}
TOP = 9  # laddertune/__init__.py and __main__.py: the public face, above everything
# A smoke alarm, not a design rule: files are split by purpose; one past this has probably grown two.
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> set[str]:
    """The laddertune modules that ``module`` imports (resolved, relative imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for child in node.body for n in ast.walk(child)}  # fmt: skip
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known, found = set(_modules()), set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            submodules = {f"{target}.{a.name}" for a in node.names} & known
            # `from . import train` imports the submodule; `from .config import X` imports the module itself
            found |= submodules if len(submodules) == len(node.names) else {target} | submodules

    return {name for name in found if name in known and name != module}


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP, ""
    return LAYERS[parts[1]], parts[1]


GRAPH = {m: _imports(m, p) for m, p in _modules().items()}


def test_every_subpackage_has_a_layer_and_a_docstring():
    for module, path in _modules().items():
        parts = module.split(".")
        if len(parts) > 1 and parts[1] != "__main__":
            assert parts[1] in LAYERS, f"{module}: add its package to LAYERS in this test"
        if path.name == "__init__.py":
            assert ast.get_docstring(ast.parse(path.read_text())), (
                f"{path} needs a docstring saying what it owns"
            )


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs against the layer order (or across two packages of one layer)."""
    found = []
    for module in sorted(graph):
        level, package = _layer(module)
        for target in sorted(graph[module]):
            target_level, target_package = _layer(target)
            if target_package != package and target_level >= level:
                found.append(f"{module} (layer {package or 'top'}) imports {target} (layer {target_package})")
    return found


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_imports_run_down_the_layers():
    assert upward_imports(GRAPH) == []


def test_no_import_circles():
    cycle = find_circle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_modules_stay_small(module):
    lines = len(_modules()[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it by purpose"


def test_the_checks_catch_what_they_guard_against(tmp_path):
    """An upward import, a sibling-layer import and a circle are caught; a TYPE_CHECKING import is not counted,
    a deferred one is."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..training import train\n"
        "if TYPE_CHECKING:\n    from .model import LadderModel\n"
        "def f():\n    from .config import LadderConfig\n"
    )
    targets = _imports("laddertune.core.bad", bad)
    assert targets == {"laddertune.training", "laddertune.core.config"}
    assert upward_imports({"laddertune.core.bad": targets}) == [
        "laddertune.core.bad (layer core) imports laddertune.training (layer training)"
    ]
    assert upward_imports({"laddertune.core.model": {"laddertune.data.tasks"}})  # same layer, other package
    assert (
        upward_imports({"laddertune.training.loop": {"laddertune.core.model", "laddertune.io.files"}}) == []
    )
    circle = {"laddertune.core.a": {"laddertune.core.b"}, "laddertune.core.b": {"laddertune.core.a"}}
    assert find_circle(circle) == ["laddertune.core.a", "laddertune.core.b", "laddertune.core.a"]
