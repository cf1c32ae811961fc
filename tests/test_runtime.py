"""toolcall's runtime choices: gRPC's settings before grpc loads, and the event loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from toolcall import eventloop, grpc_env

SHOW = "import os; print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("GRPC_EXPERIMENTS",)}
    environ.pop("TOOLCALL_GRPC_TUNING", None)
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out


def stdout_of(code: str, **env: str) -> str:
    return run_python(code, **env).stdout.strip()


# What a plugin's process sees once ``Plugin.run()`` got going (serve() is where it starts).
PLUGIN_RUN = f"""
import sys
from plugin_stub import Plugin

class Probe(Plugin):
    async def serve(self):
        {SHOW}

Probe().run()
"""

# The CLI's entry point with bad usage: argparse exits after the command's modules loaded.
CLI_RUN = f"""
import sys
from toolcall.cli import main
try:
    main(["tools", "--no-such-flag"])
except SystemExit:
    pass
print("grpc" in sys.modules)
{SHOW}
"""


@pytest.mark.parametrize("module", ["plugin_stub", "registry_service", "llm_service", "toolcall"])
def test_importing_a_toolcall_package_has_no_side_effect_on_grpc_settings(module: str) -> None:
    assert stdout_of(f"import {module}; import grpc; {SHOW}") == "<unset>"


def test_importing_plugin_stub_leaves_grpc_unloaded_so_run_can_still_apply_settings() -> None:
    assert stdout_of("import sys, plugin_stub; print('grpc' in sys.modules)") == "False"


def test_the_cli_entry_point_applies_grpc_settings_before_grpc_loads() -> None:
    assert stdout_of(CLI_RUN).splitlines() == ["True", grpc_env.EXPERIMENTS]


def test_plugin_run_applies_grpc_settings() -> None:
    result = run_python(PLUGIN_RUN)
    assert result.stdout.strip() == grpc_env.EXPERIMENTS
    assert "grpc was imported before" not in result.stderr


def test_a_plugin_that_loaded_grpc_first_gets_one_clear_warning() -> None:
    result = run_python("import grpc\n" + PLUGIN_RUN)
    assert result.stdout.strip() == "<unset>"
    warnings = [line for line in result.stderr.splitlines() if "grpc was imported before" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], result.stderr
    assert grpc_env.EXPERIMENTS in warnings[0]


def test_an_operators_grpc_experiments_are_left_alone() -> None:
    assert stdout_of(PLUGIN_RUN, GRPC_EXPERIMENTS="") == ""
    mine = "-event_engine_dns"
    assert stdout_of(PLUGIN_RUN, GRPC_EXPERIMENTS=mine) == mine
    # grpc loaded first, but with the operator's own settings: nothing to warn about.
    late = run_python("import grpc\n" + PLUGIN_RUN, GRPC_EXPERIMENTS=mine)
    assert "grpc was imported before" not in late.stderr


@pytest.mark.parametrize("off", ["off", "0", "false", "NO"])
def test_tuning_can_be_turned_off(off: str) -> None:
    assert stdout_of(PLUGIN_RUN, TOOLCALL_GRPC_TUNING=off) == "<unset>"
    assert stdout_of(CLI_RUN, TOOLCALL_GRPC_TUNING=off).splitlines()[1] == "<unset>"
    late = run_python("import grpc\n" + PLUGIN_RUN, TOOLCALL_GRPC_TUNING=off)
    assert "grpc was imported before" not in late.stderr


def test_too_late_once_grpc_is_loaded() -> None:
    code = f"import grpc; import toolcall.grpc_env as g; print(g.apply(), g.missed()); {SHOW}"
    assert stdout_of(code).splitlines() == ["False True", "<unset>"]


def test_grpc_works_with_the_settings() -> None:
    # A real server and client in a process that loaded gRPC with toolcall's settings.
    code = """
import asyncio
from toolcall import eventloop, grpc_env
grpc_env.apply()
from toolcall.clients import wait_healthy
from toolcall.serving import ServiceHost

async def main():
    host = ServiceHost("127.0.0.1:0", [], lambda server: None)
    await host.start()
    try:
        await wait_healthy(host.target, timeout_s=10)
        print("healthy", type(asyncio.get_running_loop()).__module__.split(".")[0])
    finally:
        await host.stop()

eventloop.run(main())
"""
    assert stdout_of(code) == "healthy uvloop"


def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLCALL_EVENT_LOOP", raising=False)
    assert eventloop.name() == "uvloop"
    monkeypatch.setenv("TOOLCALL_EVENT_LOOP", "asyncio")
    assert eventloop.name() == "asyncio"

    async def loop_kind() -> type:
        return type(asyncio.get_running_loop())

    assert eventloop.run(loop_kind()).__module__.startswith("asyncio")
    monkeypatch.setenv("TOOLCALL_EVENT_LOOP", "uvloop")
    assert eventloop.run(loop_kind()).__module__.startswith("uvloop")
    monkeypatch.setenv("TOOLCALL_EVENT_LOOP", "trio")
    coro = loop_kind()
    with pytest.raises(SystemExit, match="TOOLCALL_EVENT_LOOP must be one of"):
        eventloop.run(coro)
    assert coro.cr_frame is None  # closed, not left un-awaited
