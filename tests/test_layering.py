"""The package's plan: layers, one direction, no cycle; the heavy imports each layer avoids.

Layers, lowest first (a module imports its own folder or lower layers only):
0 ``errors``, ``grid`` (and the private ``_version``, ``_compat``); 1 ``index``;
2 ``store``; 3 ``stats``; 4 ``ingest``; 5 ``data``; 6 ``inference``;
7 ``cli``, ``show``. ``testing`` may import anything and nothing in the
library imports it. Every module's AST is walked at every depth: ``import``,
``from ... import`` and literal ``importlib.import_module``/``__import__`` of
``lazypatch.*`` all count, deferred ones included. Heavy imports are checked in
fresh interpreters, where nothing is imported yet.
"""

import ast
import os
import subprocess
import sys

import pytest

import lazypatch

ROOT = os.path.dirname(lazypatch.__file__)
# within a layer, the order of this table: grid uses errors, the command line draws with show
LAYERS = {"_version": 0, "_compat": 0, "errors": 0, "grid": 0.5, "index": 1, "store": 2, "stats": 3,
          "ingest": 4, "data": 5, "inference": 6, "show": 7, "cli": 7.5, "__main__": 7.9}


def _modules() -> dict:
    """{module name: file} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                relative = os.path.relpath(os.path.join(folder, name), os.path.dirname(ROOT))[:-3]
                parts = relative.split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = os.path.join(folder, name)
    return found


MODULES = _modules()


def _resolve(module: str, is_package: bool, level: int, target: str) -> str:
    if level == 0:
        return target
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(module: str) -> set:
    """Every lazypatch module that ``module`` imports, at any depth of its code."""
    path = MODULES[module]
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = set()

    def add(name):
        if name == "lazypatch" or name.startswith("lazypatch."):
            # ``from pkg import name``: the submodule when it is one, else the package
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module or "")
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                add(str(node.args[0].value))
    found.discard(module)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lazypatch"


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    rooms = {_room(m) for m in MODULES} - {"lazypatch", "testing"}
    assert rooms <= set(LAYERS), sorted(rooms - set(LAYERS))
    assert {"index", "store", "stats", "ingest", "data", "inference", "cli"} <= rooms


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _room(m) not in ("lazypatch", "testing")))
def test_imports_run_down_the_layers(module):
    room = _room(module)
    against = sorted(t for t in GRAPH[module]
                     if _room(t) != room and (_room(t) in ("lazypatch", "testing")
                                              or LAYERS.get(_room(t), 99) >= LAYERS[room]))
    assert against == [], f"{module} (layer {LAYERS[room]}) imports {against}"


def test_the_front_imports_only_the_lowest_layer():
    # lazypatch/__init__.py resolves its public names lazily (non-literal import_module)
    assert GRAPH["lazypatch"] <= {"lazypatch._compat", "lazypatch._version"}


def test_nothing_in_the_library_imports_testing():
    assert [m for m in MODULES if "lazypatch.testing" in GRAPH[m] and _room(m) != "testing"] == []


def test_no_import_cycle():
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_graph_sees_deferred_imports():
    # the walker is not fooled by imports inside functions: the command modules defer theirs
    assert "lazypatch.cli._bench" in GRAPH["lazypatch.cli.bench"]


def _fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.system
def test_index_imports_neither_torch_nor_h5py():
    code = ("import sys, lazypatch.index, lazypatch.testing; "
            "print(sorted(m for m in ('torch', 'h5py') if m in sys.modules))")
    assert _fresh(code) == "[]"


@pytest.mark.system
@pytest.mark.parametrize("package", ["lazypatch.store", "lazypatch.stats", "lazypatch.ingest"])
def test_store_stats_and_ingest_do_not_import_torch(package):
    assert _fresh(f"import sys, {package}; print('torch' in sys.modules)") == "False"


@pytest.mark.system
def test_writing_and_reading_a_store_with_every_statistic_does_not_import_torch(tmp_path):
    # torch costs 130-270 MiB of private memory at import: a build must not pay it
    code = (
        "import sys, numpy as np, lazypatch.store as s; "
        f"store = s.write_store({str(tmp_path / 'a.h5')!r}, [np.zeros((70, 90, 3), np.uint8)], "
        "masks=[np.ones((70, 90), np.uint8)], label_stats=True, channel_stats=True, progress=False); "
        "store.read_region(0, (0, 0), (8, 8)); print('torch' in sys.modules)"
    )
    assert _fresh(code) == "False"


@pytest.mark.system
def test_building_from_files_does_not_import_torch(tmp_path):
    import numpy as np

    np.save(tmp_path / "a.npy", np.zeros((40, 30), np.uint8))
    code = (f"import sys, lazypatch; lazypatch.build({str(tmp_path)!r}, {str(tmp_path / 'o.h5')!r}, "
            "stats=True).close(); print('torch' in sys.modules)")
    assert _fresh(code) == "False"
