"""Plugins end to end: a real registry, plugin processes, calls through the registry.

Lease-related tests use short TTLs (1.5 s) so expiry and re-registration are
observable within a few seconds.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import grpc
import pytest
from pydantic import BaseModel, Field

from plugin_stub import Image, Plugin, llm_tool
from tests.support.images import png
from tests.support.plugins import (
    PluginProcess,
    RegistryProcess,
    free_port,
    list_tools,
    registry_in_process,
    wait_for,
)
from toolcall.clients import auth_metadata, channel
from toolcall.jsonvalue import from_struct, from_value, to_struct
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

SHORT_TTL = "1.5"


def both(tools: list[registry_pb2.RegisteredTool]) -> bool:
    """The weather plugin's two tools are there (it registers them one by one)."""
    return len(tools) == 2


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[str]:
    async with registry_in_process(tmp_path) as target:
        yield target


@pytest.fixture
async def stub(registry: str) -> AsyncIterator[registry_pb2_grpc.ToolRegistryAsyncStub]:
    async with channel(registry) as ch:
        yield registry_pb2_grpc.ToolRegistryStub(ch)


async def invoke(
    stub: registry_pb2_grpc.ToolRegistryAsyncStub, name: str, arguments: dict[str, Any]
) -> tools_pb2.ToolResult:
    reply = await stub.Invoke(
        registry_pb2.InvokeRequest(name=name, arguments=to_struct(arguments)), timeout=10
    )
    return reply.result


def names(tools: list[registry_pb2.RegisteredTool]) -> set[str]:
    return {t.tool.name for t in tools}


@pytest.mark.anyio
async def test_weather_plugin_process_registers_serves_and_clears_on_sigterm(
    registry: str, stub: registry_pb2_grpc.ToolRegistryAsyncStub, tmp_path: Path
) -> None:
    # A long TTL: the tools must vanish because of SIGTERM, not lease expiry.
    with PluginProcess(
        "toolcall_examples.weather_plugin", registry, tmp_path, lease_ttl="30"
    ) as plugin:
        tools = await wait_for(lambda: list_tools(stub, source="plugin:weather"), both, 15)
        assert names(tools) == {"get_weather", "get_forecast"}
        weather = next(t.tool for t in tools if t.tool.name == "get_weather")
        assert weather.source == "plugin:weather"
        assert weather.timeout_seconds == 5
        assert weather.callback_address.startswith("127.0.0.1:")
        assert weather.mode in (tools_pb2.TOOL_MODE_SYNC, tools_pb2.TOOL_MODE_UNSPECIFIED)
        assert all(t.lease_id for t in tools)

        result = await invoke(stub, "get_weather", {"city": "Paris"})
        assert not result.is_error, result.error
        assert from_value(result.output) == {
            "city": "Paris",
            "temp_c": 17,
            "condition": "light rain",
            "humidity": 80,
        }
        result = await invoke(stub, "get_weather", {"city": "Paris", "units": "fahrenheit"})
        assert from_value(result.output)["temp_f"] == 62.6
        result = await invoke(stub, "get_forecast", {"city": "Atlantis"})
        assert result.is_error
        assert result.error.startswith("no forecast for 'Atlantis'")
        result = await invoke(stub, "get_forecast", {"city": "Tokyo", "days": 9})
        assert result.is_error and result.error == "days must be between 1 and 7"
        result = await invoke(stub, "get_weather", {"town": "Paris"})
        assert result.is_error and "INVALID_ARGUMENT" in result.error
        assert plugin.alive()  # errors never crash the plugin

        stopped = time.monotonic()
        plugin.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: list_tools(stub, source="plugin:weather"), lambda t: not t, 15)
        # Cleared by the plugin's goodbye, not by expiry: expiry needs at least
        # TTL - TTL/3 (the last heartbeat's age) = 20 s; half the TTL is the line.
        assert time.monotonic() - stopped < 15
        assert plugin.proc.wait(10) == 0


@pytest.mark.anyio
async def test_killed_plugin_tools_vanish_when_the_lease_expires(
    registry: str, stub: registry_pb2_grpc.ToolRegistryAsyncStub, tmp_path: Path
) -> None:
    with PluginProcess(
        "toolcall_examples.weather_plugin", registry, tmp_path, lease_ttl=SHORT_TTL
    ) as plugin:
        await wait_for(lambda: list_tools(stub, source="plugin:weather"), both, 15)
        # Outlive a few TTLs: KeepAlive holds the lease.
        await asyncio.sleep(2 * float(SHORT_TTL))
        assert len(await list_tools(stub, source="plugin:weather")) == 2
        plugin.proc.send_signal(signal.SIGKILL)
        plugin.proc.wait(5)
        killed = time.monotonic()
        assert len(await list_tools(stub, source="plugin:weather")) == 2  # no goodbye was said
        await wait_for(lambda: list_tools(stub, source="plugin:weather"), lambda t: not t, 8)
        # The lease outlives the kill: it was last renewed at most one heartbeat
        # interval (TTL/3) before, so it expires no sooner than TTL - TTL/3 after
        # the kill; another TTL/3 of margin covers a late heartbeat and scheduling.
        ttl = float(SHORT_TTL)
        assert time.monotonic() - killed >= ttl - ttl / 3 - ttl / 3


