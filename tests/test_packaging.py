"""The built wheel works without the checkout: ``toolcall up`` finds its example plugins.

A regular (non-editable) install has no ``examples/`` directory beside it, so
the wheel must carry the CLI and the example plugins it starts, and the web
console's page, styles and script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    source = tmp_path_factory.mktemp("source") / "toolcall"
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "node_modules", "__pycache__")
    shutil.copytree(REPO, source, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("toolcall-*.whl")
    return built


def test_the_wheel_carries_the_cli_and_the_example_plugins(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "toolcall/cli/__main__.py",
        "toolcall/cli/stack.py",
        "toolcall_examples/weather_plugin.py",
        "toolcall_examples/network_plugin.py",
        "gateway/console.py",
        "gateway/console_static/index.html",
        "gateway/console_static/console.css",
        "gateway/console_static/console.js",
    ):
        assert module in names


def test_the_stack_starts_example_plugins_from_an_installed_wheel(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = (
        "import importlib, toolcall.cli.stack as s\n"
        "for name in s.EXAMPLE_PLUGINS:\n"
        "    print(importlib.import_module(name).__file__)\n"
    )
    # Run outside the checkout, with the installed copy first on the path.
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert len(out) == 2
    assert all(path.startswith(str(target)) for path in out), out
