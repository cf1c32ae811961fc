"""C. ``ToolRegistry.Invoke`` from an external client: two hops, client → registry → plugin.

The registry runs in its own process (``toolcall registry``), the SDK plugin
in another, registered under a lease; the client sends the model's argument
string as ``raw_arguments``, as a caller holding a model's reply would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bench.payload import CALL_ID, RAW_ARGUMENTS, TOOL_NAME
from bench.scenarios import stack
from bench.scenarios.base import BenchEnv, Call, expect_output
from toolcall.clients import channel
from toolcall.jsonvalue import from_value
from toolcall.v1 import registry_pb2, registry_pb2_grpc


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    async with (
        stack.registry(env, "C-registry") as reg,
        stack.plugin(env, "C-plugin", reg.target),
        channel(reg.target) as ch,
    ):
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)

        async def call() -> registry_pb2.InvokeResponse:
            request = registry_pb2.InvokeRequest(
                name=TOOL_NAME, raw_arguments=RAW_ARGUMENTS, call_id=CALL_ID
            )
            return await stub.Invoke(request, timeout=30)

        reply = await call()
        if reply.result.is_error:
            raise RuntimeError(f"C: invoke failed: {reply.result.error}")
        expect_output(from_value(reply.result.output), "C")
        yield call
