"""The package's layout is its architecture: folders in layers, imports only downwards, no cycles.

Every module's imports are read from its source (top-level and inside functions alike), so the check does not
depend on what happens to be imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dfpir_cli"

# Bottom to top. A module may import from its own folder and from any lower layer; folders that share a layer
# (model, base) do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors"),  # the version; the DfpirError hierarchy
    ("model", "base"),  # the network (pure PyTorch); devices, precision, image files, paths
    ("weights",),  # checkpoints, prompts, the Hub, the authors' files
    ("data",),  # test and training sets, the data folder, degradation synthesis, the shipped photos
    ("detect",),  # what is wrong with a photo
    ("restore",),  # the restore core: plan, then run
    ("evaluate",),  # scoring restorations over test sets
    ("train",),  # training the network and the detector
    ("api",),  # the Python API: DFPIRRestorer and restore(), a face of the restore core beside the commands
    ("app",),  # the web app (dfpir app): a page over the Python API
    ("commands",),  # thin Typer commands
    ("cli",),  # the Typer app: dfpir_cli.cli:app
    ("__main__",),  # python -m dfpir_cli
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# The package's front door re-exports the API (``from dfpir_cli import DFPIRRestorer``): the one upward import,
# allowed only lazily (PEP 562 ``__getattr__``, or for type checkers), so ``import dfpir_cli.model`` loads no more.
FACADE = {"dfpir_cli": {"dfpir_cli.api", "dfpir_cli.errors"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The dfpir_cli modules ``name`` imports (relative and absolute; a package imported as a name counts as
    the package's ``__init__``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dfpir_cli")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("dfpir_cli"):
                target = node.module
            else:
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found |= submodules or {target}
    return {target for target in found if target != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def layer_of(module: str) -> str:
    """The folder (or top-level module) a module belongs to: the part after ``dfpir_cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_folder_and_top_level_module_has_a_layer():
    unplaced = {layer_of(name) for name in modules()} - set(RANK)
    assert not unplaced, f"put these in LAYERS (and say why in docs/code.md's layout section): {sorted(unplaced)}"


def test_every_folder_says_what_it_is_for():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and "\n" not in docstring.strip(), f"{init.parent.name}/__init__.py needs a one-line docstring"


def test_imports_run_only_downwards():
    wrong = []
    for name, targets in graph().items():
        here = layer_of(name)
        for target in targets - FACADE.get(name, set()):
            there = layer_of(target)
            if there != here and RANK[there] >= RANK[here]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports from a lower layer to a higher one (or across one layer):\n" + "\n".join(sorted(wrong))


def test_the_front_door_imports_the_api_only_when_asked():
    """``dfpir_cli/__init__.py`` imports nothing of the package at module level: its re-exports are lazy."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    eager = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
             and (node.level or (node.module or "").startswith("dfpir_cli"))]
    assert not eager, [ast.unparse(node) for node in eager]


def test_the_model_imports_only_itself_and_the_errors():
    for name, targets in graph().items():
        if layer_of(name) == "model":
            assert {layer_of(target) for target in targets} <= {"model", "errors"}, (name, targets)


@pytest.mark.parametrize("core", ["restore", "detect"])
def test_the_restore_core_needs_neither_evaluation_nor_training(core):
    for name, targets in graph().items():
        if layer_of(name) == core:
            assert not {layer_of(target) for target in targets} & {"evaluate", "train", "commands"}, (name, targets)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in edges and not state.get(target):
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node)
