"""J and K: the HTTP edge of issue 15, beside D (the seeds' HTTP/JSON design).

J. A chat's dispatch to an HTTP callback plugin: ``Dispatcher.invoke(spec,
raw_arguments=...)`` (parse, validate, one HTTP POST of the callback body,
shape the result), as scenario B does for a gRPC plugin. The plugin is D's
own FastAPI server: J is D's exchange plus everything toolcall adds.

K. A curl user's ``ToolRegistry.Invoke`` through the gateway's JSON
transcoding: httpx POST ``/v1/toolcall.v1.ToolRegistry/Invoke`` → gateway →
registry (gRPC) → SDK plugin (gRPC), each in its own process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bench.harness import CONCURRENCY
from bench.payload import ARGUMENTS, CALL_ID, DESCRIPTION, PARAMETERS, RAW_ARGUMENTS, TOOL_NAME
from bench.processes import free_port, running
from bench.scenarios import stack
from bench.scenarios.base import BenchEnv, Call, expect_output
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value, to_struct
from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2


def http_spec(url: str) -> ToolSpec:
    d = tools_pb2.ToolDefinition(
        name=TOOL_NAME, description=DESCRIPTION, callback_address=url, source="bench"
    )
    d.parameters.CopyFrom(to_struct(PARAMETERS))
    return ToolSpec.from_definition(d)


@contextlib.asynccontextmanager
async def open_dispatch(env: BenchEnv) -> AsyncIterator[Call]:
    async with running(
        "J-http-plugin", ["-m", "bench.servers.http_seed"], log_dir=env.log_dir
    ) as srv:
        spec = http_spec(f"{srv.target}/tool_invoke")
        dispatcher = Dispatcher()
        try:

            async def call() -> tools_pb2.ToolResult:
                return await dispatcher.invoke(spec, raw_arguments=RAW_ARGUMENTS, call_id=CALL_ID)

            result = await call()
            if result.is_error:
                raise RuntimeError(f"J: dispatch failed: {result.error}")
            expect_output(from_value(result.output), "J")
            yield call
        finally:
            await dispatcher.close()


@contextlib.asynccontextmanager
async def open_transcoded(env: BenchEnv) -> AsyncIterator[Call]:
    url = f"http://127.0.0.1:{free_port()}"
    address = url.removeprefix("http://")
    async with (
        stack.registry(env, "K-registry") as reg,
        stack.plugin(env, "K-plugin", reg.target),
    ):
        args = [*stack.CLI, "gateway", "--address", address, "--registry", reg.target]
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        body = {"name": TOOL_NAME, "arguments": ARGUMENTS, "call_id": CALL_ID}
        async with (
            running("K-gateway", args, log_dir=env.log_dir, healthy_at=url),
            httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client,
        ):

            async def call() -> Any:
                response = await client.post("/v1/toolcall.v1.ToolRegistry/Invoke", json=body)
                response.raise_for_status()
                result = response.json()["result"]
                if result.get("is_error"):
                    raise RuntimeError(f"K: invoke failed: {result.get('error')}")
                return result["output"]

            expect_output(await call(), "K")
            yield call
