"""Channels to plugins: one per socket, released with the last tool, bounded, one factory.

The churn test drives a real registry process the way a busy deployment
does: plugins restarting on new ports, tools registered under many spellings
of one socket, tools pointing at dead addresses, each called once and then
cleared. Afterwards the registry's file descriptors (``/proc/<pid>/fd``) and
idle CPU (``/proc/<pid>/stat``) must be back near their baseline. Before,
every spelling and every port held a connection forever and every dead
address was redialled every second.

The LLMService tests churn tools over real plugin processes through a
registry and chats: its channels close as soon as no tool in any role uses
the address (removal, address change, a new snapshot), not after the idle close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from llm_service.settings import LLMSettings
from registry_service import RegistrySettings
from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.llm_env import (
    fake_openai,
    llm_env,
    llm_settings,
    running_llm,
    start_test_registry,
    tool_plugin_process,
    user,
)
from tests.support.plugins import REPO_ROOT, RegistryProcess, free_port, wait_for
from tests.support.registry import Plugin, running_plugin, running_registry, tool
from toolcall.clients import channel
from toolcall.dispatch import Dispatcher, DispatchLimits
from toolcall.registry_view import RegistryView
from toolcall.tools import ToolSpec
from toolcall.v1 import callback_pb2_grpc, llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc

__all__ = ["fake_openai"]

pytestmark = pytest.mark.anyio

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def idle_cpu(pid: int, seconds: float = 2.0) -> float:
    """Share of one core the process used over ``seconds`` while nobody called it."""
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


@contextlib.asynccontextmanager
async def plugin_on_many_ports(
    ports: int, socket_path: str
) -> AsyncIterator[tuple[Plugin, list[int]]]:
    """One ToolCallback server listening on ``ports`` [::1] ports and a unix socket."""
    plugin = Plugin()
    server = grpc.aio.server()
    callback_pb2_grpc.add_ToolCallbackServicer_to_server(plugin, server)
    bound = [server.add_insecure_port("[::1]:0") for _ in range(ports)]
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    try:
        yield plugin, bound
    finally:
        await server.stop(0)


async def churn_round(
    stub: registry_pb2_grpc.ToolRegistryAsyncStub, addresses: list[str], source: str
) -> list[registry_pb2.InvokeResponse]:
    """Registers one tool per address, invokes each once, clears them all."""
    names = [f"churn_{i}" for i in range(len(addresses))]
    for name, address in zip(names, addresses, strict=True):
        reply = await stub.Register(
            registry_pb2.RegisterRequest(tool=tool(name, address, source=source)), timeout=10
        )
        assert reply.ok, (address, reply)
    calls = [
        stub.Invoke(registry_pb2.InvokeRequest(name=n, raw_arguments="{}"), timeout=20)
        for n in names
    ]
    replies = list(await asyncio.gather(*calls))
    await stub.Clear(registry_pb2.ClearRequest(source=source), timeout=10)
    return replies


async def test_churn_of_spellings_ports_and_dead_addresses_returns_fds_and_idle_cpu_to_baseline(
    tmp_path: Path,
) -> None:
    rounds, ports_per_round, dead_per_round = 4, 10, 60
    sock_dir = tempfile.mkdtemp(prefix="tc-ch-", dir="/tmp")
    sock = f"{sock_dir}/p.sock"
    registry = RegistryProcess(f"127.0.0.1:{free_port()}", tmp_path / "data")
    with registry:
        await registry.healthy()
        pid = registry.proc.pid
        async with (
            plugin_on_many_ports(rounds * ports_per_round, sock) as (plugin, ports),
            channel(registry.address) as ch,
        ):
            stub = registry_pb2_grpc.ToolRegistryStub(ch)
            # Warm up (first call, first channel) so the baseline includes
            # what any registry that has served one call keeps.
            warm = await churn_round(stub, [f"[::1]:{ports[0]}"], "warmup")
            assert not warm[0].result.is_error, warm[0].result.error
            await asyncio.sleep(1.0)
            base_fds, base_cpu = fd_count(pid), await idle_cpu(pid)

            for r in range(rounds):
                live = ports[r * ports_per_round : (r + 1) * ports_per_round]
                spellings = [f"[{ip6}]:{p}" for p in live for ip6 in ("::1", "0::1", "::0:1")]
                spellings += [f"unix:{sock}", f"unix://{sock}", f"unix:/.{sock}"]
                spellings += [f"unix:{sock_dir}//p.sock"]
                dead = [f"127.0.0.1:{free_port()}" for _ in range(dead_per_round // 2)]
                dead += [f"unix:{sock_dir}/gone-{r}-{i}" for i in range(dead_per_round // 2)]
                replies = await churn_round(stub, spellings + dead, f"churn{r}")
                for address, reply in zip(spellings + dead, replies, strict=True):
                    assert reply.result.is_error == (address in dead), (address, reply.result)

            assert len(plugin.calls) == 1 + rounds * (3 * ports_per_round + 4)
            # Channel closes run in the background: give them a moment.
            await asyncio.sleep(1.5)
            after_fds, after_cpu = fd_count(pid), await idle_cpu(pid)
    # Before: +1 connection per port and spelling (~130 fds); dead addresses
    # (240) were redialled every second for ever.
    assert after_fds <= base_fds + 6, (base_fds, after_fds)
    assert after_cpu <= base_cpu + 0.03, (base_cpu, after_cpu)


def spec(name: str, address: str, timeout_s: float = 10.0) -> ToolSpec:
    return ToolSpec.from_definition(tool(name, address, timeout_seconds=timeout_s))


async def test_spellings_of_one_socket_share_one_channel() -> None:
    dispatcher = Dispatcher()
    sock_dir = tempfile.mkdtemp(prefix="tc-sp-", dir="/tmp")
    sock = f"{sock_dir}/p.sock"
    try:
        async with plugin_on_many_ports(1, sock) as (plugin, [port]):
            for spelling in (f"[::1]:{port}", f"[0::1]:{port}", f"[0:0:0:0:0:0:0:1]:{port}"):
                result = await dispatcher.invoke(spec("echo", spelling), raw_arguments="{}")
                assert not result.is_error, result.error
            assert dispatcher.open_channels == 1
            for spelling in (f"unix:{sock}", f"unix://{sock}", f"unix:/.{sock_dir}//./p.sock"):
                result = await dispatcher.invoke(spec("echo", spelling), raw_arguments="{}")
                assert not result.is_error, result.error
            assert dispatcher.open_channels == 2
            assert len(plugin.calls) == 6
    finally:
        await dispatcher.close()
    assert dispatcher.open_channels == 0


async def test_channels_are_bounded_and_idle_ones_close() -> None:
    dispatcher = Dispatcher(max_channels=3, channel_idle_s=0.3)
    try:
        dead = [f"127.0.0.1:{free_port()}" for _ in range(8)]
        for address in dead:
            result = await dispatcher.invoke(spec("echo", address), raw_arguments="{}")
            assert result.is_error
            assert dispatcher.open_channels <= 3
        # The idle sweep runs every idle/2 s: a few seconds is many sweeps.
        await asyncio.sleep(2.0)
        assert dispatcher.open_channels == 0
    finally:
        await dispatcher.close()


async def test_releasing_an_address_lets_its_calls_in_flight_finish() -> None:
    dispatcher = Dispatcher()
    try:
        async with running_plugin() as (plugin, address):
            call = asyncio.create_task(
                dispatcher.invoke(spec("sleep", address), raw_arguments='{"seconds": 0.5}')
            )
            await asyncio.wait_for(plugin.started.wait(), 5)
            dispatcher.release(address)
            result = await call
            assert not result.is_error, result.error
            assert dispatcher.open_channels == 0
    finally:
        await dispatcher.close()


def test_every_client_channel_comes_from_the_one_factory_and_every_retry_from_one_backoff() -> None:
    offenders = []
    for package in ("toolcall", "registry_service", "llm_service", "plugin_stub"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            rel = path.relative_to(REPO_ROOT).as_posix()
            if rel.startswith("toolcall/v1/") or rel == "toolcall/channels.py":
                continue
            text = path.read_text()
            if "insecure_channel(" in text or "reconnect_backoff" in text:
                offenders.append(f"{rel}: opens its own channel")
            if re.search(r"backoff\s*\*\s*2|_next\s*\*\s*2", text, re.IGNORECASE):
                offenders.append(f"{rel}: has its own backoff")
    assert offenders == []


async def test_the_output_limit_comes_from_the_services_settings_not_the_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLCALL_MAX_TOOL_OUTPUT_BYTES", "20")
    settings = RegistrySettings.from_env()
    assert settings.dispatch.max_tool_output_bytes == 20
    assert LLMSettings.from_env().dispatch.max_tool_output_bytes == 20
    async with running_plugin() as (_, address):
        echo = spec("echo", address)
        # A library object reads no environment: its limit is what it is given.
        library = Dispatcher()
        owned = settings.dispatcher()
        try:
            assert not (await library.invoke(echo, raw_arguments="{}")).is_error
            result = await owned.invoke(echo, raw_arguments="{}")
            assert result.is_error and "the limit is 20 bytes" in result.error, result.error
        finally:
            await library.close()
            await owned.close()


async def test_the_registry_closes_a_channel_when_the_last_tool_using_it_goes(
    tmp_path: Path,
) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        dispatcher = reg.host.registry.dispatcher
        port = address.rpartition(":")[2]
        await reg.register(tool("a", address))
        await reg.register(tool("b", f"localhost:{port}"))
        await reg.register(tool("c", address))
        for name in ("a", "b", "c"):
            reply = await reg.stub.Invoke(registry_pb2.InvokeRequest(name=name), timeout=5)
            assert not reply.result.is_error, reply.result.error
        assert dispatcher.open_channels == 2  # 127.0.0.1:port and localhost:port
        await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="a"), timeout=5)
        await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="b"), timeout=5)
        assert dispatcher.open_channels == 1  # c still uses the first one
        # Re-registering c elsewhere releases its old address too.
        await reg.register(tool("c", f"localhost:{port}"))
        assert dispatcher.open_channels == 0
        assert len(plugin.calls) == 3


# -- the LLMService's channels -------------------------------------------------


@pytest.fixture(scope="module")
def plugin_sockets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Three test plugin processes, each on its own unix socket."""
    sock_dir = tmp_path_factory.mktemp("plugins")
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(tool_plugin_process(f"unix:{sock_dir}/p{i}.sock")) for i in range(3)
        ]


