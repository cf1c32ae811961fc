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
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bench.payload import CALL_ID, RAW_ARGUMENTS, image_png
from bench.processes import running
from bench.scenarios.base import BenchEnv, Call, expect_output
from bench.servers.sdk_plugin import get_weather
from plugin_stub import tool_meta
from plugin_stub.local_tools import LocalTool
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value
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


@contextlib.asynccontextmanager
async def _open(
    env: BenchEnv, name: str, listen: str, *, sync_handler: bool = False, image: bool = False
) -> AsyncIterator[Call]:
    args = ["-m", "bench.servers.sdk_plugin", "--address", listen]
    if sync_handler:
        args.append("--sync")
    if image:
        args.append("--image")
    async with running(name, args, log_dir=env.log_dir, env=plugin_env(env)) as plugin:
        spec = spec_for(plugin.target)
        dispatcher = Dispatcher()
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


def open_sync(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "B-sync", "127.0.0.1:0", sync_handler=True)


def open_image(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "B-img", "127.0.0.1:0", image=True)
