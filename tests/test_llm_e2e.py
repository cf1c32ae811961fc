"""End to end: real registry, real SDK plugin processes (the examples), offline provider.

The conversation of ``toolcall demo``: a sync tool, an async tool whose
result is pushed on Subscribe, a tool error, and a plugin that dies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.llm_env import LLMEnv, llm_env, tool_plugin
from toolcall.jsonvalue import from_value
from toolcall.v1 import llm_pb2

__all__ = ["tool_plugin"]

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[1]


async def spawn_plugin(module: str, registry: str) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env.update(
        TOOLCALL_REGISTRY_ADDRESS=registry,
        TOOLCALL_PING_DELAY="0.3",
        TOOLCALL_PLUGIN_LEASE_TTL="1.5",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


@dataclasses.dataclass
class Stack:
    env: LLMEnv
    weather: asyncio.subprocess.Process
    network: asyncio.subprocess.Process


@pytest.fixture
async def stack(tmp_path: Path, tool_plugin: str) -> AsyncIterator[Stack]:
    async with llm_env(tmp_path, tool_plugin) as env:
        plugins = [
            await spawn_plugin("toolcall_examples.weather_plugin", env.registry.target),
            await spawn_plugin("toolcall_examples.network_plugin", env.registry.target),
        ]
        try:
            for name in ("get_weather", "get_forecast", "ping"):
                assert await env.llm.view.wait_for("default", name, timeout_s=20), name
            yield Stack(env, *plugins)
        finally:
            for proc in plugins:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in plugins:
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def test_demo_conversation(stack: Stack) -> None:
    env = stack.env
    sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="demo", auto_ack=True))

    sync = await env.chat("demo", "What is the weather in Paris?")
    [record] = sync.tool_calls
    assert record.call.name == "get_weather"
    assert from_value(record.result.output)["city"] == "Paris"
    assert sync.message.content.startswith("get_weather returned: {")

    events = await env.stream("demo", "Please ping example.org")
    final = events[-2].final
    [ping] = final.tool_calls
    assert ping.call.name == "ping" and ping.task_id
    assert final.message.content.startswith(f"Started ping (task {ping.task_id})")
    pushed = await asyncio.wait_for(sub.read(), 10)
    assert isinstance(pushed, llm_pb2.SubscribeResponse)
    assert pushed.task.task_id == ping.task_id
    assert pushed.task.status == llm_pb2.TASK_STATUS_SUCCEEDED
    assert from_value(pushed.task.result.output)["host"] == "example.org"
    sub.cancel()

    failed = await env.chat("demo", "What is the weather forecast for Atlantis?")
    [forecast] = failed.tool_calls
    assert forecast.call.name == "get_forecast" and forecast.result.is_error
    assert "no forecast for 'Atlantis'" in forecast.result.error
    assert failed.message.content.startswith("The tool get_forecast failed:")

    history = await env.history("demo")
    notes = [m.content for m in history if m.role == llm_pb2.MESSAGE_ROLE_SYSTEM]
    assert notes == [notes[0]] and notes[0].startswith(f"Result of async task {ping.task_id}")


async def test_a_dead_plugin_is_an_error_then_disappears(stack: Stack) -> None:
    env = stack.env
    stack.weather.kill()  # no goodbye: its lease must expire
    await stack.weather.wait()
    reply = await env.chat("dead", "What is the weather in Paris?")
    [record] = reply.tool_calls
    assert record.result.is_error and record.result.error.startswith("UNAVAILABLE")
    assert reply.message.content.startswith("The tool get_weather failed: UNAVAILABLE")
    # The lease expires; the registry's Watch tells the LLMService.
    assert await env.llm.view.wait_for("default", "get_weather", timeout_s=10, present=False)
    after = await env.chat("dead", "What is the weather in Paris?")
    assert all(r.call.name != "get_weather" for r in after.tool_calls)
