"""A. Bare grpc.aio unary ToolCallback.Invoke with a Struct payload: the one-hop floor.

The client builds the request from the seed's body on every call, exactly as
any caller must; the server answers a prebuilt reply.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bench.payload import ARGUMENTS, CALL_ID, RAW_ARGUMENTS, TOOL_NAME
from bench.processes import running
from bench.scenarios.base import BenchEnv, Call, expect_output
from toolcall.clients import channel
from toolcall.jsonvalue import from_value, to_struct
from toolcall.v1 import callback_pb2, callback_pb2_grpc


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    async with running(
        "A-grpc-echo", ["-m", "bench.servers.grpc_echo"], log_dir=env.log_dir
    ) as srv:
        async with channel(srv.target) as ch:
            stub: callback_pb2_grpc.ToolCallbackAsyncStub = callback_pb2_grpc.ToolCallbackStub(ch)

            async def call() -> callback_pb2.ToolCallbackInvokeResponse:
                request = callback_pb2.ToolCallbackInvokeRequest(
                    name=TOOL_NAME,
                    arguments=to_struct(ARGUMENTS),
                    raw_arguments=RAW_ARGUMENTS,
                    call_id=CALL_ID,
                )
                return await stub.Invoke(request, timeout=30)

            expect_output(from_value((await call()).output), "A")
            yield call
