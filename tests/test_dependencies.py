"""Every third-party package the shipped code imports is declared in pyproject.toml.

A package that only arrives as a dependency of another one (httpx2 through
google-genai 3.x) breaks the day that one changes; declare what you import.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("toolcall", "registry_service", "llm_service", "plugin_stub", "gateway", "examples")
FIRST_PARTY = {*SHIPPED, "toolcall_examples"}


def imported_modules() -> dict[str, str]:
    """Imported top-level module (two levels in the ``google`` namespace, the whole
    name in ``opentelemetry``'s) -> first importer."""
    found: dict[str, str] = {}
    for package in SHIPPED:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                    if node.module in ("google", "opentelemetry"):  # ``from google import genai``
                        names = [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    parts = name.split(".")
                    if parts[0] in sys.stdlib_module_names or parts[0] in FIRST_PARTY:
                        continue
                    if parts[0] == "opentelemetry":  # namespaces all the way down: whole name
                        module = name
                    else:
                        module = ".".join(parts[:2]) if parts[0] == "google" else parts[0]
                    found.setdefault(module, str(path.relative_to(REPO)))
    return found


def owning_distribution(module: str, owners: dict[Path, str]) -> str:
    """The installed distribution whose files hold ``module`` ('?' when none does)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} is not installed"
    if spec.origin and spec.origin != "namespace":
        location = Path(spec.origin)
    else:
        location = Path(next(iter(spec.submodule_search_locations or [])), "__init__.py")
    return owners.get(location) or owners.get(location.parent, "?")


def file_owners() -> dict[Path, str]:
    """Each installed file, and each directory of a package, -> its distribution."""
    owners: dict[Path, str] = {}
    for dist in distributions():
        for file in dist.files or ():
            if file.suffix == ".py":
                path = Path(dist.locate_file(file))
                owners[path] = canonical(dist.metadata["Name"])
                owners.setdefault(path.parent, owners[path])
    return owners


def canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonical(Requirement(r).name) for r in project["dependencies"]}


def test_every_imported_third_party_package_is_a_declared_dependency() -> None:
    declared, owners = declared_distributions(), file_owners()
    missing = [
        f"{module} (imported by {where}, installed by {owner})"
        for module, where in imported_modules().items()
        if (owner := owning_distribution(module, owners)) not in declared
    ]
    assert not missing, "imported but not declared in pyproject.toml: " + ", ".join(missing)
