"""F. A full ``LLMService.Chat`` turn with one tool round, zero-latency provider.

Registry, SDK plugin and LLMService each run in their own process (the
LLMService through ``toolcall llm --provider offline``). The offline provider
is the rule-based stand-in: no I/O, so a turn is the orchestration itself:
the Chat hop, history read and write, two provider rounds, and one direct
``Dispatcher.invoke`` to the plugin (one hop, from the Watch-fed view).

Reported: the turn's figures, plus ``provider_us`` (the offline provider's
own time for the turn's two rounds, timed in the bench process) from which
``python -m bench`` derives ``overhead_us`` = turn p50 - B p50 - provider_us,
what the loop adds per tool round.

F-observed is F with observability on in all three processes: traces (every
span sampled) exported over OTLP/gRPC to a local sink that drops them
(bench/servers/otlp_sink.py), and Prometheus metrics recorded and served.

Sessions: a pool of 64 conversations, one per call in flight (turns of one
session are serialized by the service), each growing to the service's
history cap like a long chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator

from bench.harness import CONCURRENCY
from bench.payload import TOOL_NAME
from bench.processes import free_port, running
from bench.scenarios import stack
from bench.scenarios.base import BenchEnv, Call, expect_output
from bench.scenarios.dispatch import spec_for
from llm_service.messages import Message, ToolCall
from llm_service.providers import ModelTurn, ProviderRequest
from llm_service.providers.offline import OfflineProvider
from toolcall.clients import channel
from toolcall.jsonvalue import from_value
from toolcall.v1 import llm_pb2, llm_pb2_grpc

QUESTION = "What's the weather in Beijing?"
READY_TIMEOUT_S = 15.0


class ChatCall:
    """One Chat turn per call, each on a conversation no other call is using."""

    def __init__(self, stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
        self._stub = stub
        self._sessions = deque(f"bench-f-{i}" for i in range(CONCURRENCY))

    async def __call__(self) -> llm_pb2.ChatResponse:
        session = self._sessions.popleft()
        try:
            return await self._stub.Chat(_request(session), timeout=30)
        finally:
            self._sessions.append(session)

    async def extra_figures(self) -> dict[str, float]:
        return {"provider_us": await provider_time_us()}


def _request(session: str) -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(
        session_id=session,
        provider="offline",
        messages=[llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content=QUESTION)],
    )


async def provider_time_us(samples: int = 500) -> float:
    """Median time of the offline provider's two rounds of a turn like F's."""
    provider = OfflineProvider()
    tools = [spec_for("127.0.0.1:1")]
    history = [Message("user", QUESTION), Message("assistant", "It is sunny.")] * 4
    first = [Message("system", "You can call tools."), *history, Message("user", QUESTION)]
    call = ToolCall("offline_0123456789abcdef", TOOL_NAME, '{"city": "Beijing"}')
    second = [
        *first,
        Message("assistant", "", tool_calls=[call]),
        Message("tool", '{"temp_c":22,"weather":"sunny"}', tool_call_id=call.call_id, name="x"),
    ]
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        for messages in (first, second):
            async for item in provider.generate(ProviderRequest("rules-v1", messages, tools)):
                assert isinstance(item, ModelTurn)
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


async def _wait_tool_visible(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    """The LLMService sees tools through its Watch stream: wait until it offers ours."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        reply = await stub.Chat(_request("bench-f-ready"), timeout=30)
        if reply.tool_calls:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the LLMService did not offer {TOOL_NAME} within {READY_TIMEOUT_S:g}s")


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    async with _open(env, "F") as call:
        yield call


@contextlib.asynccontextmanager
async def open_observed(env: BenchEnv) -> AsyncIterator[Call]:
    async with running(
        "F-observed-otlp", ["-m", "bench.servers.otlp_sink"], log_dir=env.log_dir
    ) as sink:
        observed = {
            "TOOLCALL_OTLP_ENDPOINT": f"http://{sink.target}",
            "TOOLCALL_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            "TOOLCALL_LLM_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            "TOOLCALL_PLUGIN_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        async with _open(env, "F-observed", observed) as call:
            yield call


@contextlib.asynccontextmanager
async def _open(
    env: BenchEnv, name: str, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Call]:
    async with (
        stack.registry(env, f"{name}-registry", extra_env=extra_env) as reg,
        stack.plugin(env, f"{name}-plugin", reg.target, extra_env=extra_env),
        stack.llm(env, f"{name}-llm", reg.target, extra_env=extra_env) as llm,
        channel(llm.target) as ch,
    ):
        stub: llm_pb2_grpc.LLMServiceAsyncStub = llm_pb2_grpc.LLMServiceStub(ch)
        await _wait_tool_visible(stub)
        call = ChatCall(stub)
        reply = await call()
        if len(reply.tool_calls) != 1 or reply.tool_calls[0].result.is_error:
            raise RuntimeError(f"{name}: expected one successful tool call, got {reply.tool_calls}")
        expect_output(from_value(reply.tool_calls[0].result.output), name)
        yield call
