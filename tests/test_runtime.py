"""toolcall's runtime choices: gRPC's settings before grpc loads, and the event loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from toolcall import eventloop, grpc_env

SHOW = "import os; print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))"


def run_python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("GRPC_EXPERIMENTS",)}
    environ.pop("TOOLCALL_GRPC_TUNING", None)
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["plugin_stub", "registry_service", "llm_service", "toolcall"])
def test_importing_a_toolcall_package_sets_grpc_settings(module: str) -> None:
    assert run_python(f"import {module}; import grpc; {SHOW}") == grpc_env.EXPERIMENTS


def test_an_operators_grpc_experiments_are_left_alone() -> None:
    assert run_python(f"import plugin_stub; {SHOW}", GRPC_EXPERIMENTS="") == ""
    mine = "-event_engine_dns"
    assert run_python(f"import plugin_stub; {SHOW}", GRPC_EXPERIMENTS=mine) == mine


@pytest.mark.parametrize("off", ["off", "0", "false", "NO"])
def test_tuning_can_be_turned_off(off: str) -> None:
    assert run_python(f"import plugin_stub; {SHOW}", TOOLCALL_GRPC_TUNING=off) == "<unset>"


def test_too_late_once_grpc_is_loaded() -> None:
    code = f"import grpc; import toolcall.grpc_env as g; print(g.apply()); {SHOW}"
    assert run_python(code).splitlines() == ["False", "<unset>"]


def test_grpc_works_with_the_settings() -> None:
    # A real server and client in a process that loaded gRPC with toolcall's settings.
    code = """
import asyncio
import toolcall
from toolcall import eventloop
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
    assert run_python(code) == "healthy uvloop"


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