def respelled(address: str) -> str:
    """Another spelling of a unix socket address (same socket, same channel)."""
    return "unix://" + address.removeprefix("unix:")


async def seen(view: RegistryView, role: str, name: str, address: str | None) -> None:
    """Waits until the view has ``name`` in ``role`` at ``address`` (None: not at all)."""

    async def current() -> str | None:
        spec = view.get(role, name)
        return None if spec is None else spec.callback_address

    await wait_for(current, lambda now: now == address, 5)


async def call_tool(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, openai: FakeOpenAI, name: str, role: str = ""
) -> None:
    """One chat in which the model calls ``name`` once; the plugin must have answered."""
    session = f"s-{role}-{name}-{secrets.token_hex(4)}"
    openai.add(Reply(tool_calls=[("c1", name, "{}")]), Reply(text="done"))
    request = llm_pb2.ChatRequest(session_id=session, messages=[user("call it")], role=role)
    reply = await stub.Chat(request, timeout=20)
    assert reply.message.content == "done"
    history = await stub.GetHistory(llm_pb2.GetHistoryRequest(session_id=session), timeout=5)
    [result] = [m for m in history.messages if m.tool_call_id]
    assert '"call_id":"c1"' in result.content, result.content  # the echo plugin answered


async def test_the_llm_service_closes_a_channel_once_no_tool_in_any_role_uses_its_address(
    tmp_path: Path, plugin_sockets: list[str], fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        plugin_sockets[0],
        openai=fake_openai,
        default_provider="openai",
        roles=("default", "ops"),
        dispatch=DispatchLimits(callback_channel_idle_s=3600.0),  # nothing closes by idling
    ) as env:
        view, dispatcher, pid = env.llm.view, env.llm.dispatcher, os.getpid()

        async def register(name: str, address: str, role: str) -> None:
            reply = await env.registry_stub.Register(
                registry_pb2.RegisterRequest(tool=tool(name, address, role=role)), timeout=5
            )
            assert reply.ok, reply
            await seen(view, role, name, address)

        async def unregister(name: str, role: str) -> None:
            await env.registry_stub.Unregister(
                registry_pb2.UnregisterRequest(name=name, role=role), timeout=5
            )
            await seen(view, role, name, None)

        # Warm up (provider client, first channel) so the baseline holds what
        # any LLMService that has served a tool call keeps.
        await register("echo_warm", plugin_sockets[0], "default")
        await call_tool(env.stub, fake_openai, "echo_warm", "default")
        await unregister("echo_warm", "default")
        assert dispatcher.open_channels == 0
        await asyncio.sleep(0.5)
        base_fds = fd_count(pid)

        for r, address in enumerate(plugin_sockets):
            name, other = f"echo_{r}", plugin_sockets[(r + 1) % len(plugin_sockets)]
            await register(name, address, "default")
            await register(name, respelled(address), "ops")
            await call_tool(env.stub, fake_openai, name, "default")
            await call_tool(env.stub, fake_openai, name, "ops")
            assert dispatcher.open_channels == 1  # two spellings, one socket
            await unregister(name, "default")
            assert dispatcher.open_channels == 1  # role ops still uses it
            # Moving the last tool elsewhere (an UPSERT) releases the old address.
            await register(name, other, "ops")
            assert dispatcher.open_channels == 0
            await call_tool(env.stub, fake_openai, name, "ops")
            assert dispatcher.open_channels == 1
            await unregister(name, "ops")
            assert dispatcher.open_channels == 0

        # Closes run in the background; the plugins are all still up, so a
        # channel left open would still hold its connection (an fd).
        async def fds() -> int:
            return fd_count(pid)

        await wait_for(fds, lambda n: n <= base_fds + 2, 5)


