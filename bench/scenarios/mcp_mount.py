"""I. A chat's tool dispatch to a mounted MCP server: ``Dispatcher.invoke`` → mount → stdio.

As in B, the bench process plays the LLMService: it holds the tool's
``ToolSpec`` (here read from the registry, where the mount registered it) and
calls ``Dispatcher.invoke`` with the model's argument string. The call goes
one gRPC hop to the mount (bench/servers/mcp_mount.py, the code of
``toolcall mcp mount``), which makes one MCP ``tools/call`` over stdio to
E's MCP SDK server. Compare with E (an MCP client calling that server over
streamable HTTP). The MCP server is the mount's child: its CPU is not in
the scenario's server figures.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bench.payload import CALL_ID, RAW_ARGUMENTS, TOOL_NAME
from bench.processes import running
from bench.scenarios import stack
from bench.scenarios.base import BenchEnv, Call, expect_output
from toolcall.clients import channel, list_all_tools
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value
from toolcall.tools import ToolSpec
from toolcall.v1 import registry_pb2_grpc, tools_pb2


async def registered_spec(registry_address: str) -> ToolSpec:
    async with channel(registry_address) as ch:
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
        listed, _ = await list_all_tools(stub, timeout_s=5)
    (found,) = {t.tool.name: t.tool for t in listed if t.tool.name == TOOL_NAME}.values()
    return ToolSpec.from_definition(found)


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    async with stack.registry(env, "I-registry") as reg:
        mount_env = {"TOOLCALL_REGISTRY_ADDRESS": reg.target}
        args = ["-m", "bench.servers.mcp_mount"]
        async with running("I-mount", args, log_dir=env.log_dir, env=mount_env):
            await stack.wait_listed(reg.target, TOOL_NAME, timeout_s=30)
            spec = await registered_spec(reg.target)
            dispatcher = Dispatcher()
            try:

                async def call() -> tools_pb2.ToolResult:
                    return await dispatcher.invoke(
                        spec, raw_arguments=RAW_ARGUMENTS, call_id=CALL_ID
                    )

                result = await call()
                if result.is_error:
                    raise RuntimeError(f"I: dispatch failed: {result.error}")
                expect_output(from_value(result.output), "I")
                yield call
            finally:
                await dispatcher.close()
