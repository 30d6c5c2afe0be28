"""The product's layers (which package may import which: ``ALLOWED``), and tooling apart from
the product: no module of packing/ or deployments/ imports tools/.

tools/ (load, soak, ceiling and floor apps, overload, scaling, the multi-node drills, the KubeRay
manifest generator) may import the product; the product never imports tools, and the wheel
does not ship it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib
import yaml

from factories import REPO

PRODUCT = ("packing", "deployments")
SOURCES = sorted(p for pkg in PRODUCT for p in (REPO / pkg).rglob("*.py"))


def imported_modules(source: str, package: str = "") -> list[str]:
    """Absolute module names a Python source imports, anywhere in it. Relative imports are
    resolved against ``package`` (the dotted package the source lives in; ``from ..x import``
    in ``packing.jobs`` is ``packing.x``); without one they are left out."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module:
                    out.append(node.module)
            elif package:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                out.append(".".join(base + ([node.module] if node.module else [])))
    return out


def is_tools(module: str) -> bool:
    return module == "tools" or module.startswith("tools.")


def test_the_scan_sees_the_product_and_finds_tools_imports():
    assert len(SOURCES) > 40 and REPO / "packing" / "cli" / "__init__.py" in SOURCES
    found = [
        m
        for m in imported_modules(
            "import tools\nfrom tools.soak import soak\n"
            "from packing.runtime import drive\nimport toolsx\n"
            "def f():\n    from tools import cli\n"
        )
        if is_tools(m)
    ]
    assert found == ["tools", "tools.soak", "tools"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_product_module_imports_tools(path):
    bad = [m for m in imported_modules(path.read_text()) if is_tools(m)]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: the product must not use tools/"


def test_configs_serve_product_apps_only():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        for app in yaml.safe_load(path.read_text()).get("applications", []):
            assert not is_tools(app["import_path"].split(":")[0]), (path.name, app["import_path"])


def test_the_wheel_ships_the_product_only():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["packing*", "deployments*"]
    assert (REPO / "tools" / "__init__.py").read_text() == ""


# ------------------------------------------------------------------ layers of the product

#: What each package of the product may import (besides itself): the serving core
#: (``packing.runtime``) sits on the pure policy and the model folder; the in-process runners,
#: the benchmark harness, the jobs and the CLI sit on it; the Serve deployments use the
#: serving core and the task pipelines, never the in-process runners.
ALLOWED = {
    "policy": set(),
    "model": {"policy"},
    "runtime": {"policy", "model"},
    "qa": {"policy", "model", "runtime"},
    "tasks": {"policy", "model", "runtime", "qa"},
    "runners": {"policy", "model", "runtime", "qa", "tasks"},
    "bench": {"policy", "model", "runtime", "qa", "tasks", "runners"},
    "train": {"policy", "model", "runtime", "qa", "tasks"},
    "jobs": {"policy", "model", "runtime", "qa", "tasks", "runners"},
    "cli": {"policy", "model", "runtime", "qa", "tasks", "runners", "bench", "jobs", "train"},
    "assets": set(),
    "deployments": {"policy", "model", "runtime", "qa", "tasks"},
}
#: The one arrow up, by name: ``prepare`` checks the folder it wrote by running it (its
#: runners, imported inside the function), and names the result types in its docstrings.
EXCEPTIONS = {("packing/model/prepare.py", "runtime"), ("packing/model/prepare.py", "runners")}


def package_of(path: Path) -> str:
    rel = path.relative_to(REPO).parts
    return "deployments" if rel[0] == "deployments" else (rel[1] if len(rel) > 2 else "")


def imported_packages(path: Path) -> set[str]:
    """The product packages (``packing.X`` -> X, ``deployments``) a module imports."""
    out = set()
    rel = path.relative_to(REPO).with_suffix("").parts
    package = ".".join(rel if path.name == "__init__.py" else rel[:-1]).removesuffix(".__init__")
    for module in imported_modules(path.read_text(), package):
        parts = module.split(".")
        if parts[0] == "packing" and len(parts) > 1:
            out.add(parts[1])
        elif parts[0] == "deployments":
            out.add("deployments")
    return out


def test_every_package_has_its_layer():
    found = {package_of(p) for p in SOURCES} - {""}
    assert found == set(ALLOWED), found ^ set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_follow_the_layers(path):
    pkg = package_of(path)
    if not pkg:
        return
    rel = str(path.relative_to(REPO))
    bad = sorted(
        d
        for d in imported_packages(path) - {pkg}
        if d not in ALLOWED[pkg] and (rel, d) not in EXCEPTIONS
    )
    assert not bad, f"{rel} ({pkg}) imports {bad}; {pkg} may import {sorted(ALLOWED[pkg])}"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    fake = REPO / "packing" / "runtime" / "x.py"
    assert package_of(fake) == "runtime"
    relative = imported_modules(
        "from ..runners.drive import drive\nfrom .sim import x\n", "packing.runtime"
    )
    assert relative == ["packing.runners.drive", "packing.runtime.sim"]
    src = "from packing.runners import PackRunner\nimport packing.policy.plans\n"
    pkgs = {m.split(".")[1] for m in imported_modules(src)}
    assert pkgs - ALLOWED["runtime"] == {"runners"}


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def module_graph() -> dict[str, set[str]]:
    """Module -> the product modules its top-level statements import (imports inside
    functions run later, and are how the backend registry stays out of a circle)."""
    names = {_module_name(p): p for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[: len(base) - max(node.level - 1, 0)] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t in names and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (import circles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = module_graph()
    assert len(graph) > 40 and "packing.runners.pack_runner" in graph["packing.runners"]
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
