"""B and B-uds. The LLMService's tool-dispatch hot path: ``Dispatcher.invoke``.

The bench process plays the LLMService: it holds the tool's ``ToolSpec`` (as
its Watch-fed view would) and calls ``Dispatcher.invoke(spec,
raw_arguments=...)`` with the model's argument string: parse, validate, build
the request, one gRPC hop to a real SDK plugin process, shape the result.
It does so on asyncio's loop, where the real LLMService runs on uvloop: if
anything, B is measured slower than a chat dispatches.
B dials the plugin over TCP loopback, B-uds over a unix socket. The tool is
an ``async def``; B-sync serves the same tool as a plain ``def``, which the
SDK runs in its thread pool (what that hop costs). B-img's tool returns the
same output and a 1 MiB PNG as a content part (what an image result costs).
B-traced is B with tracing on: every call's span sampled (100 %) and handed
to an in-process exporter that drops it as it ends, and its ``traceparent``
sent to the plugin; B-metrics is B with the Prometheus metrics recorded (what
docs/observability.md's costs are measured with).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench.payload import CALL_ID, RAW_ARGUMENTS, image_png
from bench.processes import running
from bench.scenarios.base import BenchEnv, Call, expect_output
from bench.servers.sdk_plugin import get_weather
from plugin_stub import tool_meta
from plugin_stub.local_tools import LocalTool
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value
from toolcall.telemetry import Telemetry
from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2


def plugin_env(env: BenchEnv) -> dict[str, str]:
    """Points the plugin's registrar at a socket no one serves: no registry in B."""
    return {"TOOLCALL_REGISTRY_ADDRESS": f"unix:{env.tmp_dir}/no-registry.sock"}


def spec_for(address: str) -> ToolSpec:
    """The spec a registry would hand out for the bench plugin's tool."""
    meta = tool_meta(get_weather)
    assert meta is not None
    definition = LocalTool.build(meta, get_weather).definition(address, "plugin:bench")
    return ToolSpec.from_definition(definition)


class DropSpans(SpanExporter):
    """An exporter that keeps nothing: the cost of tracing without a collector's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@contextlib.asynccontextmanager
async def _open(
    env: BenchEnv,
    name: str,
    listen: str,
    *,
    sync_handler: bool = False,
    image: bool = False,
    telemetry: Telemetry = Telemetry.OFF,
) -> AsyncIterator[Call]:
    args = ["-m", "bench.servers.sdk_plugin", "--address", listen]
    if sync_handler:
        args.append("--sync")
    if image:
        args.append("--image")
    async with running(name, args, log_dir=env.log_dir, env=plugin_env(env)) as plugin:
        spec = spec_for(plugin.target)
        dispatcher = Dispatcher(telemetry=telemetry)
        try:

            async def call() -> tools_pb2.ToolResult:
                return await dispatcher.invoke(spec, raw_arguments=RAW_ARGUMENTS, call_id=CALL_ID)

            result = await call()
            if result.is_error:
                raise RuntimeError(f"{name}: dispatch failed: {result.error}")
            expect_output(from_value(result.output), name)
            if image and [len(p.image.data) for p in result.parts] != [len(image_png())]:
                raise RuntimeError(f"{name}: the result does not carry the 1 MiB image")
            yield call
        finally:
            await dispatcher.close()


def open_scenario(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "B", "127.0.0.1:0")


def open_uds(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "B-uds", f"unix:{env.tmp_dir}/plugin-b.sock")


def open_traced(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    traced = Telemetry.exporting_to(DropSpans())
    return _open(env, "B-traced", "127.0.0.1:0", telemetry=traced)


def open_metrics(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "B-metrics", "127.0.0.1:0", telemetry=Telemetry(metrics=True))


def open_sync(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "B-sync", "127.0.0.1:0", sync_handler=True)


def open_image(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "B-img", "127.0.0.1:0", image=True)
