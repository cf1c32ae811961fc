"""Traces, metrics and JSON logs (toolcall/telemetry.py), on real services.

Spans go to an in-memory exporter; ``/metrics`` is read over HTTP and parsed
with prometheus_client's own text parser. The counters are per process, so
the metric tests compare a scrape before a known workload with one after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import grpc
import mcp
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from llm_service import LLMServiceHost
from plugin_stub import Plugin, llm_tool
from registry_service import RegistrySettings, start_registry
from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.gateway import GatewayProcess
from tests.support.llm_env import fake_openai, llm_settings, running_llm, tool_plugin, user
from tests.support.plugins import free_port
from tests.support.registry import NUMBER_SCHEMA, running_plugin, running_registry, tool
from toolcall import config
from toolcall.cli import stack as cli_stack
from toolcall.clients import channel
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value, to_struct
from toolcall.serving import setup_logging
from toolcall.telemetry import JsonFormatter, Telemetry, extract, traceparent
from toolcall.tools import ToolSpec
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

__all__ = ["fake_openai", "tool_plugin"]

pytestmark = pytest.mark.anyio

MODEL = "gpt-4o-mini"  # the OpenAI provider's default model


@dataclasses.dataclass
class Stack:
    registry: registry_pb2_grpc.ToolRegistryAsyncStub
    llm: llm_pb2_grpc.LLMServiceAsyncStub
    host: LLMServiceHost


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path,
    plugin: str,
    openai: FakeOpenAI,
    *,
    llm: Telemetry,
    registry: Telemetry = Telemetry.OFF,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """A registry and an LLMService in-process, each with its own Telemetry."""
    reg = await start_registry(
        RegistrySettings(
            address="127.0.0.1:0",
            data_path=tmp_path / "registry.sqlite3",
            grace_s=0.2,
            telemetry=registry,
        )
    )
    try:
        settings = llm_settings(
            tmp_path,
            reg.target,
            openai_base_url=openai.base_url,
            default_provider="openai",
            telemetry=llm,
            **overrides,
        )
        async with (
            running_llm(settings) as host,
            channel(reg.target) as rch,
            channel(host.target) as lch,
        ):
            registry_stub = registry_pb2_grpc.ToolRegistryStub(rch)
            for name, mode in (
                ("echo_a", tools_pb2.TOOL_MODE_SYNC),
                ("trace_b", tools_pb2.TOOL_MODE_SYNC),
                ("sleep_bg", tools_pb2.TOOL_MODE_ASYNC),
            ):
                definition = tools_pb2.ToolDefinition(
                    name=name,
                    description=f"test tool {name}",
                    callback_address=plugin,
                    source="test",
                    mode=mode,
                )
                reply = await registry_stub.Register(registry_pb2.RegisterRequest(tool=definition))
                assert reply.ok, reply
                assert await host.view.wait_for("default", name, timeout_s=5)
            yield Stack(registry_stub, llm_pb2_grpc.LLMServiceStub(lch), host)
    finally:
        await reg.stop()


def chat(session: str) -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(session_id=session, messages=[user("go")])


async def spans_named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    """The finished spans whose name starts with ``prefix``, once there is one."""
    with anyio.fail_after(5):
        while True:
            found = [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]
            if found:
                return found
            await anyio.sleep(0.02)  # the exporter has no event to wait on


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_a_chat_with_two_parallel_tool_calls_and_an_async_one_makes_one_span_tree(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    exporter = InMemorySpanExporter()
    fake_openai.add(
        Reply(
            tool_calls=[
                ("c1", "echo_a", "{}"),
                ("c2", "trace_b", "{}"),
                ("c3", "sleep_bg", '{"seconds": 0.05}'),
            ]
        ),
        Reply(text="done", prompt_tokens=20, completion_tokens=3),
    )
    async with stack(
        tmp_path, tool_plugin, fake_openai, llm=Telemetry.exporting_to(exporter)
    ) as env:
        llm = env.llm
        reply = await llm.Chat(chat("s1"), timeout=20)
        await spans_named(exporter, "async_task")
    spans = exporter.get_finished_spans()

    server = one(spans, "toolcall.v1.LLMService/Chat")
    assert server.parent is None and server.kind == trace.SpanKind.SERVER
    turn = one(spans, "invoke_agent toolcall")
    assert turn.parent is not None and turn.parent.span_id == server.context.span_id
    assert turn.attributes is not None
    assert turn.attributes["toolcall.rounds"] == 2
    assert turn.attributes["gen_ai.conversation.id"] == "s1"

    rounds = [s for s in spans if s.name == f"chat {MODEL}"]
    assert len(rounds) == 2
    for r in rounds:
        assert r.parent is not None and r.parent.span_id == turn.context.span_id
        assert r.attributes is not None and r.attributes["gen_ai.provider.name"] == "openai"
    finishes = sorted(tuple(r.attributes["gen_ai.response.finish_reasons"]) for r in rounds)  # type: ignore[index, arg-type]
    assert finishes == [("stop",), ("tool_calls",)]
    tokens = sorted(r.attributes["gen_ai.usage.input_tokens"] for r in rounds)  # type: ignore[index]
    assert tokens == [11, 20]

    # The two sync calls ran side by side, both children of the turn.
    echo, traced = one(spans, "execute_tool echo_a"), one(spans, "execute_tool trace_b")
    for call in (echo, traced):
        assert call.parent is not None and call.parent.span_id == turn.context.span_id
        assert call.kind == trace.SpanKind.CLIENT
        attrs = call.attributes
        assert attrs is not None
        assert attrs["toolcall.role"] == "default"
        assert attrs["toolcall.mode"] == "sync"
        assert attrs["toolcall.plugin.address"] == tool_plugin
        assert attrs["toolcall.outcome"] == "ok"
        assert attrs["toolcall.output.bytes"] > 0  # type: ignore[operator]
    assert echo.start_time < traced.end_time and traced.start_time < echo.end_time  # type: ignore[operator]

    # The plugin (generated stubs only) got the traceparent of its own call's span.
    record = next(r for r in reply.tool_calls if r.call.name == "trace_b")
    assert from_value(record.result.output) == {"traceparent": traceparent(traced.context)}

    # The async task: a trace of its own, linked to the turn; its call inside it.
    task = one(spans, "async_task sleep_bg")
    assert task.parent is None
    assert [link.context.span_id for link in task.links] == [turn.context.span_id]
    assert task.attributes is not None and task.attributes["toolcall.task.status"] == "succeeded"
    background = one(spans, "execute_tool sleep_bg")
    assert background.parent is not None and background.parent.span_id == task.context.span_id
    assert background.attributes is not None and background.attributes["toolcall.mode"] == "async"


async def test_a_clients_traceparent_continues_through_chat(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    exporter = InMemorySpanExporter()
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    sent = f"00-{trace_id:032x}-{parent_id:016x}-01"
    fake_openai.add(Reply(tool_calls=[("c1", "trace_b", "{}")]), Reply(text="done"))
    async with stack(
        tmp_path, tool_plugin, fake_openai, llm=Telemetry.exporting_to(exporter)
    ) as env:
        llm = env.llm
        reply = await llm.Chat(chat("s2"), metadata=(("traceparent", sent),), timeout=20)
    spans = exporter.get_finished_spans()
    server = one(spans, "toolcall.v1.LLMService/Chat")
    assert server.parent is not None and server.parent.span_id == parent_id
    assert server.parent.is_remote
    assert {s.context.trace_id for s in spans} == {trace_id}
    # ...and on to the plugin, in the same trace.
    seen = from_value(reply.tool_calls[0].result.output)["traceparent"]  # type: ignore[index]
    assert seen.split("-")[1] == f"{trace_id:032x}"


def scrape(port: int | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` (on a loopback port, or at a URL), parsed with
    prometheus_client's text parser."""
    url = port if isinstance(port, str) else f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scraped(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``scrape`` from a thread: the services of the test run on this loop, and a
    refused RPC's status reaches the client before its server side has recorded it."""
    return await anyio.to_thread.run_sync(scrape, port)


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_count_a_known_workload_exactly_and_never_by_a_made_up_tool_name(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    llm_tel = Telemetry(metrics=True, metrics_address="127.0.0.1:0")
    fake_openai.add(
        # 1: two calls in one round, then an answer.
        Reply(tool_calls=[("c1", "echo_a", "{}"), ("c2", "echo_a", "{}")]),
        Reply(text="one"),
        # 2: a tool the model made up, then an answer.
        Reply(tool_calls=[("c1", "no_such_tool_x9", "{}")]),
        Reply(text="two"),
        # 3: max_tool_rounds 1, and the model keeps calling: stopped at the limit.
        Reply(tool_calls=[("c1", "echo_a", "{}")]),
        Reply(tool_calls=[("c2", "echo_a", "{}")]),
        # 4 (after the first scrapes): an async tool.
        Reply(tool_calls=[("c1", "sleep_bg", '{"seconds": 0.01}')]),
        Reply(text="started"),
    )
    async with stack(
        tmp_path, tool_plugin, fake_openai, llm=llm_tel, registry=Telemetry(metrics=True)
    ) as env:
        registry, llm = env.registry, env.llm
        assert env.host.metrics is not None
        host_port = env.host.metrics.port
        before = await scraped(host_port)
        await llm.Chat(chat("m1"), timeout=20)
        await llm.Chat(chat("m2"), timeout=20)
        limited = await llm.Chat(
            llm_pb2.ChatRequest(session_id="m3", messages=[user("go")], max_tool_rounds=1),
            timeout=20,
        )
        assert limited.round_limit_reached
        invoked = await registry.Invoke(
            registry_pb2.InvokeRequest(name="echo_a", arguments=to_struct({})), timeout=10
        )
        assert not invoked.result.is_error
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry.Invoke(registry_pb2.InvokeRequest(name="no_such_tool_x9"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        after = await scraped(host_port)

        started = await llm.Chat(chat("m4"), timeout=20)
        task_id = started.tool_calls[0].task_id
        with anyio.fail_after(5):
            while True:  # the task's end is counted once it has left the running set
                finished = await scraped(host_port)
                if finished[("toolcall_async_tasks_running", ())] == 0:
                    break
                await anyio.sleep(0.02)  # no event to wait on from outside
        await llm.AckTasks(llm_pb2.AckTasksRequest(session_id="m4", task_ids=[task_id]))
        acked = await scraped(host_port)

    assert delta(after, finished, "toolcall_async_tasks_started_total") == 1
    assert delta(after, finished, "toolcall_async_tasks_finished_total", status="succeeded") == 1
    background = {"tool": "sleep_bg", "path": "chat", "mode": "async", "outcome": "ok"}
    assert delta(after, finished, "toolcall_tool_call_duration_seconds_count", **background) == 1
    assert finished[("toolcall_async_results_awaiting_ack", ())] == 1
    assert acked[("toolcall_async_results_awaiting_ack", ())] == 0

    calls = "toolcall_tool_call_duration_seconds_count"
    ok = {"mode": "sync", "outcome": "ok", "tool": "echo_a"}
    assert delta(before, after, calls, path="chat", **ok) == 3
    assert delta(before, after, calls, path="invoke", **ok) == 1
    unknown = {"tool": "(unknown)", "path": "chat", "mode": "sync", "outcome": "not_found"}
    assert delta(before, after, calls, **unknown) == 1
    assert not [key for key in after if "no_such_tool_x9" in str(key)]

    assert delta(before, after, "toolcall_chat_turns_total", outcome="answered") == 2
    assert delta(before, after, "toolcall_chat_turns_total", outcome="round_limit") == 1
    assert delta(before, after, "toolcall_chat_round_limit_stops_total") == 1
    assert delta(before, after, "toolcall_chat_rounds_per_turn_count") == 3
    assert delta(before, after, "toolcall_chat_rounds_per_turn_sum") == 6
    model = {"provider": "openai", "model": MODEL}
    assert delta(before, after, "toolcall_model_tokens_total", kind="prompt", **model) == 6 * 11
    assert delta(before, after, "toolcall_model_tokens_total", kind="completion", **model) == 42
    rounds = "toolcall_model_round_duration_seconds_count"
    assert delta(before, after, rounds, finish="tool_calls", **model) == 4
    assert delta(before, after, rounds, finish="stop", **model) == 2
    rpcs = "toolcall_rpc_duration_seconds_count"
    assert delta(before, after, rpcs, method="toolcall.v1.LLMService/Chat", code="OK") == 3
    assert delta(before, after, rpcs, method="toolcall.v1.ToolRegistry/Invoke", code="OK") == 1
    invoke_refused = {"method": "toolcall.v1.ToolRegistry/Invoke", "code": "NOT_FOUND"}
    assert delta(before, after, rpcs, **invoke_refused) == 1

    # Live gauges: the registry's three tools, the LLMService's Watch stream, no lease.
    assert after[("toolcall_registry_tools", (("role", "default"),))] == 3
    assert after[("toolcall_registry_watch_streams", ())] == 1
    assert after[("toolcall_registry_leases", ())] == 0
    assert after[("toolcall_chat_turns_in_flight", ())] == 0
    assert ("process_resident_memory_bytes", ()) in after


async def test_the_sdk_runs_a_handler_inside_the_tool_call_span(tmp_path: Path) -> None:
    @llm_tool
    async def whoami() -> dict[str, str]:
        """The span the handler runs in."""
        ctx = trace.get_current_span().get_span_context()
        return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}

    @llm_tool
    def whoami_in_a_thread() -> dict[str, str]:
        """The span a plain def handler (run in the SDK's thread pool) runs in."""
        ctx = trace.get_current_span().get_span_context()
        return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}

    exporter = InMemorySpanExporter()
    dispatcher = Dispatcher(telemetry=Telemetry.exporting_to(exporter))
    plugin = Plugin(
        plugin_id="who", registry_address="127.0.0.1:9", tools=[whoami, whoami_in_a_thread]
    )
    results = {}
    try:
        async with plugin:
            for name in ("whoami", "whoami_in_a_thread"):
                spec = ToolSpec.from_definition(
                    tools_pb2.ToolDefinition(
                        name=name, description="d", callback_address=plugin.address, source="t"
                    )
                )
                results[name] = await dispatcher.invoke(spec, raw_arguments="{}")
    finally:
        await dispatcher.close()
    for name, result in results.items():
        span = one(list(exporter.get_finished_spans()), f"execute_tool {name}")
        assert from_value(result.output) == {
            "trace_id": f"{span.context.trace_id:032x}",
            "span_id": f"{span.context.span_id:016x}",
        }


def test_json_logs_are_one_object_per_line_with_the_trace_and_span_ids() -> None:
    exporter = InMemorySpanExporter()
    tracer = Telemetry.exporting_to(exporter).tracer
    assert tracer is not None
    record = logging.LogRecord("toolcall.x", logging.WARNING, __file__, 1, "hi %s", ("you",), None)
    outside = json.loads(JsonFormatter().format(record))
    assert outside["message"] == "hi you" and outside["level"] == "WARNING"
    assert "trace_id" not in outside
    with tracer.start_as_current_span("work") as span:
        line = JsonFormatter().format(record)
    assert "\n" not in line
    inside = json.loads(line)
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"


def test_an_unknown_log_format_is_a_config_error() -> None:
    with pytest.raises(config.ConfigError, match="log format 'xml'"):
        setup_logging("INFO", "xml")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",  # an all-zero trace id is invalid
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",  # so is a zero span id
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" + "\n",
        "00-0x" + "f" * 30 + "-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" * 1000,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-" + "x" * 50_000,
    ],
)
def test_a_malformed_traceparent_is_ignored_not_an_error(header: str) -> None:
    assert extract([("traceparent", header)]) is None


