"""Tool outputs a plugin can send that JSON or our decoder cannot take, through the real stack.

Found by attacking a running stack (docs/reliability.md, "Hostile tool
outputs"): a plugin is any local process, so its output is hostile input
like a request is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fake_providers import FakeGemini, Reply
from tests.support.llm_env import LLMEnv, fake_gemini, llm_env, tool_plugin
from toolcall.v1 import registry_pb2

__all__ = ["fake_gemini", "tool_plugin"]

pytestmark = pytest.mark.anyio


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str, fake_gemini: FakeGemini) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, tool_plugin, gemini=fake_gemini, default_provider="gemini") as e:
        yield e


async def test_a_nan_output_is_an_error_result_and_the_session_goes_on(
    env: LLMEnv, fake_gemini: FakeGemini
) -> None:
    await env.register("nan_tool")
    fake_gemini.add(
        Reply(tool_calls=[("n1", "nan_tool", "{}")]),
        Reply(text="Noted."),
        Reply(text="Still here."),
    )
    first = await env.chat("hostile-nan", "call it")
    [record] = first.tool_calls
    assert record.result.is_error
    assert "NaN" in record.result.error and "JSON" in record.result.error
    # The next turn replays the history to the model: it must still be JSON.
    second = await env.chat("hostile-nan", "and now?")
    assert second.message.content == "Still here."

    reply = await env.registry_stub.Invoke(registry_pb2.InvokeRequest(name="nan_tool"))
    assert reply.result.is_error and "NaN" in reply.result.error


async def test_an_output_nested_past_the_decoder_limit_is_a_plain_error_result(
    env: LLMEnv, fake_gemini: FakeGemini
) -> None:
    await env.register("deep_tool")
    reply = await env.registry_stub.Invoke(registry_pb2.InvokeRequest(name="deep_tool"))
    assert reply.result.is_error
    assert "Unexpected <class" not in reply.result.error
    assert "UNKNOWN" not in reply.result.error
    assert "nested too deeply" in reply.result.error

    fake_gemini.add(Reply(tool_calls=[("d1", "deep_tool", "{}")]), Reply(text="ok"))
    chat = await env.chat("hostile-deep", "call it")
    assert "nested too deeply" in chat.tool_calls[0].result.error


async def test_arguments_too_big_for_the_plugin_request_are_refused_as_such(env: LLMEnv) -> None:
    # 2.5 MB of arguments pass Invoke's 4 MiB limit, but the plugin request
    # carries them twice (Struct and raw string): the send failed and the
    # error blamed the plugin's output ("returned more than ... limit").
    await env.register("echo_big")
    raw = '{"x": "' + "a" * 2_500_000 + '"}'
    reply = await env.registry_stub.Invoke(
        registry_pb2.InvokeRequest(name="echo_big", raw_arguments=raw), timeout=20
    )
    assert reply.result.is_error
    assert "returned" not in reply.result.error
    assert reply.result.error.startswith("INVALID_ARGUMENT: arguments")
    assert "message limit" in reply.result.error
