"""G. The registry at scale: does a call cost more with 10,000 tools than with 10?

Two registry processes side by side (``toolcall registry --roles
default,small``), each with its own bench SDK plugin: one holding 10 tools,
one filled to 10,000. Filler tools go into role ``default`` under one lease
(as plugins register); role ``small`` holds a handful, so a role-filtered
List should not grow with the registry. The two are timed in alternating
rounds (medians over rounds), so a burst of other load hits both alike:

* Register p50: registering one more tool (unregistered again, untimed);
* Invoke p50: ``ToolRegistry.Invoke`` of the plugin's ``get_weather``;
* List p50: ``List(role="small")``;
* each registry's resident memory (VmRSS);
* at 10 tools: Register with a schema never seen before, and Watch fan-out:
  100 watch streams open in the bench process, the time from sending a
  Register until every stream has seen its event (and until the first one
  has). All 100 streams are received by the bench process's one event loop,
  so their decoding is part of the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from bench.harness import percentile
from bench.payload import DESCRIPTION, PARAMETERS, RAW_ARGUMENTS, TOOL_NAME
from bench.processes import ServerProcess, rss_bytes
from bench.scenarios import stack
from bench.scenarios.base import BenchEnv
from toolcall.clients import auth_metadata, channel, list_all_tools
from toolcall.jsonvalue import to_struct
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

log = logging.getLogger(__name__)

SMALL, LARGE = 10, 10_000
SMALL_ROLE_TOOLS = 4  # besides get_weather, which the plugin registers for every role
WATCHERS = 100
STREAMS_PER_CHANNEL = 25
FILL_CONCURRENCY = 64
LEASE_TTL_S = 300.0
MB = 1024 * 1024
UPSERTED = registry_pb2.EVENT_TYPE_UPSERTED
REMOVED = registry_pb2.EVENT_TYPE_REMOVED

Stub: TypeAlias = "registry_pb2_grpc.ToolRegistryAsyncStub"  # exists only in the .pyi


class Registrar:
    """Registers bench tools under one lease, kept alive while the scenario runs."""

    def __init__(self, stub: Stub, callback_address: str) -> None:
        self.stub = stub
        self.callback_address = callback_address
        self.metadata = auth_metadata()
        self.lease_id = ""
        self.parameters = to_struct(PARAMETERS)

    @contextlib.asynccontextmanager
    async def leased(self) -> AsyncIterator[None]:
        reply = await self.stub.CreateLease(
            registry_pb2.CreateLeaseRequest(ttl_seconds=LEASE_TTL_S, holder="bench:G"),
            metadata=self.metadata,
        )
        self.lease_id = reply.lease_id
        keeper = asyncio.create_task(self._keep_alive(reply.ttl_seconds or LEASE_TTL_S))
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_alive(self, ttl_s: float) -> None:
        while True:
            await asyncio.sleep(ttl_s / 3)
            await self.stub.KeepAlive(
                registry_pb2.KeepAliveRequest(lease_id=self.lease_id), metadata=self.metadata
            )

    async def register(
        self, name: str, role: str = "default", parameters: dict[str, Any] | None = None
    ) -> None:
        tool = tools_pb2.ToolDefinition(
            name=name,
            description=DESCRIPTION,
            parameters=self.parameters if parameters is None else to_struct(parameters),
            callback_address=self.callback_address,
            role=role,
            source="bench:G",
        )
        reply = await self.stub.Register(
            registry_pb2.RegisterRequest(tool=tool, lease_id=self.lease_id),
            metadata=self.metadata,
            timeout=30,
        )
        if not reply.ok:
            raise RuntimeError(f"G: register {name} failed: {reply.failed_roles}")

    async def unregister(self, name: str) -> None:
        await self.stub.Unregister(
            registry_pb2.UnregisterRequest(name=name), metadata=self.metadata, timeout=30
        )

    async def fill(self, first: int, last: int) -> float:
        """Registers fillers ``first`` to ``last - 1``, 64 in flight; returns registrations/s."""
        names = iter(range(first, last))

        async def worker() -> None:
            for i in names:
                await self.register(f"bench_tool_{i:05d}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
        return (last - first) / max(time.perf_counter() - started, 1e-9)


async def p50_us(call: Callable[[int], Awaitable[Any]], samples: int) -> float:
    for i in range(max(5, samples // 10)):
        await call(i)
    times = []
    for i in range(samples):
        started = time.perf_counter_ns()
        await call(i)
        times.append((time.perf_counter_ns() - started) / 1000.0)
    return statistics.median(times)


async def measure_calls(reg: Registrar, samples: int) -> dict[str, float]:
    stub = reg.stub

    async def invoke(i: int) -> None:
        reply = await stub.Invoke(
            registry_pb2.InvokeRequest(name=TOOL_NAME, raw_arguments=RAW_ARGUMENTS), timeout=30
        )
        if reply.result.is_error:
            raise RuntimeError(f"G: invoke failed: {reply.result.error}")

    async def list_role(i: int) -> None:
        reply = await stub.List(registry_pb2.ListRequest(role="small"), timeout=30)
        if len(reply.tools) != SMALL_ROLE_TOOLS + 1:
            raise RuntimeError(f"G: List(role=small) returned {len(reply.tools)} tools")

    return {
        "register": await _register_p50_us(reg, samples),
        "invoke": await p50_us(invoke, samples),
        "list_role": await p50_us(list_role, samples),
    }


async def _register_p50_us(reg: Registrar, samples: int, *, new_schemas: bool = False) -> float:
    """Register is timed alone; each probe is removed again so the count stays put.

    Probes share the fillers' schema (a re-registration, the usual case) unless
    ``new_schemas``: then each brings a schema the registry has not seen.
    """
    times = []
    for i in range(samples):
        name = f"bench_probe_{i}"
        parameters = None
        if new_schemas:
            parameters = {**PARAMETERS, "description": f"probe {i} {time.time_ns()}"}
        started = time.perf_counter_ns()
        await reg.register(name, parameters=parameters)
        times.append((time.perf_counter_ns() - started) / 1000.0)
        await reg.unregister(name)
    return statistics.median(times)


class FanOut:
    """``WATCHERS`` Watch streams; records when each sees a given tool's event."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.pending: dict[str, tuple[asyncio.Event, list[float]]] = {}
        self._synced = 0
        self._all_synced = asyncio.Event()

    async def _watch(self, stub: Stub) -> None:
        async for event in stub.Watch(registry_pb2.WatchRequest()):
            if event.type == registry_pb2.EVENT_TYPE_SYNCED:
                self._synced += 1
                if self._synced == WATCHERS:
                    self._all_synced.set()
            else:
                entry = self.pending.get(f"{event.type}:{event.tool.tool.name}")
                if entry is not None:
                    entry[1].append(time.perf_counter())
                    if len(entry[1]) == WATCHERS:
                        entry[0].set()

    async def _everyone_sees(
        self, event_type: int, name: str, change: Callable[[str], Awaitable[None]]
    ) -> list[float]:
        """Makes ``change(name)``; returns when each watcher saw its event."""
        key = f"{event_type}:{name}"
        done = asyncio.Event()
        self.pending[key] = (done, [])
        try:
            await change(name)
            await asyncio.wait_for(done.wait(), 30)
            return self.pending[key][1]
        finally:
            del self.pending[key]

    async def run(self, reg: Registrar, reps: int) -> tuple[list[float], list[float]]:
        """Per Register: µs until the first and until the last watcher saw it."""
        channels = [channel(self.target) for _ in range(WATCHERS // STREAMS_PER_CHANNEL)]
        watchers = [
            asyncio.create_task(self._watch(registry_pb2_grpc.ToolRegistryStub(ch)))
            for ch in channels
            for _ in range(STREAMS_PER_CHANNEL)
        ]
        try:
            await asyncio.wait_for(self._all_synced.wait(), 30)
            first, last = [], []
            for rep in range(reps):
                name = f"bench_fanout_{rep}"
                started = time.perf_counter()
                seen = await self._everyone_sees(UPSERTED, name, reg.register)
                first.append((min(seen) - started) * 1e6)
                last.append((max(seen) - started) * 1e6)
                # Untimed; waiting keeps one rep's removals out of the next one's time.
                await self._everyone_sees(REMOVED, name, reg.unregister)
            return first, last
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            for ch in channels:
                await ch.close()


@contextlib.asynccontextmanager
async def _registry_with_tools(env: BenchEnv, name: str, tools: int) -> AsyncIterator[Scale]:
    """A registry process with its own SDK plugin, holding ``tools`` tools in role default."""
    async with (
        stack.registry(env, f"G-{name}-registry", roles="default,small") as registry,
        stack.plugin(env, f"G-{name}-plugin", registry.target),
        channel(registry.target) as ch,
    ):
        stub: Stub = registry_pb2_grpc.ToolRegistryStub(ch)
        reg = Registrar(stub, await _callback_address(stub))
        async with reg.leased():
            for i in range(SMALL_ROLE_TOOLS):
                await reg.register(f"bench_small_{i}", role="small")
            log.info("G: filling the %s registry to %d tools", name, tools)
            fill_per_s = await reg.fill(0, tools - 1)  # plus get_weather
            yield Scale(name, registry, reg, fill_per_s)


@dataclass(slots=True)
class Scale:
    name: str
    process: ServerProcess
    registrar: Registrar
    fill_per_s: float


async def run(env: BenchEnv, *, quick: bool = False, rounds: int = 3) -> dict[str, float]:
    """Both registries run side by side; their calls are timed in alternating rounds."""
    large = 300 if quick else LARGE
    samples = 20 if quick else 200
    reps = 5 if quick else 60
    figures: dict[str, float] = {"small_tools": SMALL, "large_tools": large}
    async with (
        _registry_with_tools(env, "small", SMALL) as small,
        _registry_with_tools(env, "large", large) as big,
    ):
        figures["fill_per_s"] = round(big.fill_per_s, 1)
        per_round: dict[str, list[float]] = {}
        for round_no in range(rounds):
            for scale in (small, big) if round_no % 2 == 0 else (big, small):
                for key, value in (await measure_calls(scale.registrar, samples)).items():
                    per_round.setdefault(f"{key}_{scale.name}_p50_us", []).append(value)
        for key, values in per_round.items():
            figures[key] = round(statistics.median(values), 1)
        figures["register_new_schema_p50_us"] = round(
            await _register_p50_us(small.registrar, samples, new_schemas=True), 1
        )
        figures["rss_small_mb"] = round(rss_bytes(small.process.pid) / MB, 1)
        figures["rss_large_mb"] = round(rss_bytes(big.process.pid) / MB, 1)
        fanout = FanOut(small.process.target)
        first, last = (sorted(t) for t in await fanout.run(small.registrar, reps))
        figures["watch_first_p50_us"] = round(percentile(first, 50), 1)
        figures["watch_fanout_p50_us"] = round(percentile(last, 50), 1)
        figures["watch_fanout_p99_us"] = round(percentile(last, 99), 1)
        figures["watchers"] = WATCHERS
    return figures


async def _callback_address(stub: Stub) -> str:
    listed, _ = await list_all_tools(stub, registry_pb2.ListRequest(role="default"), timeout_s=10)
    for entry in listed:
        if entry.tool.name == TOOL_NAME:
            return entry.tool.callback_address
    raise RuntimeError(f"G: {TOOL_NAME} is not registered")
