"""Timing one call path: sequential latency percentiles and throughput at 64 in flight."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Call = Callable[[], Awaitable[Any]]

CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class Sample:
    """One round of one scenario."""

    p50_us: float
    p99_us: float
    seq_per_s: float
    c64_per_s: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in asdict(self).items()}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def sequential(call: Call, calls: int) -> tuple[list[float], float]:
    """Latencies (µs) of ``calls`` calls made one after another, and calls per second."""
    latencies: list[float] = []
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(calls):
        t0 = clock()
        await call()
        latencies.append((clock() - t0) / 1000.0)
    elapsed_s = (clock() - started) / 1e9
    return latencies, calls / elapsed_s


async def concurrent(call: Call, calls: int, concurrency: int = CONCURRENCY) -> float:
    """Calls per second with ``concurrency`` calls in flight until ``calls`` are done."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


def calls_made(calls: int, warmup: int) -> int:
    """How many calls ``measure`` makes in all: warm-up, sequential, concurrent."""
    return warmup + calls + max(calls, CONCURRENCY * 4)


async def measure(call: Call, *, calls: int, warmup: int) -> Sample:
    for _ in range(warmup):
        await call()
    gc.collect()
    latencies, seq_per_s = await sequential(call, calls)
    gc.collect()
    c64_per_s = await concurrent(call, calls_made(calls, warmup) - warmup - calls)
    latencies.sort()
    return Sample(
        p50_us=percentile(latencies, 50),
        p99_us=percentile(latencies, 99),
        seq_per_s=seq_per_s,
        c64_per_s=c64_per_s,
    )


def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def combine(samples: Sequence[Sample]) -> Sample:
    """The median of each figure over the rounds."""
    return Sample(
        p50_us=median_of([s.p50_us for s in samples]),
        p99_us=median_of([s.p99_us for s in samples]),
        seq_per_s=median_of([s.seq_per_s for s in samples]),
        c64_per_s=median_of([s.c64_per_s for s in samples]),
    )
