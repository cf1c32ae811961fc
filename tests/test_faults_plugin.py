"""Faults of a plugin process: killed mid-call, hung, answering too much.

The stack is real: a registry and an LLMService in-process, the fault plugin
(an SDK plugin, tests/support/faults.py) as a separate process that is
SIGKILLed or SIGSTOPped in the middle of calls. The caller always gets an
answer within the tool's timeout, the chat still answers, and the history
keeps exactly one result per call.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from tests.support.faults import fault_stack, invoke
from toolcall import config
from toolcall.v1 import llm_pb2

pytestmark = pytest.mark.anyio

TOOL = llm_pb2.MESSAGE_ROLE_TOOL


async def test_a_plugin_killed_mid_call_fails_the_call_fast_and_the_chat_answers(
    tmp_path: Path,
) -> None:
    async with fault_stack(tmp_path, lease_ttl="2") as stack:
        chat = asyncio.create_task(stack.chat("killed", "slow echo 'hi'"))
        invoked = asyncio.create_task(invoke(stack, "slow_echo", '{"text": "direct"}'))
        await stack.wait_marker("slow_echo.started")
        await asyncio.sleep(0.2)  # both calls are in flight
        stack.signal_plugin(signal.SIGKILL)
        killed_at = time.monotonic()
        reply = await chat
        # The tool's timeout is 10 s and it would sleep 5 s: the error comes at once.
        assert time.monotonic() - killed_at < 3
        [record] = reply.tool_calls
        assert record.call.name == "slow_echo" and record.result.is_error
        assert record.result.error.startswith("UNAVAILABLE"), record.result.error
        assert reply.message.content.startswith("The tool slow_echo failed: UNAVAILABLE")
        chat_s = time.monotonic() - killed_at
        direct = await invoked
        assert direct.result.is_error and "UNAVAILABLE" in direct.result.error
        assert time.monotonic() - killed_at < 3
        print(f"SIGKILL mid-call: chat answered {chat_s * 1000:.0f} ms after the kill")
        # The turn is stored with its one failed result.
        history = await stack.history("killed")
        assert [m.role for m in history] == [
            llm_pb2.MESSAGE_ROLE_USER,
            llm_pb2.MESSAGE_ROLE_ASSISTANT,
            TOOL,
            llm_pb2.MESSAGE_ROLE_ASSISTANT,
        ]
        assert json.loads(history[2].content)["error"].startswith("UNAVAILABLE")
        # The dead plugin's lease runs out: its tools vanish, chats still answer.
        await stack.wait_tools(present=False, timeout_s=6)
        after = await stack.chat("killed", "slow echo 'again'")
        assert not after.tool_calls and "No tool matched" in after.message.content


async def test_a_hung_plugin_hits_the_deadline_and_its_late_reply_is_ignored(
    tmp_path: Path,
) -> None:
    async with fault_stack(tmp_path) as stack:
        stack.signal_plugin(signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            started = time.monotonic()
            reply = await stack.chat("hung", "echo 'first'")
            elapsed = time.monotonic() - started
            direct = await invoke(stack, "echo", '{"text": "direct"}')
        finally:
            stack.signal_plugin(signal.SIGCONT)
        # echo's timeout is 1 s: enforced by the caller, whatever the plugin does.
        assert 0.9 < elapsed < 3, elapsed
        print(f"SIGSTOP: chat answered after {elapsed * 1000:.0f} ms (tool timeout 1 s)")
        [record] = reply.tool_calls
        assert record.result.is_error
        assert record.result.error.startswith("DEADLINE_EXCEEDED"), record.result.error
        assert direct.result.is_error and direct.result.error.startswith("DEADLINE_EXCEEDED")
        # The resumed plugin now answers the stale calls; nobody listens any more.
        await asyncio.sleep(0.5)
        again = await stack.chat("hung", "echo 'second'")
        assert again.message.content == 'echo returned: {"echo": "second"}'
        tool_results = [m.content for m in await stack.history("hung") if m.role == TOOL]
        assert len(tool_results) == 2
        assert json.loads(tool_results[0])["error"].startswith("DEADLINE_EXCEEDED")
        assert json.loads(tool_results[1]) == {"echo": "second"}


async def test_an_output_over_the_message_limit_is_a_clear_error(tmp_path: Path) -> None:
    size = config.MAX_MESSAGE_BYTES + 1000
    async with fault_stack(tmp_path) as stack:
        direct = await invoke(stack, "big_output", json.dumps({"size": size}))
        assert direct.result.is_error
        assert direct.result.error.startswith("RESOURCE_EXHAUSTED")
        assert f"{config.MAX_MESSAGE_BYTES} byte message limit" in direct.result.error
        reply = await stack.chat("big", f"big output {size}")
        [record] = reply.tool_calls
        assert record.result.is_error and record.result.error.startswith("RESOURCE_EXHAUSTED")
        assert reply.message.content.startswith("The tool big_output failed: RESOURCE_EXHAUSTED")
        # Nothing is broken: the session and the plugin still work.
        assert len(await stack.history("big")) == 4
        again = await stack.chat("big", "echo 'fine'")
        assert again.message.content == 'echo returned: {"echo": "fine"}'


async def test_an_output_over_the_tool_output_limit_is_a_clear_error_and_chat_goes_on(
    tmp_path: Path,
) -> None:
    # Under the 4 MiB message limit but over the 1 MiB tool-output limit: a chat
    # reply would carry it twice (record + answer), so it is refused up front.
    size = 3 * 1024 * 1024
    async with fault_stack(tmp_path) as stack:
        direct = await invoke(stack, "big_output", json.dumps({"size": size}))
        assert direct.result.is_error
        assert direct.result.error.startswith("RESOURCE_EXHAUSTED")
        assert f"the limit is {config.MAX_TOOL_OUTPUT_BYTES} bytes" in direct.result.error
        reply = await stack.chat("near", f"big output {size}")
        [record] = reply.tool_calls
        assert record.result.is_error and "the limit is" in record.result.error
        assert reply.message.content.startswith("The tool big_output failed: RESOURCE_EXHAUSTED")
        assert len(await stack.history("near")) == 4
        # An output just under the limit still goes through, to the model and back.
        fits = config.MAX_TOOL_OUTPUT_BYTES - 64 * 1024
        ok = await stack.chat("near", f"big output {fits}")
        assert not ok.tool_calls[0].result.is_error
        assert len(await stack.history("near")) == 8