async def test_a_new_registry_snapshot_releases_the_addresses_it_no_longer_has(
    tmp_path: Path, plugin_sockets: list[str], fake_openai: FakeOpenAI
) -> None:
    p0, p1, _ = plugin_sockets
    # The next registry run's tools, stored ahead: its first snapshot holds
    # echo_z at another spelling of p1, and no tool at p0.
    staged = await start_test_registry(tmp_path / "r2.sqlite3")
    try:
        async with channel(staged.target) as ch:
            await register_at(registry_pb2_grpc.ToolRegistryStub(ch), "echo_z", respelled(p1))
    finally:
        await staged.stop()

    address = f"127.0.0.1:{free_port()}"
    settings = llm_settings(
        tmp_path,
        address,
        openai_base_url=fake_openai.base_url,
        default_provider="openai",
        dispatch=DispatchLimits(callback_channel_idle_s=3600.0),
    )
    registry = await start_test_registry(tmp_path / "r1.sqlite3", address)
    try:
        async with running_llm(settings) as llm, channel(llm.target) as lch:
            stub = llm_pb2_grpc.LLMServiceStub(lch)
            async with channel(address) as rch:
                rstub = registry_pb2_grpc.ToolRegistryStub(rch)
                await register_at(rstub, "echo_x", p0)
                await register_at(rstub, "echo_y", p1)
            await seen(llm.view, "default", "echo_y", p1)
            await call_tool(stub, fake_openai, "echo_x")
            await call_tool(stub, fake_openai, "echo_y")
            assert llm.dispatcher.open_channels == 2

            await registry.stop()
            registry = await start_test_registry(tmp_path / "r2.sqlite3", address)
            await seen(llm.view, "default", "echo_x", None)
            assert llm.view.get("default", "echo_z") is not None
            assert llm.dispatcher.open_channels == 1  # p0's closed; echo_z keeps p1's
            await call_tool(stub, fake_openai, "echo_z")
            assert llm.dispatcher.open_channels == 1
    finally:
        await registry.stop()


async def register_at(stub: registry_pb2_grpc.ToolRegistryAsyncStub, name: str, at: str) -> None:
    reply = await stub.Register(registry_pb2.RegisterRequest(tool=tool(name, at)), timeout=5)
    assert reply.ok, reply
