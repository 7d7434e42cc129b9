"""The package's house: data flows one way between packages by job, each package says what it may import, and the
public names load as the objects they name.

Imports are read from the source (every ``import`` statement, those inside functions included), so an arrow a
lazy import hides still counts.
"""

import ast
import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest

import onevision_encoder

PACKAGE = Path(onevision_encoder.__file__).parent
NAME = "onevision_encoder"
# Each package may import only those before it.
LAYERS = ["common", "video", "codec", "model", "lmm", "jobs", "evaluation", "training", "viz", "cli"]
# The root's modules: the public face and the entry points.
ROOT_MODULES = {"__init__": {"common"}, "__main__": {"cli"}, "train": {"cli"}, "probe": {"cli"}}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _import_base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` statement of ``module`` imports from."""
    if not node.level:
        return node.module or ""
    parts = (module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]).split(".")
    return ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))


def _imports(module: str) -> set[str]:
    """The modules of this package that ``module`` imports."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _import_base(module, node)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
            targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith(NAME) and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def test_the_layout_has_the_packages_it_names():
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()) == sorted(LAYERS)
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose == set(ROOT_MODULES), "only the public face and the entry points sit at the root"


def test_no_package_imports_one_after_it():
    def allowed(module: str) -> set[str]:
        if _package(module):
            return set(LAYERS[: LAYERS.index(_package(module))])
        return ROOT_MODULES["__init__" if module == NAME else module.rpartition(".")[2]]

    upward = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _package(target) != _package(module) and _package(target) not in allowed(module)
    ]
    assert not upward


def test_no_module_is_part_of_an_import_circle():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not circles


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_says_its_job_and_every_package_it_imports(package):
    docstring = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    assert docstring.strip(), f"{package}/__init__.py has no docstring"
    imported = {
        _package(target)
        for module, targets in GRAPH.items()
        if _package(module) == package
        for target in targets
        if _package(target) not in ("", package)
    }
    if package == "cli":
        assert "every other package" in docstring
        return
    sentence = docstring.split("May import", 1)[1].split(".", 1)[0] if "May import" in docstring else ""
    named = set(re.findall(r"``(\w+)``", sentence))
    assert imported <= named, f"{package} imports {sorted(imported - named)} without saying so"
    assert named <= set(LAYERS[: LAYERS.index(package)]), f"{package} names a package after it"


def test_every_public_name_is_the_object_it_names_once_every_module_is_loaded():
    # A lazily exported name that is also a submodule's name would turn into the module once that module loads.
    for info in pkgutil.walk_packages(onevision_encoder.__path__, f"{NAME}."):
        if info.name.rpartition(".")[2] in ("__main__", "train", "probe", "lmms_eval_plugin"):
            continue  # entry points run when imported; the plugin needs lmms-eval
        importlib.import_module(info.name)
    packages = [onevision_encoder] + [importlib.import_module(f"{NAME}.{layer}") for layer in LAYERS]
    for package in packages:
        for name in getattr(package, "__all__", []):
            assert not isinstance(getattr(package, name), types.ModuleType), f"{package.__name__}.{name}"


def test_every_name_imported_from_this_package_exists():
    # Imports inside functions (the heavy ones are deferred) run only on the paths that need them: a name a move
    # left behind would fail there, in front of a user, and nowhere else.
    missing = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (base := _import_base(module, node)).startswith(NAME):
                continue
            for alias in node.names:
                if f"{base}.{alias.name}" not in MODULES and not hasattr(importlib.import_module(base), alias.name):
                    missing.append(f"{module}: from {base} import {alias.name}")
    assert not missing
