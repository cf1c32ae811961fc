"""Load test: many concurrent chats, each making sync and async tool calls, for a fixed time.

    python -m tests.soak --duration 10 --concurrency 16 [--json]

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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from tests.support.plugins import free_port
from toolcall.cli.stack import Stack
from toolcall.clients import channel
from toolcall.v1 import llm_pb2, llm_pb2_grpc

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

    @property
    def ok(self) -> bool:
        return (
            self.errors == 0
            and self.async_delivered == self.async_expected
            and self.duplicates == 0
            and self.chats > 0
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
                tally.expected[reply.tool_calls[0].task_id] = session
        else:
            reply = await turn(stub, session, SYNC_PROMPT, "get_weather", tally)
            if reply is not None:
                tally.sync_ms.append((time.perf_counter() - started) * 1000)


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


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def run(
    duration_s: float, concurrency: int, data_dir: Path, ping_delay_s: float = PING_DELAY_S
) -> Report:
    os.environ["TOOLCALL_PING_DELAY"] = str(ping_delay_s)
    os.environ.setdefault("TOOLCALL_LOG_LEVEL", "WARNING")
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
            started = time.monotonic()
            until = started + duration_s
            await asyncio.gather(*(worker(stub, n, until, tally) for n in range(concurrency)))
            elapsed = time.monotonic() - started
            await tally.all_delivered(timeout_s=15)  # the last pings are still running
            await asyncio.sleep(0.3)  # a duplicate would show up now
            for task in subscribers:
                task.cancel()
            await asyncio.gather(*subscribers, return_exceptions=True)
            rss = {name: rss_mib(proc.pid) for name, proc in stack.procs}
    finally:
        stack.stop()
    for task_id in set(tally.delivered) - set(tally.expected):
        tally.error(f"result of unknown task {task_id}")
    errors = tally.errors + tally.failed_tasks
    chats = len(tally.sync_ms) + len(tally.async_ms)
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
    )


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
    parser.add_argument("--data-dir", default=None, help="keep SQLite files and logs here")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1:
        parser.error("--duration must be positive and --concurrency at least 1")
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        report = asyncio.run(run(args.duration, args.concurrency, data_dir, args.ping_delay))
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
