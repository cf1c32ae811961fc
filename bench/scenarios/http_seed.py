"""D. The seeds' HTTP/JSON design: httpx keep-alive POST to a FastAPI + uvicorn callback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bench.harness import CONCURRENCY
from bench.payload import CALLBACK_BODY
from bench.processes import running
from bench.scenarios.base import BenchEnv, Call, expect_output


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    async with running(
        "D-http-seed", ["-m", "bench.servers.http_seed"], log_dir=env.log_dir
    ) as srv:
        # Enough kept-alive connections for every call in flight: no reconnects.
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=srv.target, limits=limits, timeout=30) as client:

            async def call() -> Any:
                response = await client.post("/tool_invoke", json=CALLBACK_BODY)
                response.raise_for_status()
                return response.json()

            expect_output((await call())["output"], "D")
            yield call