@pytest.mark.anyio
async def test_plugin_re_registers_after_registry_restart_and_waits_for_a_late_registry(
    tmp_path: Path,
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    # The plugin starts first: it must keep retrying until the registry is up.
    with PluginProcess(
        "toolcall_examples.weather_plugin", address, tmp_path, lease_ttl=SHORT_TTL
    ) as plugin:
        await asyncio.sleep(0.5)
        with RegistryProcess(address, tmp_path / "reg1") as first:
            await first.healthy()
            async with channel(address) as ch:
                stub = registry_pb2_grpc.ToolRegistryStub(ch)
                await wait_for(lambda: list_tools(stub, source="plugin:weather"), both, 15)
            first.stop()
        with RegistryProcess(address, tmp_path / "reg2") as second:
            await second.healthy()
            async with channel(address) as ch:
                stub = registry_pb2_grpc.ToolRegistryStub(ch)
                restarted = time.monotonic()
                tools = await wait_for(lambda: list_tools(stub, source="plugin:weather"), both, 15)
                assert names(tools) == {"get_weather", "get_forecast"}
                # Protocol: the next heartbeat (TTL/3) or retry (backoff <= 2 s, RPC
                # deadline 1 s) notices the restart and re-registers: ~3.5 s; 8 s of margin.
                assert time.monotonic() - restarted < 8
                result = await invoke(stub, "get_weather", {"city": "Tokyo"})
                assert from_value(result.output)["temp_c"] == 24
        assert plugin.alive()


@pytest.mark.anyio
async def test_async_network_plugin(
    registry: str, stub: registry_pb2_grpc.ToolRegistryAsyncStub, tmp_path: Path
) -> None:
    env = {"TOOLCALL_PING_DELAY": "0.2"}
    with PluginProcess("toolcall_examples.network_plugin", registry, tmp_path, extra_env=env):
        tools = await wait_for(lambda: list_tools(stub, source="plugin:network"), len, 15)
        ping = tools[0].tool
        assert ping.name == "ping"
        assert ping.mode == tools_pb2.TOOL_MODE_ASYNC
        assert ping.ack_message.startswith("Ping started")
        started = time.monotonic()
        result = await invoke(stub, "ping", {"host": "127.0.0.1"})
        assert time.monotonic() - started >= 0.2
        assert not result.is_error, result.error
        report = from_value(result.output)
        assert report["host"] == "127.0.0.1" and report["simulated"] is True
        assert report["packets"] == 4 and report["loss"] == 0 and len(report["rtt_ms"]) == 4
        again = from_value((await invoke(stub, "ping", {"host": "127.0.0.1"})).output)
        assert again == report  # deterministic
        result = await invoke(stub, "ping", {"host": "example.com", "count": 11})
        assert result.is_error and result.error == "ValueError: count must be between 1 and 10"


class RuntimeTools(Plugin):
    plugin_id = "runtime"

    @llm_tool
    async def base(self) -> str:
        return "base"


@pytest.mark.anyio
async def test_in_process_plugin_runtime_tools_and_reconciliation(
    registry: str, stub: registry_pb2_grpc.ToolRegistryAsyncStub
) -> None:
    plugin = RuntimeTools(registry_address=registry, lease_ttl_s=1.5)
    async with plugin:
        await plugin.wait_registered(10)
        assert names(await list_tools(stub, source="plugin:runtime")) == {"base"}

        def triple(n: int) -> int:
            """Multiply by three."""
            return n * 3

        plugin.register_llm_tool("triple", triple)
        await plugin.wait_registered(5)
        tools = await list_tools(stub, source="plugin:runtime")
        assert names(tools) == {"base", "triple"}
        assert from_value((await invoke(stub, "triple", {"n": 4})).output) == 12

        plugin.unregister_llm_tool("triple")
        await plugin.wait_registered(5)
        assert names(await list_tools(stub, source="plugin:runtime")) == {"base"}

        # Someone clears the plugin's tools behind its back: the next
        # KeepAlive notices and registers them again.
        await stub.Clear(registry_pb2.ClearRequest(source="plugin:runtime"))
        assert not await list_tools(stub, source="plugin:runtime")
        await wait_for(lambda: list_tools(stub, source="plugin:runtime"), len, 5)
    assert not await list_tools(stub, source="plugin:runtime")


@pytest.mark.anyio
async def test_token_is_sent_as_bearer_metadata(tmp_path: Path) -> None:
    async with registry_in_process(tmp_path, token="s3cret") as target:
        async with channel(target) as ch:
            stub = registry_pb2_grpc.ToolRegistryStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=5))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            wrong = RuntimeTools(registry_address=target, token="wrong")
            async with wrong:
                with pytest.raises(TimeoutError):
                    await wrong.wait_registered(1)
            right = RuntimeTools(registry_address=target, token="s3cret")
            async with right:
                await right.wait_registered(10)
                assert names(await list_tools(stub, source="plugin:runtime")) == {"base"}
            assert not await list_tools(stub, source="plugin:runtime")
            assert auth_metadata("s3cret") == (("authorization", "Bearer s3cret"),)


