"""Measuring how long the event loop was kept busy: a probe task that ticks every 5 ms.

Services under test run on the test's own event loop (registry, SDK plugin,
LLMService in-process), so the probe's worst delay is the worst time one of
their callbacks held the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

TICK_S = 0.005


@dataclass
class Lag:
    worst_s: float = 0.0


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[Lag]:
    """Yields a ``Lag`` whose ``worst_s`` is the longest the loop was blocked within the block."""
    lag = Lag()

    async def probe() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lag.worst_s = max(lag.worst_s, time.perf_counter() - before - TICK_S)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    try:
        yield lag
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
