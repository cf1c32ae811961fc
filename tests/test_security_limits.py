"""Per-principal rate limits (toolcall/auth.py): RESOURCE_EXHAUSTED with a retry hint.

carol may make 2 turns and 2 tool calls a minute, dave 1 tool call (tests/support/tls.py): her
third ToolRegistry.Invoke and her third Chat are RESOURCE_EXHAUSTED with a
google.rpc.RetryInfo detail and "retry in" in the message; other principals
are not slowed. Tool calls a model makes in dave's turns count too: past the
limit the model gets an is_error result saying so, the turn still ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.llm_env import LLMEnv, llm_env, tool_plugin  # noqa: F401
from tests.support.registry import running_registry
from tests.support.tls import PRINCIPALS, principals_file
from toolcall.auth import RateLimits
from toolcall.v1 import registry_pb2

pytestmark = pytest.mark.anyio

CAROL = (("authorization", "Bearer carol-token"),)
BOB = (("authorization", "Bearer bob-token"),)


def retry_delay_s(exc: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo detail")


def test_a_bucket_refills_evenly_over_the_minute() -> None:
    now = [0.0]
    limits = RateLimits(clock=lambda: now[0])
    assert limits.take("carol", "turns", 2) == 0
    assert limits.take("carol", "turns", 2) == 0
    assert limits.take("carol", "turns", 2) == pytest.approx(30.0)
    now[0] = 29.0
    assert limits.take("carol", "turns", 2) == pytest.approx(1.0)
    now[0] = 30.0
    assert limits.take("carol", "turns", 2) == 0
    assert limits.take("dave", "turns", 2) == 0  # per principal
    assert limits.take("carol", "turns", 0) == 0  # 0: unlimited


async def test_the_third_invoke_in_a_minute_is_resource_exhausted_with_a_retry_hint(
    tmp_path: Path,
) -> None:
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with running_registry(tmp_path, principals_file=path) as reg:
        invoke = registry_pb2.InvokeRequest(name="missing")
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.stub.Invoke(invoke, metadata=CAROL, timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.Invoke(invoke, metadata=CAROL, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry in" in (info.value.details() or "")
        assert 0 < retry_delay_s(info.value) <= 30
        for _ in range(5):  # bob has no limit
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.stub.Invoke(invoke, metadata=BOB, timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str) -> AsyncIterator[LLMEnv]:  # noqa: F811
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with llm_env(tmp_path, tool_plugin, principals_file=path) as e:
        yield e


async def test_the_third_chat_turn_in_a_minute_is_resource_exhausted(env: LLMEnv) -> None:
    for i in range(2):
        await env.stub.Chat(env.request(f"c{i}", "hi"), metadata=CAROL, timeout=20)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.Chat(env.request("c3", "hi"), metadata=CAROL, timeout=20)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < retry_delay_s(info.value) <= 30


async def test_tool_calls_in_a_turn_count_against_the_principals_limit(env: LLMEnv) -> None:
    dave = (("authorization", "Bearer dave-token"),)
    await env.register("echo", description="echo things")
    first = await env.stub.Chat(env.request("t1", "echo please"), metadata=dave, timeout=20)
    assert [r.call.name for r in first.tool_calls] == ["echo"]
    assert not first.tool_calls[0].result.is_error
    # dave may make one tool call a minute: the model is told, the turn still ends.
    second = await env.stub.Chat(env.request("t2", "echo please"), metadata=dave, timeout=20)
    assert second.tool_calls[0].result.is_error
    assert "RESOURCE_EXHAUSTED" in second.tool_calls[0].result.error
    assert "retry in" in second.tool_calls[0].result.error
    for i in range(3):  # bob's are unlimited
        reply = await env.stub.Chat(env.request(f"b{i}", "echo please"), metadata=BOB, timeout=20)
        assert not reply.tool_calls[0].result.is_error