class Slow(Plugin):
    plugin_id = "slow"

    @llm_tool(timeout=0.3)
    async def overrun(self) -> str:
        """Sleeps past its own timeout."""
        await asyncio.sleep(5)
        return "late"


def documented_errors(row_start: str) -> list[re.Pattern[str]]:
    """The error texts docs/plugins.md's results table gives, placeholders as wildcards."""
    table = (REPO / "docs" / "plugins.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith(row_start))
    return [
        re.compile(re.sub(r"<[a-z]+>", ".+?", re.escape(text).replace(r"\<", "<")) + "$")
        for text in re.findall(r'`"([^`]*)"`', row)
    ]


@pytest.mark.anyio
async def test_the_timeout_error_a_sync_call_shows_is_the_one_the_docs_give(
    registry: str, stub: registry_pb2_grpc.ToolRegistryAsyncStub
) -> None:
    async with Slow(registry_address=registry) as plugin:
        await plugin.wait_registered(10)
        result = await invoke(stub, "overrun", {})
    assert result.is_error
    # The caller's deadline and the plugin's own timer race; the docs give both texts.
    patterns = documented_errors("| runs past its timeout |")
    assert len(patterns) == 2
    assert any(p.match(result.error) for p in patterns), result.error
    assert "overrun" in result.error and "0.3s" in result.error


class Reading(BaseModel):
    """One weather reading."""

    city: str
    temp_c: Annotated[float, Field(description="Temperature in °C")]


class RichTools(Plugin):
    """Structured output, hints and an image, through a real registry."""

    plugin_id = "rich"

    @llm_tool(title="Current weather", read_only=True, idempotent=True, open_world=True)
    def reading(self, city: str, broken: bool = False) -> Reading:
        """Current weather of a city."""
        if broken:  # breaks its own output_schema: the caller refuses it
            return {"city": city, "temp_c": "warm"}  # type: ignore[return-value]
        return Reading(city=city, temp_c=21.5)

    @llm_tool(title="Weekly chart", metadata={"category": "charts"})
    def chart(self, days: int) -> list[Any]:
        """A chart of the last days' temperatures."""
        return [{"days": days}, Image(png(2, 2))]


@pytest.mark.anyio
async def test_an_sdk_plugin_registers_title_hints_inferred_output_schema_and_returns_an_image(
    registry: str, stub: registry_pb2_grpc.ToolRegistryAsyncStub
) -> None:
    plugin = RichTools(registry_address=registry)
    async with plugin:
        await plugin.wait_registered(10)
        listed = {t.tool.name: t.tool for t in await list_tools(stub, source="plugin:rich")}
        reading = listed["reading"]
        assert reading.title == "Current weather"
        assert reading.annotations == tools_pb2.ToolAnnotations(
            read_only=True, idempotent=True, open_world=True
        )
        schema = from_struct(reading.output_schema)
        assert schema["properties"]["temp_c"]["description"] == "Temperature in °C"
        assert schema["required"] == ["city", "temp_c"]
        assert dict(listed["chart"].metadata) == {"category": "charts"}
        assert not listed["chart"].HasField("output_schema")  # list[Any]: not structured

        ok = await invoke(stub, "reading", {"city": "Oslo"})
        assert not ok.is_error and from_value(ok.output) == {"city": "Oslo", "temp_c": 21.5}
        broken = await invoke(stub, "reading", {"city": "Oslo", "broken": True})
        assert broken.is_error and "output.temp_c: 'warm' is not of type 'number'" in broken.error

        chart = await invoke(stub, "chart", {"days": 7})
        assert not chart.is_error and from_value(chart.output) == {"days": 7}
        [part] = chart.parts
        assert part.image.mime_type == "image/png" and part.image.data == png(2, 2)
