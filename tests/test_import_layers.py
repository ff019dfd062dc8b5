"""Imports point downward: a package of medseg may import only packages of a lower layer, and no two modules
import each other through any chain (top-level or lazy imports inside functions alike).

The layer order lives here, in one place. A test on synthetic package trees shows that the check fails on each
kind of cycle that medseg once had (inference <-> training, planning <-> training, data <-> preprocess, and a
module cycle inside one package, losses/compound <-> losses/registry)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

# Lowest first. A package (or top-level module) may import only those of strictly lower layers.
LAYERS: list[set[str]] = [
    {"errors", "settings", "workers"},
    {"progress", "atomic"},
    {"parallel", "weights_file", "output_paths", "distributed", "devices"},
    {"io", "config"},
    {"metrics", "nets", "losses", "transforms", "compute"},
    {"data", "synth", "visualize"},
    {"planning"},
    {"preprocess"},
    {"inference"},
    {"training", "evaluation", "importers", "export", "classical"},
    {"trust"},
    {"interactive", "adapt", "active"},
    {"incontext", "universal"},
    {"benchmark"},
    {"report"},
    {"serve"},
    {"demo"},
    {"cli"},
    {"__main__", "__init__"},
]

MEDSEG = Path(__file__).resolve().parents[1] / "medseg"


def module_imports(root: Path, package: str = "medseg") -> dict[str, set[str]]:
    """``{module: {imported medseg modules}}`` for every ``.py`` under ``root`` (dotted names, imports inside
    functions included; ``from medseg.x import y`` counts as importing ``medseg.x`` and, if it is a module,
    ``medseg.x.y``)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package, *parts])] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer_of(unit: str) -> int:
    for rank, units in enumerate(LAYERS):
        if unit in units:
            return rank
    raise AssertionError(f"medseg/{unit} is in no layer: add it to LAYERS in {Path(__file__).name}")


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a package from one of the same or a higher layer, as ``'a.b -> c.d'``."""
    bad = []
    for module, targets in sorted(graph.items()):
        source = unit_of(module)
        for target in sorted(targets):
            destination = unit_of(target)
            if destination in (source, "__init__") and destination == source:
                continue
            if destination == "__init__" or layer_of(destination) >= layer_of(source):
                bad.append(f"{module} -> {target}")
    return bad


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph.get(node, ()):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def package_graph_without_init_reexports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its own modules is not a cycle with them."""
    return {m: {t for t in ts if not (t == m.rsplit(".", 1)[0] or m == t.rsplit(".", 1)[0])}
            for m, ts in graph.items()}


def test_medseg_imports_point_downward():
    assert upward_imports(module_imports(MEDSEG)) == []


def test_medseg_has_no_import_cycle():
    assert module_cycles(package_graph_without_init_reexports(module_imports(MEDSEG))) == []


def test_every_package_is_in_a_layer():
    for path in MEDSEG.iterdir():
        if path.name.startswith(("_", ".")) and path.name not in ("__main__.py", "__init__.py"):
            continue
        if path.is_dir() and (path / "__init__.py").is_file() or path.suffix == ".py":
            layer_of(path.stem if path.suffix == ".py" else path.name)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("files, expected", [
    ({"training/__init__.py": "", "training/service.py": "def f():\n    from medseg.inference import predictor\n",
      "inference/__init__.py": "", "inference/predictor.py": "from medseg.training.model_folder import x\n",
      "training/model_folder.py": "x = 1\n"},
     ["medseg.inference.predictor -> medseg.training.model_folder"]),
    ({"planning/__init__.py": "", "planning/budget.py": "def g():\n    from medseg.training.trainer import compute\n",
      "training/__init__.py": "", "training/trainer.py": "import medseg.planning.budget\ncompute = 1\n"},
     ["medseg.planning.budget -> medseg.training.trainer"]),
    ({"data/__init__.py": "", "data/sampler.py": "from medseg.preprocess.cache import read_case\n",
      "preprocess/__init__.py": "", "preprocess/cache.py": "read_case = 1\n",
      "preprocess/pipeline.py": "from medseg.data import sampler\n"},
     ["medseg.data.sampler -> medseg.preprocess.cache"]),
])
def test_the_check_fails_on_the_cross_package_cycles_medseg_had(tmp_path, files, expected):
    graph = module_imports(write_tree(tmp_path, files))
    assert upward_imports(graph) == expected  # a cycle between packages always has an import that points up


def test_the_check_fails_on_a_module_cycle_inside_a_package(tmp_path):
    graph = module_imports(write_tree(tmp_path, {
        "losses/__init__.py": "",
        "losses/compound.py": "def weighted_sum():\n    from medseg.losses.registry import loss_class\n",
        "losses/registry.py": "from medseg.losses import compound\nloss_class = 1\n",
    }))
    assert upward_imports(graph) == []  # same package: allowed by the layers ...
    assert module_cycles(package_graph_without_init_reexports(graph)) == [
        ["medseg.losses.compound", "medseg.losses.registry"]]  # ... but a cycle


def test_the_check_passes_a_tree_that_points_downward(tmp_path):
    graph = module_imports(write_tree(tmp_path, {
        "io/__init__.py": "from medseg.io.image import Image\n", "io/image.py": "Image = 1\n",
        "data/__init__.py": "", "data/layout.py": "from medseg.io import Image\nimport medseg.errors\n",
        "errors.py": "",
    }))
    assert upward_imports(graph) == []
    assert module_cycles(package_graph_without_init_reexports(graph)) == []