def test_a_valid_traceparent_becomes_a_remote_parent() -> None:
    ctx = extract([("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
    assert ctx is not None
    parent = trace.get_current_span(ctx).get_span_context()
    assert (parent.trace_id, parent.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    assert parent.is_remote and parent.trace_flags.sampled


async def test_with_telemetry_off_nothing_is_intercepted_and_no_traceparent_is_sent(
    tool_plugin: str,
) -> None:
    assert Telemetry.OFF.interceptors() == []
    dispatcher = Dispatcher()
    try:
        spec = ToolSpec.from_definition(
            tools_pb2.ToolDefinition(
                name="trace_off", description="d", callback_address=tool_plugin, source="t"
            )
        )
        result = await dispatcher.invoke(spec, raw_arguments="{}")
    finally:
        await dispatcher.close()
    assert from_value(result.output) == {"traceparent": ""}


async def test_toolcall_up_serves_the_metrics_of_each_process_where_it_says(
    tmp_path: Path,
) -> None:
    up = cli_stack.Stack(
        registry_address=f"127.0.0.1:{free_port()}",
        llm_address=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path,
        plugins=("toolcall_examples.weather_plugin",),
        mcp_servers=(),
        metrics={
            "registry": f"127.0.0.1:{free_port()}",
            "llm": f"127.0.0.1:{free_port()}",
            "weather_plugin": f"127.0.0.1:{free_port()}",
        },
    )
    try:
        await up.start()
        lines = cli_stack.metrics_lines(up)
        scraped = {}
        for name, address in up.metrics.items():
            assert any(name in line and f"http://{address}/metrics" in line for line in lines)
            scraped[name] = scrape(int(address.rpartition(":")[2]))
    finally:
        await anyio.to_thread.run_sync(up.stop)
    for samples in scraped.values():
        assert ("process_resident_memory_bytes", ()) in samples
    assert scraped["registry"][("toolcall_registry_tools", (("role", "default"),))] >= 1
    assert scraped["registry"][("toolcall_registry_leases", ())] == 1
    assert ("toolcall_chat_turns_in_flight", ()) in scraped["llm"]


async def test_the_gateway_counts_mcp_tool_calls_on_its_own_metrics_route(
    tmp_path: Path,
) -> None:
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address, parameters=NUMBER_SCHEMA, description="Echo."))
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            async with mcp.Client(gateway.mcp_url) as client:
                for x in (1, 2):
                    assert not (await client.call_tool("echo", {"x": x})).is_error
                assert (await client.call_tool("no_such_tool_q7", {})).is_error
            samples = scrape(f"{gateway.url}/metrics")
    ok = (("mode", "sync"), ("outcome", "ok"), ("path", "mcp"), ("tool", "echo"))
    assert samples[("toolcall_tool_call_duration_seconds_count", ok)] == 2
    assert not [key for key in samples if "no_such_tool_q7" in str(key)]
