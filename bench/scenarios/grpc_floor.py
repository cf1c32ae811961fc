"""A. Bare grpc.aio unary ToolCallback.Invoke with a Struct payload: the one-hop floor.

The client builds the request from the seed's body on every call, exactly as
any caller must; the server answers a prebuilt reply. A's server runs on
gRPC's and asyncio's defaults; A-tuned's on toolcall's runtime choices
(uvloop, gRPC's iomgr poller), so the two side by side show what those
choices buy before any of toolcall's own code runs. The client is the bench
process: asyncio's loop, toolcall's gRPC settings (it imports toolcall).
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


def open_scenario(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    return _open(env, "A", "127.0.0.1:0")


def open_uds(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    """A-uds: the same over a unix socket, to show what the transport alone changes."""
    return _open(env, "A-uds", f"unix:{env.tmp_dir}/echo-a.sock")


def open_tuned(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    """A-tuned: the echo server on toolcall's event loop and gRPC settings."""
    return _open(env, "A-tuned", "127.0.0.1:0", tuned=True)


# gRPC's and asyncio's defaults, whatever the bench process itself runs with.
STOCK_ENV = {"TOOLCALL_GRPC_TUNING": "off", "GRPC_EXPERIMENTS": ""}


@contextlib.asynccontextmanager
async def _open(
    env: BenchEnv, name: str, listen: str, *, tuned: bool = False
) -> AsyncIterator[Call]:
    args = ["-m", "bench.servers.grpc_echo", listen]
    if tuned:
        args.append("--tuned")
    server_env = None if tuned else STOCK_ENV
    async with running(name, args, log_dir=env.log_dir, env=server_env) as srv:
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

            expect_output(from_value((await call()).output), name)
            yield call
