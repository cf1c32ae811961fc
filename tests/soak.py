"""Load test: many concurrent chats, each making sync and async tool calls, for a fixed time.

    python -m tests.soak --duration 10 --concurrency 16 [--hostile] [--json]

Starts the whole stack as separate processes on ephemeral loopback ports
(``toolcall registry``, ``toolcall llm`` with the offline stand-in, and the
example weather and network plugins), then runs ``--concurrency`` workers for
``--duration`` seconds. Each worker has its own session and alternates a turn
that calls the sync ``get_weather`` tool with one that starts the async
``ping`` tool, and keeps a Subscribe stream (auto-ack) open for its
session's async results. At the end it waits for the results still running.

Reported: chats and tool calls per second, p50/p99/max latency of each kind
of turn, errors (RPC failures, tool errors, wrong tool, failed tasks: must be
0), async results delivered vs expected (must be equal) and duplicates (must
be 0), and each process's memory. Exit status 0 only when all of that holds.

``--hostile``: the second half of the run mixes hostile clients into the same
traffic (``hostile()``): messages over the gRPC limit and over the provider
request bound, malformed requests, model names outside the allow-list, deep
and oversized tool arguments (Registry.Invoke), a session fed 1 MiB messages
and read back whole, a Subscribe stream that never reads (its results must
all arrive on a later Subscribe) and floods of Subscribe streams. Each must
get its documented status (anything else counts as an error). Reported on
top: the normal turns' p50/p99 in the clean and in the hostile half, hostile
requests by kind and status, lease expiries seen on a registry Watch (must
be 0) and results lost by the stalled subscriber (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.support.plugins import free_port
from toolcall.cli.stack import Stack
from toolcall.clients import channel
from toolcall.jsonvalue import to_struct
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc

SYNC_PROMPT = "What is the weather in Paris?"
ASYNC_PROMPT = "Ping 127.0.0.1"
PING_DELAY_S = 0.2  # how long the example network plugin's simulated ping takes


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Tally:
    """What the workers saw."""

    sync_ms: list[float] = field(default_factory=list)
    async_ms: list[float] = field(default_factory=list)
    # time.monotonic() at which each turn above started (same order).
    sync_at: list[float] = field(default_factory=list)
    async_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # task id -> session
    delivered: dict[str, int] = field(default_factory=dict)  # task id -> times received
    failed_tasks: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def deliver(self, task: llm_pb2.Task) -> None:
        self.delivered[task.task_id] = self.delivered.get(task.task_id, 0) + 1
        if task.status != llm_pb2.TASK_STATUS_SUCCEEDED:
            self.failed_tasks.append(f"{task.task_id}: {task.result.error}")
        self.arrived.set()

    async def all_delivered(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    self.arrived.clear()
                    if not set(self.expected) - set(self.delivered):
                        return
                    await self.arrived.wait()


@dataclass
class Report:
    duration_s: float
    concurrency: int
    chats: int
    chats_per_s: float  # every turn makes exactly one tool call
    sync_chats: int
    async_chats: int
    sync_p50_ms: float
    sync_p99_ms: float
    sync_max_ms: float
    async_ack_p50_ms: float
    async_ack_p99_ms: float
    async_ack_max_ms: float
    errors: int
    async_expected: int
    async_delivered: int
    duplicates: int
    rss_mib: dict[str, float]
    first_errors: list[str]
    # --hostile only: the figures of hostile() (see HostileTally.report).
    hostile: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.errors == 0
            and self.async_delivered == self.async_expected
            and self.duplicates == 0
            and self.chats > 0
            and self.hostile.get("lease_expiries", 0) == 0
            and self.hostile.get("slow_subscriber_lost", 0) == 0
        )


async def subscriber(stub: llm_pb2_grpc.LLMServiceAsyncStub, session: str, tally: Tally) -> None:
    call = stub.Subscribe(llm_pb2.SubscribeRequest(session_id=session, auto_ack=True))
    try:
        async for message in call:
            tally.deliver(message.task)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            tally.error(f"Subscribe {session}: {exc.code().name}: {exc.details()}")


async def turn(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, session: str, prompt: str, tool: str, tally: Tally
) -> llm_pb2.ChatResponse | None:
    request = llm_pb2.ChatRequest(
        session_id=session, messages=[llm_pb2.ChatMessage(content=prompt)]
    )
    try:
        reply = await stub.Chat(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        tally.error(f"Chat {session}: {exc.code().name}: {exc.details()}")
        return None
    calls = [(r.call.name, r.result.is_error) for r in reply.tool_calls]
    if calls != [(tool, False)]:
        tally.error(f"Chat {session}: expected one good {tool} call, got {calls}")
        return None
    return reply


async def worker(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, n: int, until: float, tally: Tally
) -> None:
    session = f"soak-{n}"
    i = n  # stagger: half the workers start with the async turn
    while time.monotonic() < until:
        i += 1
        started = time.perf_counter()
        if i % 2:
            reply = await turn(stub, session, ASYNC_PROMPT, "ping", tally)
            if reply is not None:
                tally.async_ms.append((time.perf_counter() - started) * 1000)
                tally.async_at.append(time.monotonic())
                tally.expected[reply.tool_calls[0].task_id] = session
        else:
            reply = await turn(stub, session, SYNC_PROMPT, "get_weather", tally)
            if reply is not None:
                tally.sync_ms.append((time.perf_counter() - started) * 1000)
                tally.sync_at.append(time.monotonic())


async def warm_up(stub: llm_pb2_grpc.LLMServiceAsyncStub, timeout_s: float = 30) -> None:
    """Waits until the LLMService sees both plugins' tools (its registry view is live)."""
    deadline = time.monotonic() + timeout_s
    for prompt, tool in ((SYNC_PROMPT, "get_weather"), (ASYNC_PROMPT, "ping")):
        while True:
            probe = Tally()
            if await turn(stub, "soak-warm-up", prompt, tool, probe) is not None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the LLMService never called {tool}: {probe.errors}")
            await asyncio.sleep(0.2)


