"""Faults of the services themselves: the registry or the LLMService restarted.

Registry: killed (SIGKILL) or stopped (SIGTERM) while chats run, then started
again on the same address. Chats never fail - the LLMService keeps its last
view of the tools and calls plugins directly - the plugin re-registers with a
new lease, the LLMService resyncs, and chats call tools again. No call is
left hanging.

LLMService: stopped, or SIGKILLed, with async tool tasks finished and
pending. After the restart every result is delivered (finished ones with
their output, interrupted ones as failed) and none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.support.faults import MODULE, TOOL_NAMES, user
from tests.support.llm_env import llm_settings, running_llm
from tests.support.plugins import (
    ChildProcess,
    PluginProcess,
    RegistryProcess,
    child_env,
    free_port,
    list_tools,
    wait_for,
)
from toolcall.clients import channel, wait_healthy
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2_grpc

pytestmark = pytest.mark.anyio

SUCCEEDED, FAILED = llm_pb2.TASK_STATUS_SUCCEEDED, llm_pb2.TASK_STATUS_FAILED


@dataclass
class Traffic:
    """Chat workers that run until stopped, recording every outcome."""

    stub: llm_pb2_grpc.LLMServiceAsyncStub
    ok: list[tuple[float, bool]] = field(default_factory=list)  # (when, called the tool)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            request = llm_pb2.ChatRequest(session_id=f"w{n}", messages=[user(f"echo 'w{n}-{i}'")])
            started = time.monotonic()
            try:
                reply = await self.stub.Chat(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")
            else:
                called = [t.call.name for t in reply.tool_calls] == ["echo"] and not any(
                    t.result.is_error for t in reply.tool_calls
                )
                self.ok.append((time.monotonic(), called))
            self.latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.01)

    def called_since(self, t: float) -> int:
        return sum(1 for when, called in self.ok if when > t and called)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_registry_restarted_during_traffic(tmp_path: Path, sig: signal.Signals) -> None:
    address = f"127.0.0.1:{free_port()}"
    data = tmp_path / "registry"
    registry = RegistryProcess(address, data)
    await registry.healthy()
    settings = llm_settings(tmp_path, address)
    try:
        with PluginProcess(MODULE, address, tmp_path, lease_ttl="2") as plugin:
            async with running_llm(settings) as llm, channel(llm.target) as lch:
                for name in TOOL_NAMES:
                    assert await llm.view.wait_for("default", name, timeout_s=10)
                first_instance = llm.view.instance_id
                traffic = Traffic(llm_pb2_grpc.LLMServiceStub(lch))
                workers = [asyncio.create_task(traffic.worker(n)) for n in range(6)]
                await asyncio.sleep(0.8)
                registry.proc.send_signal(sig)
                registry.proc.wait(10)
                down_at = time.monotonic()
                await asyncio.sleep(1.5)  # chats go on without a registry
                during_outage = traffic.called_since(down_at)
                registry = RegistryProcess(address, data)
                await registry.healthy()
                restarted_at = time.monotonic()
                # The plugin registers again (new lease) and the view resyncs.
                async with channel(address) as rch:
                    stub: registry_pb2_grpc.ToolRegistryAsyncStub = (
                        registry_pb2_grpc.ToolRegistryStub(rch)
                    )
                    await wait_for(
                        lambda: list_tools(stub, source="plugin:faults"),
                        lambda tools: len(tools) == len(TOOL_NAMES),
                        timeout_s=10,
                    )
                for name in TOOL_NAMES:
                    assert await llm.view.wait_for("default", name, timeout_s=10)
                resynced_at = time.monotonic()
                await asyncio.sleep(0.8)
                traffic.stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), 15)  # none stuck
                assert llm.view.instance_id != first_instance
                assert plugin.alive()
    finally:
        registry.stop()
    assert traffic.errors == [], traffic.errors[:5]
    assert during_outage > 0, "no chat called its tool while the registry was down"
    assert traffic.called_since(resynced_at) > 0, "chats did not call tools after the restart"
    assert max(traffic.latencies) < 5
    print(
        f"registry {sig.name}: {len(traffic.ok)} chats, 0 errors, {during_outage} tool calls "
        f"while it was down; resynced {resynced_at - restarted_at:.2f}s after it was back; "
        f"max latency {max(traffic.latencies) * 1000:.0f} ms"
    )


class LLMProcess(ChildProcess):
    """``toolcall llm`` as a separate process (so it can be SIGKILLed)."""

    name = "llm"

    def __init__(self, address: str, registry: str, data_dir: Path) -> None:
        argv = [sys.executable, "-m", "toolcall.cli", "llm", "--address", address]
        argv += ["--registry", registry, "--data-dir", str(data_dir)]
        env = child_env(TOOLCALL_TASK_GRACE="0.2")
        super().__init__(argv, data_dir / "llm.log", env)


@contextlib.asynccontextmanager
async def llm_stub(address: str) -> AsyncIterator[llm_pb2_grpc.LLMServiceAsyncStub]:
    async with channel(address) as ch:
        yield llm_pb2_grpc.LLMServiceStub(ch)


async def chat_task(stub: llm_pb2_grpc.LLMServiceAsyncStub, session: str, text: str) -> str:
    """Runs a turn that starts one async task; returns its id."""
    reply = await stub.Chat(
        llm_pb2.ChatRequest(session_id=session, messages=[user(text)]), timeout=20
    )
    [record] = reply.tool_calls
    assert record.task_id, reply
    return record.task_id


async def task_status(stub: llm_pb2_grpc.LLMServiceAsyncStub, task_id: str) -> int:
    reply = await stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id), timeout=5)
    return int(reply.task.status)


async def results(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, session: str, *, read_s: float = 1.0
) -> list[llm_pb2.Task]:
    """What Subscribe (auto_ack) delivers within ``read_s``."""
    got: list[llm_pb2.Task] = []
    call = stub.Subscribe(llm_pb2.SubscribeRequest(session_id=session, auto_ack=True))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(read_s):
            async for message in call:
                got.append(message.task)
    call.cancel()
    return got


async def start_stack_parts(tmp_path: Path) -> tuple[RegistryProcess, str]:
    address = f"127.0.0.1:{free_port()}"
    registry = RegistryProcess(address, tmp_path / "registry")
    await registry.healthy()
    return registry, address


async def test_llm_stopped_with_tasks_finished_and_pending(tmp_path: Path) -> None:
    registry, address = await start_stack_parts(tmp_path)
    settings = llm_settings(tmp_path, address, task_grace_s=0.2)
    try:
        with PluginProcess(MODULE, address, tmp_path):
            async with running_llm(settings) as llm, llm_stub(llm.target) as stub:
                for name in TOOL_NAMES:
                    assert await llm.view.wait_for("default", name, timeout_s=10)
                done = await chat_task(stub, "s", "ping later")
                acked = await chat_task(stub, "s2", "ping later")
                await wait_for(lambda: task_status(stub, done), lambda s: s == SUCCEEDED, 10)
                await wait_for(lambda: task_status(stub, acked), lambda s: s == SUCCEEDED, 10)
                assert [t.task_id for t in await results(stub, "s2", read_s=0.5)] == [acked]
                pending = await chat_task(stub, "s", "slow ping later")
            # Stopped: the pending task got 0.2 s of grace, then was recorded as failed.
            settings = llm_settings(tmp_path, address, task_grace_s=0.2)
            async with running_llm(settings) as llm, llm_stub(llm.target) as stub:
                delivered = await results(stub, "s")
                assert sorted(t.task_id for t in delivered) == sorted([done, pending])
                by_id = {t.task_id: t for t in delivered}
                assert by_id[done].status == SUCCEEDED
                assert by_id[pending].status == FAILED
                assert "stopped before the task finished" in by_id[pending].result.error
                assert await results(stub, "s2", read_s=0.3) == []  # acked before the stop
                assert await results(stub, "s", read_s=0.3) == []  # none twice
                print(f"LLMService stopped: {len(delivered)} results delivered once after restart")
                notes = await _task_notes(stub, "s")
                assert sorted(notes) == sorted([done, pending])
    finally:
        registry.stop()


async def test_llm_killed_with_tasks_finished_and_pending(tmp_path: Path) -> None:
    registry, address = await start_stack_parts(tmp_path)
    llm_address = f"127.0.0.1:{free_port()}"
    data = tmp_path / "llm"
    data.mkdir()
    llm = LLMProcess(llm_address, address, data)
    try:
        with PluginProcess(MODULE, address, tmp_path):
            await wait_healthy(llm_address)
            async with llm_stub(llm_address) as stub:
                done = await _retry_chat_task(stub, "s", "ping later")
                await wait_for(lambda: task_status(stub, done), lambda s: s == SUCCEEDED, 10)
                pending = await chat_task(stub, "s", "slow ping later")
            llm.proc.kill()  # no grace, no shutdown code: the task is cut off
            llm.proc.wait(10)
            llm = LLMProcess(llm_address, address, data)
            await wait_healthy(llm_address)
            async with llm_stub(llm_address) as stub:
                delivered = await results(stub, "s")
                by_id = {t.task_id: t for t in delivered}
                assert sorted(by_id) == sorted([done, pending]) and len(delivered) == 2
                assert by_id[done].status == SUCCEEDED
                assert by_id[pending].status == FAILED
                assert "restarted before the task finished" in by_id[pending].result.error
                assert await results(stub, "s", read_s=0.3) == []  # none twice
                # The chat still answers, tools included.
                again = await _retry_chat_task(stub, "s", "ping later")
                await wait_for(lambda: task_status(stub, again), lambda s: s == SUCCEEDED, 10)
                assert [t.task_id for t in await results(stub, "s")] == [again]
                assert sorted(await _task_notes(stub, "s")) == sorted([done, pending, again])
    finally:
        llm.stop()
        registry.stop()


async def _retry_chat_task(stub: llm_pb2_grpc.LLMServiceAsyncStub, session: str, text: str) -> str:
    """A fresh LLMService may not have seen the plugin's tools yet: retry for a while."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await chat_task(stub, session, text)
        except (AssertionError, ValueError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _task_notes(stub: llm_pb2_grpc.LLMServiceAsyncStub, session: str) -> list[str]:
    """Task ids of the result notes in a session's history (one per finished task)."""
    reply = await stub.GetHistory(llm_pb2.GetHistoryRequest(session_id=session), timeout=5)
    ids = []
    for m in reply.messages:
        if m.role == llm_pb2.MESSAGE_ROLE_SYSTEM and " task task_" in m.content:
            ids.append(m.content.split(" task ", 1)[1].split(" ", 1)[0])
    return ids
