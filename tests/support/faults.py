"""Helpers of the fault tests, and the plugin they break: ``python -m tests.support.faults``.

``FaultPlugin`` is a real SDK plugin. Its tools leave marker files in
``$TOOLCALL_FAULTS_DIR`` so a test knows when a call is in flight, and their
names are chosen so the offline stand-in picks them from plain sentences:
"echo 'x'" -> ``echo``, "slow echo 'x'" -> ``slow_echo``, "big output 5000000"
-> ``big_output``, "ping later" -> ``ping_later`` and "slow ping later" ->
``slow_ping_later`` (both async).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from llm_service import LLMServiceHost
from plugin_stub import Plugin, llm_tool
from registry_service import RegistryHost
from tests.support.llm_env import llm_settings, running_llm, start_test_registry, user
from tests.support.plugins import PluginProcess, wait_for
from toolcall.clients import channel
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc

MODULE = "tests.support.faults"
TOOL_NAMES = ("big_output", "echo", "ping_later", "slow_echo", "slow_ping_later")


def _marker(name: str) -> None:
    directory = os.environ.get("TOOLCALL_FAULTS_DIR")
    if directory:
        Path(directory, name).write_text(str(time.time()))


class FaultPlugin(Plugin):
    plugin_id = "faults"

    @llm_tool(timeout=1)
    def echo(self, text: str) -> dict[str, Any]:
        """Returns the words."""
        return {"echo": text}

    @llm_tool(timeout=10)
    async def slow_echo(self, text: str, seconds: float = 5.0) -> dict[str, Any]:
        """Returns the words after a pause."""
        _marker("slow_echo.started")
        await asyncio.sleep(seconds)
        return {"echo": text}

    @llm_tool(timeout=10)
    def big_output(self, size: int) -> str:
        """Returns a string of the given length."""
        return "x" * size

    @llm_tool(mode="async", timeout=30, ack_message="Ping running.")
    async def ping_later(self, seconds: float = 0.3) -> dict[str, Any]:
        """Answers pong in the background."""
        _marker("ping_later.started")
        await asyncio.sleep(seconds)
        return {"pong": True}

    @llm_tool(mode="async", timeout=30, ack_message="Slow ping running.")
    async def slow_ping_later(self, seconds: float = 5.0) -> dict[str, Any]:
        """Answers pong in the background, after a while."""
        _marker("slow_ping_later.started")
        await asyncio.sleep(seconds)
        return {"pong": "slow"}


# -- test side ----------------------------------------------------------------------


@dataclasses.dataclass
class Stack:
    """A registry and an LLMService in-process, the fault plugin as a process."""

    registry: RegistryHost
    llm: LLMServiceHost
    plugin: PluginProcess
    markers: Path
    stub: llm_pb2_grpc.LLMServiceAsyncStub
    registry_stub: registry_pb2_grpc.ToolRegistryAsyncStub

    def chat_request(self, session: str, text: str) -> llm_pb2.ChatRequest:
        return llm_pb2.ChatRequest(session_id=session, messages=[user(text)])

    async def chat(self, session: str, text: str, deadline_s: float = 20) -> llm_pb2.ChatResponse:
        return await self.stub.Chat(self.chat_request(session, text), timeout=deadline_s)

    async def history(self, session: str) -> list[llm_pb2.ChatMessage]:
        reply = await self.stub.GetHistory(llm_pb2.GetHistoryRequest(session_id=session))
        return list(reply.messages)

    async def wait_marker(self, name: str, timeout_s: float = 10) -> None:
        await wait_for(anyio.Path(self.markers / name).exists, bool, timeout_s)

    def signal_plugin(self, sig: signal.Signals) -> None:
        os.kill(self.plugin.proc.pid, sig)

    async def wait_tools(self, present: bool = True, timeout_s: float = 10) -> None:
        for name in TOOL_NAMES:
            seen = await self.llm.view.wait_for(
                "default", name, timeout_s=timeout_s, present=present
            )
            assert seen, f"tool {name} {'never appeared' if present else 'never went away'}"


@contextlib.asynccontextmanager
async def fault_stack(
    tmp_path: Path, *, lease_ttl: str = "6", **llm_overrides: Any
) -> AsyncIterator[Stack]:
    markers = tmp_path / "markers"
    markers.mkdir()
    registry = await start_test_registry(tmp_path / "registry.sqlite3")
    try:
        settings = llm_settings(tmp_path, registry.target, **llm_overrides)
        with PluginProcess(
            MODULE,
            registry.target,
            tmp_path,
            lease_ttl=lease_ttl,
            extra_env={"TOOLCALL_FAULTS_DIR": str(markers)},
        ) as plugin:
            async with (
                running_llm(settings) as llm,
                channel(llm.target) as lch,
                channel(registry.target) as rch,
            ):
                stack = Stack(
                    registry,
                    llm,
                    plugin,
                    markers,
                    llm_pb2_grpc.LLMServiceStub(lch),
                    registry_pb2_grpc.ToolRegistryStub(rch),
                )
                await stack.wait_tools()
                yield stack
    finally:
        await registry.stop()


async def invoke(
    stack: Stack, name: str, raw_arguments: str, deadline_s: float = 20
) -> registry_pb2.InvokeResponse:
    request = registry_pb2.InvokeRequest(name=name, raw_arguments=raw_arguments)
    return await stack.registry_stub.Invoke(request, timeout=deadline_s)


if __name__ == "__main__":
    FaultPlugin().run()