# -- hostile clients (--hostile) ---------------------------------------------------

HOSTILE_ALLOWED_MODELS = "rules-v1"  # the offline stand-in's model
HOSTILE_SUBSCRIBE_BUFFER = "16"
HOSTILE_MAX_REQUEST_BYTES = str(2 * 1024 * 1024)
BIG_CHANNEL = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
MIB = 1024 * 1024

# Kind -> the statuses it may get; anything else is an error.
EXPECTED: dict[str, set[str]] = {
    "over_grpc_limit": {"RESOURCE_EXHAUSTED"},
    "over_request_bound": {"INVALID_ARGUMENT"},
    "malformed": {"INVALID_ARGUMENT"},
    "bad_model": {"INVALID_ARGUMENT"},
    "deep_arguments": {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"},
    "huge_history": {"OK"},
    "read_huge_history": {"OK"},
    "subscribe_flood": {"OK", "RESOURCE_EXHAUSTED"},
    "slow_subscriber_pings": {"OK"},
}


@dataclass
class HostileTally:
    statuses: Counter[str] = field(default_factory=Counter)  # "kind: CODE" -> count
    errors: list[str] = field(default_factory=list)
    lease_expiries: int = 0
    slow_expected: set[str] = field(default_factory=set)
    slow_redelivered: set[str] = field(default_factory=set)
    slow_dropped_with: str = ""

    def saw(self, kind: str, code: str, details: str = "") -> None:
        self.statuses[f"{kind}: {code}"] += 1
        if code not in EXPECTED[kind]:
            self.errors.append(f"hostile {kind}: {code}: {details[:200]}")

    async def call(self, kind: str, rpc: Any) -> Any:
        try:
            reply = await rpc
        except grpc.aio.AioRpcError as exc:
            self.saw(kind, exc.code().name, exc.details() or "")
            return None
        self.saw(kind, "OK")
        return reply

    def report(self) -> dict[str, Any]:
        return {
            "requests": sum(self.statuses.values()),
            "statuses": dict(sorted(self.statuses.items())),
            "slow_subscriber_results": len(self.slow_expected),
            "slow_subscriber_lost": len(self.slow_expected - self.slow_redelivered),
            "slow_subscriber_dropped_with": self.slow_dropped_with,
        }


def deep_json(levels: int) -> str:
    return '{"city": ' + "[" * levels + "]" * levels + "}"


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"city": "Paris"}
    for _ in range(levels):
        value = {"city": value}
    return value


