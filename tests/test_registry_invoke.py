"""ToolRegistry.Invoke against a real ToolCallback server: results, failures, deadlines."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import grpc
import pytest

from tests.support.registry import NUMBER_SCHEMA, running_plugin, running_registry, tool
from toolcall.cli import tools as cli_tools
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value, to_struct
from toolcall.tools import ToolSpec
from toolcall.v1 import registry_pb2, tools_pb2

pytestmark = pytest.mark.anyio


async def test_invoke_calls_the_plugin_and_counts_stats(tmp_path: Path) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address, parameters=NUMBER_SCHEMA))
        reply = await reg.stub.Invoke(
            registry_pb2.InvokeRequest(
                name="echo", arguments=to_struct({"x": 2}), call_id="c1", session_id="s1"
            )
        )
        assert not reply.result.is_error, reply.result.error
        assert from_value(reply.result.output) == {
            "args": {"x": 2},
            "raw": '{"x": 2}',
            "role": "default",
        }
        assert reply.call_id == "c1"
        assert reply.latency_ms > 0
        seen = plugin.calls[0].request
        assert (seen.call_id, seen.session_id, seen.role) == ("c1", "s1", "default")

        raw = await reg.stub.Invoke(
            registry_pb2.InvokeRequest(name="echo", raw_arguments='{"x": 1.5}')
        )
        assert from_value(raw.result.output)["args"] == {"x": 1.5}
        assert raw.call_id.startswith("call_")

        listed = await reg.stub.List(registry_pb2.ListRequest())
        stats = listed.tools[0].stats
        assert (stats.calls, stats.errors, stats.last_error) == (2, 0, "")
        assert 0 < stats.mean_latency_ms <= stats.max_latency_ms


async def test_raw_arguments_win_over_the_struct(tmp_path: Path) -> None:
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address, parameters=NUMBER_SCHEMA))
        reply = await reg.stub.Invoke(
            registry_pb2.InvokeRequest(
                name="echo", arguments=to_struct({"x": "not a number"}), raw_arguments='{"x": 3}'
            )
        )
        assert not reply.result.is_error
        assert from_value(reply.result.output)["args"] == {"x": 3}


@pytest.mark.parametrize(
    ("invoke", "expected"),
    [
        (
            registry_pb2.InvokeRequest(name="echo", arguments=to_struct({"x": "two"})),
            "'two' is not of type 'number'",
        ),
        (
            registry_pb2.InvokeRequest(name="echo", arguments=to_struct({"y": 1})),
            "'y' was unexpected",
        ),
        (registry_pb2.InvokeRequest(name="echo", raw_arguments="{not json"), "not valid JSON"),
        (registry_pb2.InvokeRequest(name="echo", raw_arguments="[1]"), "must be a JSON object"),
        (registry_pb2.InvokeRequest(name="echo"), "'x' is a required property"),
    ],
)
async def test_bad_arguments_are_an_error_result_and_never_reach_the_plugin(
    tmp_path: Path, invoke: registry_pb2.InvokeRequest, expected: str
) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address, parameters=NUMBER_SCHEMA))
        reply = await reg.stub.Invoke(invoke)
        assert reply.result.is_error
        assert reply.result.error.startswith("INVALID_ARGUMENT")
        assert expected in reply.result.error
        assert plugin.calls == []
        stats = (await reg.stub.List(registry_pb2.ListRequest())).tools[0].stats
        assert (stats.calls, stats.errors) == (1, 1)
        assert stats.last_error == reply.result.error


async def test_unreachable_plugin_is_an_error_result(tmp_path: Path) -> None:
    async with running_plugin() as (_, address):
        pass  # the port is now closed
    async with running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address))
        started = time.monotonic()
        reply = await reg.stub.Invoke(registry_pb2.InvokeRequest(name="echo"), timeout=10)
        assert reply.result.is_error
        assert reply.result.error.startswith("UNAVAILABLE")
        assert address in reply.result.error
        assert time.monotonic() - started < 5


async def test_plugin_slower_than_the_tool_timeout_is_deadline_exceeded(tmp_path: Path) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("sleep", address, timeout_seconds=0.3))
        started = time.monotonic()
        reply = await reg.stub.Invoke(
            registry_pb2.InvokeRequest(name="sleep", arguments=to_struct({"seconds": 5})),
            timeout=10,
        )
        elapsed = time.monotonic() - started
        assert reply.result.is_error
        assert reply.result.error.startswith("DEADLINE_EXCEEDED")
        assert "0.3s" in reply.result.error
        assert 0.25 < elapsed < 2
        await asyncio.wait_for(plugin.calls[0].cancelled.wait(), 2)


async def test_plugin_errors_are_error_results(tmp_path: Path) -> None:
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        await reg.register(tool("fail", address))
        await reg.register(tool("report_error", address))
        failed = await reg.stub.Invoke(registry_pb2.InvokeRequest(name="fail"))
        assert failed.result.is_error
        assert failed.result.error.startswith("INTERNAL")
        assert "plugin blew up" in failed.result.error
        reported = await reg.stub.Invoke(registry_pb2.InvokeRequest(name="report_error"))
        assert reported.result.is_error and reported.result.error == "no such city"
        listed = await reg.stub.List(registry_pb2.ListRequest())
        by_name = {t.tool.name: t.stats for t in listed.tools}
        assert by_name["report_error"].last_error == "no such city"
        assert by_name["fail"].errors == 1


async def test_caller_deadline_shorter_than_tool_timeout_bounds_the_plugin_call(
    tmp_path: Path,
) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("sleep", address, timeout_seconds=30))
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.Invoke(
                registry_pb2.InvokeRequest(name="sleep", arguments=to_struct({"seconds": 20})),
                timeout=0.5,
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
        remaining = plugin.calls[0].time_remaining
        # The tool allows 30 s; the plugin got the caller's 0.5 s (plus clock jitter).
        assert remaining is not None and remaining < 0.6
        await asyncio.wait_for(plugin.calls[0].cancelled.wait(), 2)


async def test_cancelling_the_caller_cancels_the_plugin_call(tmp_path: Path) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("sleep", address))
        call = reg.stub.Invoke(
            registry_pb2.InvokeRequest(name="sleep", arguments=to_struct({"seconds": 20}))
        )
        await asyncio.wait_for(plugin.started.wait(), 5)
        assert not plugin.calls[0].cancelled.is_set()
        call.cancel()
        await asyncio.wait_for(plugin.calls[0].cancelled.wait(), 2)
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_unknown_tool_or_role_is_not_found(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await reg.register(tool("only_a", role="a"))
        for request, words in [
            (registry_pb2.InvokeRequest(name="ghost"), ["'ghost'", "any role"]),
            (registry_pb2.InvokeRequest(name="only_a", role="b"), ["'only_a'", "'b'"]),
            (registry_pb2.InvokeRequest(name="only_a", role="zz"), ["'zz'", "a, b"]),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.stub.Invoke(request)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            for word in words:
                assert word in (info.value.details() or "")


async def test_role_picks_that_roles_definition(tmp_path: Path) -> None:
    async with (
        running_plugin() as (plugin, address),
        running_registry(tmp_path, roles=["a", "b"]) as reg,
    ):
        await reg.register(tool("echo", address))
        await reg.register(tool("echo", address, role="b", parameters=NUMBER_SCHEMA))
        in_a = await reg.stub.Invoke(registry_pb2.InvokeRequest(name="echo", role="a"))
        assert not in_a.result.is_error
        assert from_value(in_a.result.output)["role"] == "a"
        in_b = await reg.stub.Invoke(registry_pb2.InvokeRequest(name="echo", role="b"))
        assert in_b.result.is_error and "'x' is a required property" in in_b.result.error
        anywhere = await reg.stub.Invoke(registry_pb2.InvokeRequest(name="echo"))
        assert from_value(anywhere.result.output)["role"] == "a"
        assert len(plugin.calls) == 2


async def test_async_mode_tools_run_to_completion_here(tmp_path: Path) -> None:
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        await reg.register(
            tool("sleep", address, mode=tools_pb2.TOOL_MODE_ASYNC, ack_message="started")
        )
        reply = await reg.stub.Invoke(
            registry_pb2.InvokeRequest(name="sleep", arguments=to_struct({"seconds": 0.1}))
        )
        assert not reply.result.is_error
        assert from_value(reply.result.output) == "slept"


async def test_stats_survive_replacement_but_not_removal(tmp_path: Path) -> None:
    async with (
        running_plugin() as (_, address),
        running_registry(tmp_path, roles=["a", "b"]) as reg,
    ):
        await reg.register(tool("echo", address))
        await reg.stub.Invoke(registry_pb2.InvokeRequest(name="echo"))

        async def calls() -> list[int]:
            listed = await reg.stub.List(registry_pb2.ListRequest())
            return [t.stats.calls for t in listed.tools]

        await reg.register(tool("echo", address, description="v2"))
        assert await calls() == [1, 1]  # shared by both roles, kept on replace
        await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="echo", role="a"))
        assert await calls() == [1]
        await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="echo"))
        await reg.register(tool("echo", address))
        assert await calls() == [0, 0]


async def test_stats_count_the_calls_made_through_invoke_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The LLMService calls plugins directly: its calls are not the registry's to count."""
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address))
        await reg.stub.Invoke(registry_pb2.InvokeRequest(name="echo", raw_arguments="{}"))
        direct = Dispatcher()  # what the LLMService's chat loop does: one hop to the plugin
        try:
            spec = ToolSpec.from_definition(tool("echo", address))
            assert not (await direct.invoke(spec, raw_arguments="{}")).is_error
        finally:
            await direct.close()
        assert len(plugin.calls) == 2
        # The dispatcher keeps no per-tool counters that nobody reads.
        assert not hasattr(direct, "stats")
        args = argparse.Namespace(role=None, source="", json=False)
        assert await cli_tools._list(reg.stub, args) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[4] == "INVOKES"
    assert row.split()[4] == "1"
