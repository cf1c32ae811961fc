"""The Go example plugin (examples/go_plugin), built with ``go build``, through the real stack.

The checks themselves are shared by every SDK-less example: tests/support/polyglot.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.plugins import REPO_ROOT
from tests.support.polyglot import (
    BUILD_DIR,
    build,
    check_killed,
    check_registers_again,
    check_served,
    toolchain_missing,
)

GO = shutil.which("go")
GO_DIR = REPO_ROOT / "examples" / "go_plugin"
NAME = "go_plugin"

# The first test builds the plugin: on a machine with cold caches that can take
# minutes (`make test` builds first: `make example-plugins`), not the usual 120 s.
pytestmark = [
    pytest.mark.skipif(toolchain_missing(GO), reason="the Go toolchain is needed"),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def plugin() -> list[str]:
    """``go build`` of the example (Go's build cache makes a second build take about a second)."""
    assert GO is not None, "the Go toolchain is needed (go on PATH)"
    binary = BUILD_DIR / NAME
    build([GO, "build", "-mod=readonly", "-o", str(binary), "."], GO_DIR, "go build")
    return [str(binary)]


@pytest.mark.anyio
async def test_go_plugin_serves_chats_async_results_errors_and_deadlines_and_clears_on_sigterm(
    plugin: list[str], tmp_path: Path
) -> None:
    await check_served(plugin, NAME, tmp_path)


@pytest.mark.anyio
async def test_go_plugin_sends_the_token_from_its_file_and_its_tools_expire_after_sigkill(
    plugin: list[str], tmp_path: Path
) -> None:
    await check_killed(plugin, NAME, tmp_path)


@pytest.mark.anyio
async def test_go_plugin_registers_again_after_a_clear_a_one_role_removal_and_a_lost_lease(
    plugin: list[str], tmp_path: Path
) -> None:
    await check_registers_again(plugin, NAME, tmp_path)


def test_go_plugin_unit_tests_pass_under_go_test(plugin: list[str]) -> None:
    # lease_test.go: the KeepAlive comparison of a registry without tools_per_role.
    assert GO is not None
    build([GO, "test", "-mod=readonly", "./..."], GO_DIR, "go test")