def chat_request(session: str, text: str, **kw: Any) -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(
        session_id=session, messages=[llm_pb2.ChatMessage(content=text)], **kw
    )


MALFORMED = [
    chat_request("a b", "hi"),
    chat_request("x" * 129, "hi"),
    chat_request("s\n", "hi"),
    llm_pb2.ChatRequest(session_id="hostile-m"),
    chat_request("hostile-m", "   "),
    chat_request("hostile-m", "hi", temperature=7.0),
    chat_request("hostile-m", "hi", max_tool_rounds=1000),
    chat_request("hostile-m", "hi", provider="claude"),
    chat_request("hostile-m", "hi", role="no-such-role"),
    llm_pb2.ChatRequest(
        session_id="hostile-m",
        messages=[llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_TOOL, content="{}")],
    ),
]


async def hostile_loop(until: float, pause_s: float, body: Any) -> None:
    i = 0
    while time.monotonic() < until:
        await body(i)
        i += 1
        await asyncio.sleep(pause_s)


async def hostile(
    llm_address: str, registry_address: str, until: float, tally: HostileTally
) -> None:
    """Hostile clients until ``until``; every request's status is checked."""
    async with (
        grpc.aio.insecure_channel(llm_address, options=BIG_CHANNEL) as lch,
        grpc.aio.insecure_channel(registry_address, options=BIG_CHANNEL) as rch,
    ):
        llm: llm_pb2_grpc.LLMServiceAsyncStub = llm_pb2_grpc.LLMServiceStub(lch)
        registry: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(rch)
        words = ("lorem ipsum dolor sit amet " * (MIB // 27 + 1))[:MIB]

        async def over_limits(i: int) -> None:
            if i % 2:
                big = chat_request("hostile-big", "x" * (4 * MIB + 100))
                await tally.call("over_grpc_limit", llm.Chat(big, timeout=30))
            else:  # under the gRPC limit, over HOSTILE_MAX_REQUEST_BYTES
                near = chat_request("hostile-big", "y" * (3 * MIB))
                await tally.call("over_request_bound", llm.Chat(near, timeout=30))

        async def malformed(i: int) -> None:
            await tally.call("malformed", llm.Chat(MALFORMED[i % len(MALFORMED)], timeout=30))
            model = "gpt-evil" if i % 2 else "m" * 300
            bad = chat_request("hostile-m", SYNC_PROMPT, model=model)
            await tally.call("bad_model", llm.Chat(bad, timeout=30))

        async def deep(i: int) -> None:
            kind = i % 3
            if kind == 0:
                r = registry_pb2.InvokeRequest(name="get_weather", raw_arguments=deep_json(50_000))
            elif kind == 1:
                r = registry_pb2.InvokeRequest(name="get_weather", arguments=to_struct(nested(25)))
            else:
                r = registry_pb2.InvokeRequest(
                    name="get_weather", raw_arguments=json.dumps({"city": "z" * (3 * MIB)})
                )
            await tally.call("deep_arguments", registry.Invoke(r, timeout=30))

        async def huge_history(i: int) -> None:
            r = chat_request("hostile-huge", f"{i} {words}")
            await tally.call("huge_history", llm.Chat(r, timeout=30))
            if i % 4 == 3:
                read = llm_pb2.GetHistoryRequest(session_id="hostile-huge")
                await tally.call("read_huge_history", llm.GetHistory(read, timeout=30))

        async def subscribe_flood(i: int) -> None:
            streams = [
                llm.Subscribe(llm_pb2.SubscribeRequest(session_id="hostile-flood"))
                for _ in range(20)
            ]
            for stream in streams:
                try:
                    await asyncio.wait_for(stream.wait_for_connection(), 5)
                    tally.saw("subscribe_flood", "OK")
                except grpc.aio.AioRpcError as exc:
                    tally.saw("subscribe_flood", exc.code().name, exc.details() or "")
                except TimeoutError:
                    tally.saw("subscribe_flood", "TIMEOUT")
            for stream in streams:
                stream.cancel()

        # A subscriber that never reads, on a session that keeps making results.
        stalled = llm.Subscribe(llm_pb2.SubscribeRequest(session_id="hostile-slow"))

        async def slow_pings(i: int) -> None:
            ping = chat_request("hostile-slow", ASYNC_PROMPT)
            reply = await tally.call("slow_subscriber_pings", llm.Chat(ping, timeout=30))
            if reply is not None:
                tally.slow_expected.update(r.task_id for r in reply.tool_calls if r.task_id)

        await asyncio.gather(
            hostile_loop(until, 0.5, over_limits),
            hostile_loop(until, 0.05, malformed),
            hostile_loop(until, 0.2, deep),
            hostile_loop(until, 0.5, huge_history),
            hostile_loop(until, 1.0, subscribe_flood),
            hostile_loop(until, 0.02, slow_pings),
        )
        await asyncio.sleep(PING_DELAY_S * 5)  # the last pings finish
        try:
            async with asyncio.timeout(2):
                while True:  # whatever the stalled stream holds, and its end
                    await stalled.read()
        except grpc.aio.AioRpcError as exc:
            tally.slow_dropped_with = exc.code().name
        except TimeoutError:
            tally.slow_dropped_with = "still open"
        stalled.cancel()
        # Nothing lost: a new subscriber gets every result the stalled one was due.
        again = llm.Subscribe(llm_pb2.SubscribeRequest(session_id="hostile-slow", auto_ack=True))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                async for message in again:
                    tally.slow_redelivered.add(message.task.task_id)
                    if tally.slow_expected <= tally.slow_redelivered:
                        break
        again.cancel()


async def watch_leases(address: str, tally: HostileTally) -> None:
    """Counts tools removed because their plugin's lease expired (the plugins starved)."""
    async with channel(address) as ch:
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for event in stub.Watch(registry_pb2.WatchRequest()):
                if event.type == registry_pb2.EVENT_TYPE_REMOVED and "expired" in event.reason:
                    tally.lease_expiries += 1


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def run(
    duration_s: float,
    concurrency: int,
    data_dir: Path,
    ping_delay_s: float = PING_DELAY_S,
    with_hostile: bool = False,
) -> Report:
    os.environ["TOOLCALL_PING_DELAY"] = str(ping_delay_s)
    os.environ.setdefault("TOOLCALL_LOG_LEVEL", "WARNING")
    if with_hostile:
        os.environ["TOOLCALL_ALLOWED_MODELS"] = HOSTILE_ALLOWED_MODELS
        os.environ["TOOLCALL_SUBSCRIBE_BUFFER"] = HOSTILE_SUBSCRIBE_BUFFER
        os.environ["TOOLCALL_MAX_REQUEST_BYTES"] = HOSTILE_MAX_REQUEST_BYTES
    hostile_tally = HostileTally()
    hostile_figures: dict[str, Any] = {}
    hostile_from = float("inf")
    stack = Stack(
        registry_address=f"127.0.0.1:{free_port()}",
        llm_address=f"127.0.0.1:{free_port()}",
        data_dir=data_dir,
    )
    try:
        await stack.start()
        async with channel(stack.llm_address) as ch:
            stub: llm_pb2_grpc.LLMServiceAsyncStub = llm_pb2_grpc.LLMServiceStub(ch)
            await warm_up(stub)
            tally = Tally()
            subscribers = [
                asyncio.create_task(subscriber(stub, f"soak-{n}", tally))
                for n in range(concurrency)
            ]
            watcher = asyncio.create_task(watch_leases(stack.registry_address, hostile_tally))
            started = time.monotonic()
            until = started + duration_s
            workers = [worker(stub, n, until, tally) for n in range(concurrency)]
            if with_hostile:  # the second half of the run
                hostile_from = started + duration_s / 2
                workers.append(hostile_process(stack, hostile_from, until, hostile_figures))
            await asyncio.gather(*workers)
            elapsed = time.monotonic() - started
            await tally.all_delivered(timeout_s=15)  # the last pings are still running
            await asyncio.sleep(0.3)  # a duplicate would show up now
            for task in [*subscribers, watcher]:
                task.cancel()
            await asyncio.gather(*subscribers, watcher, return_exceptions=True)
            rss = {name: rss_mib(proc.pid) for name, proc in stack.procs}
    finally:
        stack.stop()
    for task_id in set(tally.delivered) - set(tally.expected):
        tally.error(f"result of unknown task {task_id}")
    errors = tally.errors + tally.failed_tasks + hostile_figures.pop("errors", [])
    chats = len(tally.sync_ms) + len(tally.async_ms)
    if with_hostile:
        hostile_figures["lease_expiries"] = hostile_tally.lease_expiries
        hostile_figures |= phase_latencies(tally, hostile_from)
    return Report(
        duration_s=round(elapsed, 2),
        concurrency=concurrency,
        chats=chats,
        chats_per_s=round(chats / elapsed, 1),
        sync_chats=len(tally.sync_ms),
        async_chats=len(tally.async_ms),
        sync_p50_ms=round(percentile(tally.sync_ms, 0.5), 2),
        sync_p99_ms=round(percentile(tally.sync_ms, 0.99), 2),
        sync_max_ms=round(max(tally.sync_ms, default=0), 2),
        async_ack_p50_ms=round(percentile(tally.async_ms, 0.5), 2),
        async_ack_p99_ms=round(percentile(tally.async_ms, 0.99), 2),
        async_ack_max_ms=round(max(tally.async_ms, default=0), 2),
        errors=len(errors),
        async_expected=len(tally.expected),
        async_delivered=len(set(tally.delivered) & set(tally.expected)),
        duplicates=sum(n - 1 for n in tally.delivered.values()),
        rss_mib=rss,
        first_errors=errors[:5],
        hostile=hostile_figures,
    )


def run_hostile(
    llm_address: str, registry_address: str, start: float, until: float
) -> dict[str, Any]:
    """In a process of its own: its CPU (building 4 MiB requests) stays out of the
    normal workers' event loop, so their latency measures the services only."""

    async def go() -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start - time.monotonic()))  # CLOCK_MONOTONIC: system-wide
        tally = HostileTally()
        await hostile(llm_address, registry_address, until, tally)
        return tally.report() | {"errors": tally.errors}

    return asyncio.run(go())


