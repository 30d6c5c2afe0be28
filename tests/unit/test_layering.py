"""Tooling apart from the product: no module of packing/ or deployments/ imports tools/.

tools/ (load, soak, ceiling and floor apps, overload, scaling, the multi-node drills, the KubeRay
manifest generator) may import the product; the product never imports tools, and the wheel
does not ship it.
"""

from __future__ import annotations

import ast

import pytest
import tomllib
import yaml

from factories import REPO

PRODUCT = ("packing", "deployments")
SOURCES = sorted(p for pkg in PRODUCT for p in (REPO / pkg).rglob("*.py"))


def imported_modules(source: str) -> list[str]:
    """Absolute module names a Python source imports (relative imports stay in their package)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
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
