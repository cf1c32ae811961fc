"""The TypeScript example plugin (examples/ts_plugin), built with npm ci + tsc, through the stack.

The checks themselves are shared by every SDK-less example: tests/support/polyglot.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.plugins import REPO_ROOT
from tests.support.polyglot import (
    build,
    check_killed,
    check_registers_again,
    check_served,
    toolchain_missing,
)

NODE, NPM = shutil.which("node"), shutil.which("npm")
TS_DIR = REPO_ROOT / "examples" / "ts_plugin"
NAME = "ts_plugin"

# The first test builds the plugin: on a machine with cold caches that can take
# minutes (`make test` builds first: `make example-plugins`), not the usual 120 s.
pytestmark = [
    pytest.mark.skipif(toolchain_missing(NODE, NPM), reason="node and npm are needed"),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def plugin() -> list[str]:
    """``npm ci`` when the lock file changed (as ``make plugin-deps`` does), then ``tsc``."""
    assert NODE is not None and NPM is not None, "node and npm are needed (on PATH)"
    installed = TS_DIR / "node_modules" / ".package-lock.json"
    lock = TS_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        build([NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"], TS_DIR, "npm ci")
    build([NPM, "run", "--silent", "build"], TS_DIR, "tsc")
    return [NODE, str(TS_DIR / "dist" / "plugin.js")]


@pytest.mark.anyio
async def test_ts_plugin_serves_chats_async_results_errors_and_deadlines_and_clears_on_sigterm(
    plugin: list[str], tmp_path: Path
) -> None:
    await check_served(plugin, NAME, tmp_path)


@pytest.mark.anyio
async def test_ts_plugin_sends_the_token_from_its_file_and_its_tools_expire_after_sigkill(
    plugin: list[str], tmp_path: Path
) -> None:
    await check_killed(plugin, NAME, tmp_path)


@pytest.mark.anyio
async def test_ts_plugin_registers_again_after_a_clear_a_one_role_removal_and_a_lost_lease(
    plugin: list[str], tmp_path: Path
) -> None:
    await check_registers_again(plugin, NAME, tmp_path)


def test_ts_plugin_unit_tests_pass_under_node_test(plugin: list[str]) -> None:
    # src/lease.test.ts: the KeepAlive comparison of a registry without tools_per_role.
    assert NODE is not None
    build([NODE, "--test", "dist/"], TS_DIR, "node --test")
