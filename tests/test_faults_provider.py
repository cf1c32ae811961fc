"""Faults of the model provider: HTTP errors, timeouts, garbage, a dead endpoint.

The real provider SDKs talk to local servers speaking the OpenAI and Gemini
wire formats (tests/support/fake_providers.py). Whatever the provider does - in the
first round or after a tool already ran, streamed or not - the caller gets a
clear status with a readable message, the session's history is exactly what
it was, and the next turn works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import grpc
import pytest

from tests.support.fake_providers import (
    FakeGemini,
    FakeOpenAI,
    FakeServer,
    Garbage,
    HTTPError,
    Reply,
    Stall,
)
from tests.support.fuzz import assert_no_traceback
from tests.support.llm_env import LLMEnv, llm_env, tool_plugin
from tests.support.plugins import free_port
from toolcall.v1 import llm_pb2

__all__ = ["tool_plugin"]

pytestmark = pytest.mark.anyio

C = grpc.StatusCode
PROVIDER_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-scoped: one stack for the whole table


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers: dict[str, FakeServer] = {"openai": FakeOpenAI(), "gemini": FakeGemini()}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, tool_plugin: str, fakes: dict[str, Any]
) -> AsyncIterator[LLMEnv]:
    async with llm_env(
        tmp_path_factory.mktemp("provider-faults"),
        tool_plugin,
        openai=fakes["openai"],
        gemini=fakes["gemini"],
        provider_timeout_s=PROVIDER_TIMEOUT_S,
    ) as e:
        await e.register("echo_mid", description="echo")
        yield e


HTTP_FAULTS: list[tuple[Any, C]] = [
    (HTTPError(500, {"error": {"message": "upstream exploded"}}), C.UNAVAILABLE),
    (HTTPError(500, "<html>Internal Server Error</html>"), C.UNAVAILABLE),
    (HTTPError(503, {"error": {"message": "overloaded"}}), C.UNAVAILABLE),
    (HTTPError(400, {"error": {"message": "bad request"}}), C.INVALID_ARGUMENT),
    (HTTPError(401, {"error": {"message": "bad key"}}), C.UNAUTHENTICATED),
    (HTTPError(429, {"error": {"message": "slow down"}}), C.RESOURCE_EXHAUSTED),
    (HTTPError(504, {"error": {"message": "gateway timeout"}}), C.DEADLINE_EXCEEDED),
    (Stall(PROVIDER_TIMEOUT_S * 3), C.DEADLINE_EXCEEDED),
]

GARBAGE: dict[str, list[str]] = {
    "openai": [
        "this is not json",
        "",
        "[1, 2, 3]",
        "{}",
        '{"choices": []}',
        '{"choices": [{"index": 0}]}',
        '{"choices": [{"message": {"role": "assistant", "tool_calls": '
        '[{"id": "x", "type": "function", "function": {"name": 5}}]}}]}',
        '{"choices": [{"message": {"role": "assistant", "tool_calls": [{"id": "x"}]}}]}',
        '{"choices": [{"message": {"role": "assistant", "content": 5}}]}',
        '{"choices": [{"message": {"role": "assistant", "content": {"a": 1}}}]}',
        '{"choices": [{"message": {"role": "assistant", "tool_calls": [{"id": 7, "type": '
        '"function", "function": {"name": "echo_mid", "arguments": {"a": 1}}}]}}]}',
        '{"choices": [{"message": {"role": "assistant", "content": "x"}}], "usage": '
        '{"prompt_tokens": "many", "completion_tokens": null}}',
    ],
    "gemini": [
        "this is not json",
        "",
        "[1, 2, 3]",
        "{}",
        '{"candidates": []}',
        '{"candidates": [{"content": {"parts": [{"functionCall": {"name": 5}}]}}]}',
        '{"candidates": [{"content": {"parts": "nope"}}]}',
    ],
}

WHEN = [(False, False), (False, True), (True, False)]  # (after a tool ran, streamed)


def _id(when: tuple[bool, bool]) -> str:
    return ("after-a-tool" if when[0] else "first-round") + ("-stream" if when[1] else "-chat")


CASES = [
    pytest.param(
        provider,
        fault,
        {code},
        *when,
        id=f"{provider}-{type(fault).__name__}-{getattr(fault, 'status', '')}-{_id(when)}",
    )
    for provider in ("openai", "gemini")
    for fault, code in HTTP_FAULTS
    # One stall per provider is enough: each costs the provider timeout.
    for when in (WHEN[:1] if isinstance(fault, Stall) else WHEN)
] + [
    # Garbage must never be INTERNAL or UNKNOWN; an empty-but-valid answer may pass.
    pytest.param(
        provider,
        Garbage(body),
        {C.UNAVAILABLE, C.OK},
        *when,
        id=f"{provider}-garbage-{i}-{_id(when)}",
    )
    for provider, bodies in GARBAGE.items()
    for i, body in enumerate(bodies)
    for when in WHEN
]


async def turn(env: LLMEnv, session: str, provider: str, stream: bool) -> tuple[C, str]:
    try:
        if stream:
            await env.stream(session, "go", provider=provider)
        else:
            await env.chat(session, "go", provider=provider)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return C.OK, ""


def drain(server: FakeServer) -> None:
    """Empties the script, and unblocks a request still waiting for one (a turn that went on)."""
    while not server.script.empty():
        server.script.get_nowait()


async def settle(server: FakeServer, requests_before: int, added: int) -> None:
    """Waits until every request the server got has taken a scripted item.

    A turn that outlived its fault leaves a handler waiting for the next item;
    feed it something so it cannot take the next step's reply.
    """
    for _ in range(200):
        waiting = (len(server.requests) - requests_before) - (added - server.script.qsize())
        if waiting <= 0:
            drain(server)
            return
        server.add(HTTPError(503, {"error": {"message": "left over"}}))
        added += 1
        await anyio.sleep(0.01)
    raise AssertionError("the fake provider never settled")


@pytest.mark.parametrize(("provider", "fault", "codes", "mid_turn", "stream"), CASES)
async def test_provider_fault_is_a_clear_status_and_history_is_intact(
    env: LLMEnv,
    fakes: dict[str, FakeServer],
    provider: str,
    fault: Any,
    codes: set[C],
    mid_turn: bool,
    stream: bool,
) -> None:
    fake = fakes[provider]
    drain(fake)
    session = f"{provider}-{id(fault)}-{mid_turn}-{stream}"
    fake.add(Reply(text="first answer"))
    assert (await env.chat(session, "hello", provider=provider)).message.content == "first answer"
    before = await env.history(session)
    requests_before = len(fake.requests)
    if mid_turn:
        fake.add(Reply(tool_calls=[("c1", "echo_mid", "{}")]))
    fake.add(fault)
    code, details = await turn(env, session, provider, stream)
    await settle(fake, requests_before, 2 if mid_turn else 1)
    assert code in codes, f"{code.name}: {details}"
    if code != C.OK:
        assert details.strip()
        assert_no_traceback(details, code.name)
        assert await env.history(session) == before, "a failed turn changed the history"
    # The session goes on.
    fake.add(Reply(text="back again"))
    reply = await env.chat(session, "again", provider=provider)
    assert reply.message.content == "back again"
    after = await env.history(session)
    assert after[: len(before)] == before
    assert [m.content for m in after[-2:]] == ["again", "back again"]


async def test_an_unreachable_provider_is_unavailable(
    tmp_path_factory: pytest.TempPathFactory, tool_plugin: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with llm_env(
        tmp_path_factory.mktemp("dead-provider"),
        tool_plugin,
        openai_base_url=dead,
        gemini_base_url=dead,
    ) as env:
        for provider in ("openai", "gemini"):
            for stream in (False, True):
                code, details = await turn(env, "dead", provider, stream)
                assert code == C.UNAVAILABLE, (provider, stream, code, details)
                assert details.strip()
                assert_no_traceback(details)
        assert await env.history("dead") == []
        offline = await env.chat("dead", "hello", provider="offline")
        assert offline.message.role == llm_pb2.MESSAGE_ROLE_ASSISTANT
