"""E. The same tool called through the MCP Python SDK over streamable HTTP, one session.

E-json: the same server answering with JSON rather than an SSE stream per
request, the mode the toolcall gateway (H) answers 2026-era requests in
(docs/mcp.md, "Speed").
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import mcp

from bench.payload import ARGUMENTS, TOOL_NAME
from bench.processes import running
from bench.scenarios.base import BenchEnv, Call, expect_output


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    async with _opened(env, "E-mcp", []) as call:
        yield call


@contextlib.asynccontextmanager
async def open_json(env: BenchEnv) -> AsyncIterator[Call]:
    async with _opened(env, "E-json-mcp", ["--json"]) as call:
        yield call


@contextlib.asynccontextmanager
async def _opened(env: BenchEnv, name: str, flags: list[str]) -> AsyncIterator[Call]:
    args = ["-m", "bench.servers.mcp_weather", *flags]
    async with running(name, args, log_dir=env.log_dir) as srv:
        async with mcp.Client(f"{srv.target}/mcp") as client:

            async def call() -> Any:
                result = await client.call_tool(TOOL_NAME, ARGUMENTS)
                if result.is_error:
                    raise RuntimeError(f"MCP tool call failed: {result.content}")
                return result.structured_content

            expect_output(await call(), "E")
            yield call