async def hostile_process(stack: Stack, start: float, until: float, out: dict[str, Any]) -> None:
    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs gRPC
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        figures = await asyncio.get_running_loop().run_in_executor(
            pool, run_hostile, stack.llm_address, stack.registry_address, start, until
        )
    out.update(figures)


def phase_latencies(tally: Tally, hostile_from: float) -> dict[str, float]:
    """p50/p99 of the normal turns that ended before and after the hostile clients started."""
    out: dict[str, float] = {}
    for kind, values, ends in (
        ("sync", tally.sync_ms, tally.sync_at),
        ("async_ack", tally.async_ms, tally.async_at),
    ):
        clean = [v for v, t in zip(values, ends, strict=True) if t < hostile_from]
        mixed = [v for v, t in zip(values, ends, strict=True) if t >= hostile_from]
        for phase, vs in (("clean", clean), ("hostile", mixed)):
            out[f"{kind}_{phase}_chats"] = len(vs)
            out[f"{kind}_{phase}_p50_ms"] = round(percentile(vs, 0.5), 2)
            out[f"{kind}_{phase}_p99_ms"] = round(percentile(vs, 0.99), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of load (default 12)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="concurrent chat sessions (default 16)"
    )
    parser.add_argument(
        "--ping-delay",
        type=float,
        default=PING_DELAY_S,
        help=f"seconds each async ping takes (default {PING_DELAY_S})",
    )
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="mix hostile clients into the second half of the run (see the module docstring)",
    )
    parser.add_argument("--data-dir", default=None, help="keep SQLite files and logs here")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1:
        parser.error("--duration must be positive and --concurrency at least 1")
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        report = asyncio.run(
            run(args.duration, args.concurrency, data_dir, args.ping_delay, args.hostile)
        )
    finally:
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(asdict(report) | {"ok": report.ok}))
    else:
        for key, value in asdict(report).items():
            print(f"{key:18} {value}")
        print("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
