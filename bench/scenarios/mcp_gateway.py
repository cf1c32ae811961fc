"""H. An MCP host calling a toolcall plugin: MCP client → ``toolcall gateway`` /mcp → SDK plugin.

Beside E (the same tool served by the MCP SDK's own server): what the bridge
costs an MCP host. The registry, the SDK plugin (registered under a lease)
and the gateway each run in their own process; one MCP session, streamable
HTTP, the protocol version the client and server negotiate (2026-07-28).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import mcp

from bench.payload import ARGUMENTS, TOOL_NAME
from bench.processes import free_port, running
from bench.scenarios import stack
from bench.scenarios.base import BenchEnv, Call, expect_output


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    url = f"http://127.0.0.1:{free_port()}"
    address = url.removeprefix("http://")
    async with (
        stack.registry(env, "H-registry") as reg,
        stack.plugin(env, "H-plugin", reg.target),
    ):
        args = [*stack.CLI, "gateway", "--address", address, "--registry", reg.target]
        async with (
            running("H-gateway", args, log_dir=env.log_dir, healthy_at=url),
            mcp.Client(f"{url}/mcp") as client,
        ):

            async def call() -> Any:
                result = await client.call_tool(TOOL_NAME, ARGUMENTS)
                if result.is_error:
                    raise RuntimeError(f"H: MCP tool call failed: {result.content}")
                return result.structured_content

            expect_output(await call(), "H")
            yield call
