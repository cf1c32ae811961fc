"""The Java plugin (examples/java_plugin), built by Maven from protos/, against the real services.

Through a real registry and LLMService: its tools appear; a chat calls the
sync tool; the async tool's result arrives on Subscribe; arguments that
break the schema never reach it; SIGTERM clears its tools at once, SIGKILL
lets them expire with the lease; it registers again after a ``tools
clear``, after a removal from one role, and when its lease is gone. Called
directly, it honours deadlines and cancellation, answers tool failures as
``is_error``, and passes ``toolcall plugin check``. Bench B-java runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.java_plugin import (
    BUILD_TIMEOUT_S,
    JAVA,
    MVN,
    JavaPluginProcess,
    built_jar,
    needs_build,
)
from tests.support.llm_env import LLMEnv, fake_openai, llm_env
from tests.support.plugins import REPO_ROOT, list_tools, registry_in_process, wait_for
from tests.support.registry import running_registry
from toolcall.cli.plugin_check import FAIL, PASS, run_checks, tools_from_registry
from toolcall.clients import channel
from toolcall.jsonvalue import from_value, to_struct
from toolcall.v1 import (
    callback_pb2,
    callback_pb2_grpc,
    llm_pb2,
    registry_pb2,
    registry_pb2_grpc,
)

__all__ = ["fake_openai"]

SOURCE = "plugin:java_text"
NAMES = {"text_stats", "digest"}

pytestmark = [
    pytest.mark.skipif(
        JAVA is None or MVN is None, reason="java and mvn are needed for the Java plugin test"
    ),
    # `make test` builds the jar first; run alone on a fresh clone, the first
    # test builds it (Maven, BUILD_TIMEOUT_S) and gets that much more time.
    pytest.mark.timeout(120 + (BUILD_TIMEOUT_S if needs_build() else 0)),
]


@pytest.fixture(scope="module")
def jar() -> Path:
    return built_jar()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[str]:
    async with registry_in_process(tmp_path) as target:
        yield target


@pytest.fixture
async def env(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, "", openai=fake_openai, default_provider="openai") as e:
        yield e


async def registered(
    stub: registry_pb2_grpc.ToolRegistryAsyncStub,
) -> list[registry_pb2.RegisteredTool]:
    return await wait_for(lambda: list_tools(stub, source=SOURCE), lambda t: len(t) == 2, 30)


async def in_view(env: LLMEnv) -> None:
    for name in NAMES:
        assert await env.llm.view.wait_for("default", name, timeout_s=10), f"{name} not in view"


@pytest.mark.anyio
async def test_java_plugin_tools_appear_a_chat_calls_the_sync_tool_and_bad_arguments_never_reach_it(
    jar: Path, env: LLMEnv, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    with JavaPluginProcess(env.registry.target, tmp_path) as plugin:
        tools = await registered(env.registry_stub)
        assert {t.tool.name for t in tools} == NAMES
        assert all(t.lease_id for t in tools)
        digest = next(t.tool for t in tools if t.tool.name == "digest")
        assert digest.mode == 2 and digest.ack_message  # TOOL_MODE_ASYNC
        assert digest.callback_address.startswith("127.0.0.1:")
        await in_view(env)

        fake_openai.add(
            Reply(tool_calls=[("c_ok", "text_stats", '{"text": "one two  three\\nfour"}')]),
            Reply(text="Counted."),
        )
        reply = await env.chat("j1", "count the words")
        [record] = reply.tool_calls
        assert not record.result.is_error, record.result.error
        assert from_value(record.result.output) == {"words": 4, "characters": 19, "lines": 2}

        # The LLMService checks the arguments against the plugin's schema first.
        fake_openai.add(
            Reply(tool_calls=[("c_bad", "text_stats", '{"text": 5}')]), Reply(text="Oops.")
        )
        reply = await env.chat("j1", "count this")
        [record] = reply.tool_calls
        assert record.result.is_error and record.result.error.startswith("INVALID_ARGUMENT")
        assert "call text_stats (call_id c_ok)" in plugin.log()
        assert "c_bad" not in plugin.log()


@pytest.mark.anyio
async def test_java_plugin_async_tool_result_arrives_on_subscribe(
    jar: Path, env: LLMEnv, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    with JavaPluginProcess(env.registry.target, tmp_path):
        await registered(env.registry_stub)
        await in_view(env)
        subscription = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="j2"))
        fake_openai.add(
            Reply(tool_calls=[("c_async", "digest", '{"text": "abc", "delay_ms": 300}')]),
            Reply(text="Started."),
        )
        reply = await env.chat("j2", "hash abc")
        [record] = reply.tool_calls
        assert record.task_id  # acknowledged at once; the result follows
        pushed = await asyncio.wait_for(subscription.read(), 15)
        subscription.cancel()
        assert isinstance(pushed, llm_pb2.SubscribeResponse)
        assert pushed.task.task_id == record.task_id
        assert pushed.task.status == llm_pb2.TASK_STATUS_SUCCEEDED
        assert from_value(pushed.task.result.output) == {
            "algorithm": "SHA-256",
            "hex": hashlib.sha256(b"abc").hexdigest(),
        }


@pytest.mark.anyio
async def test_java_plugin_clears_its_tools_on_sigterm_and_they_expire_after_sigkill(
    jar: Path, registry: str, tmp_path: Path
) -> None:
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        # TTL 30 s: gone at once means cleared, not expired (expiry needs >= 20 s).
        with JavaPluginProcess(registry, tmp_path / "a") as plugin:
            await registered(stub)
            stopped = time.monotonic()
            plugin.proc.send_signal(signal.SIGTERM)
            await wait_for(lambda: list_tools(stub, source=SOURCE), lambda t: not t, 15)
            assert time.monotonic() - stopped < 15
            # The JVM's exit status after a SIGTERM whose shutdown hook ran.
            assert plugin.proc.wait(10) == 128 + signal.SIGTERM
            assert "cleared 2 tools, lease revoked" in plugin.log()

        # TTL 2 s: killed without a goodbye, the tools live until the lease runs out.
        with JavaPluginProcess(registry, tmp_path / "b", lease_ttl="2") as plugin:
            await registered(stub)
            plugin.proc.kill()
            plugin.proc.wait(10)
            assert len(await list_tools(stub, source=SOURCE)) == 2
            killed = time.monotonic()
            await wait_for(lambda: list_tools(stub, source=SOURCE), lambda t: not t, 2 + 10)
            assert time.monotonic() - killed < 2 + 10


@pytest.mark.anyio
async def test_java_plugin_registers_its_tools_again_after_tools_clear_and_a_lost_lease(
    jar: Path, registry: str, tmp_path: Path
) -> None:
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        # TTL 3 s: a KeepAlive every second.
        with JavaPluginProcess(registry, tmp_path, lease_ttl="3") as plugin:
            await registered(stub)
            cleared = await stub.Clear(registry_pb2.ClearRequest(source=SOURCE), timeout=5)
            assert cleared.removed == 2
            tools = await registered(stub)  # by the next heartbeat
            assert "registering again" in plugin.log()

            # The lease ends under it (as after a registry restart): NOT_FOUND, a new lease.
            lease = tools[0].lease_id
            await stub.RevokeLease(registry_pb2.RevokeLeaseRequest(lease_id=lease), timeout=5)
            again = await registered(stub)
            assert {t.lease_id for t in again} != {lease}
            assert "lease is gone" in plugin.log()


@pytest.mark.anyio
async def test_java_plugin_registers_a_tool_again_in_the_one_role_it_was_removed_from(
    jar: Path, tmp_path: Path
) -> None:
    async with running_registry(tmp_path, roles=["default", "support"]) as reg:

        async def placed() -> set[tuple[str, str]]:
            return {(t.role, t.tool.name) for t in await list_tools(reg.stub, source=SOURCE)}

        everywhere = {(r, n) for r in ("default", "support") for n in NAMES}
        with JavaPluginProcess(reg.target, tmp_path, lease_ttl="1.5"):
            await wait_for(placed, lambda p: p == everywhere, 30)
            reply = await reg.stub.Unregister(
                registry_pb2.UnregisterRequest(name="digest", role="support"), timeout=5
            )
            assert list(reply.affected_roles) == ["support"]
            # The name count (2 of 2) looks complete: only tools_per_role shows it.
            await wait_for(placed, lambda p: p == everywhere, 10)


@pytest.mark.anyio
async def test_java_plugin_honours_deadlines_and_cancellation_and_answers_failures_as_is_error(
    jar: Path, registry: str, tmp_path: Path
) -> None:
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        with JavaPluginProcess(registry, tmp_path) as plugin:
            [tool, *_] = await registered(stub)
            async with channel(tool.tool.callback_address) as pch:
                callback = callback_pb2_grpc.ToolCallbackStub(pch)

                def request(**arguments: object) -> callback_pb2.ToolCallbackInvokeRequest:
                    return callback_pb2.ToolCallbackInvokeRequest(
                        name="digest", arguments=to_struct(arguments)
                    )

                failed = await callback.Invoke(request(text="a", algorithm="NOPE"), timeout=10)
                assert failed.is_error
                assert failed.error == "unknown algorithm 'NOPE'; try SHA-256"

                # A 60 s wait under a 0.5 s deadline: the handler is interrupted, not left running.
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await callback.Invoke(request(text="a", delay_ms=60_000), timeout=0.5)
                assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await wait_for(
                    _async(plugin.log), lambda log: log.count("tool digest stopped") == 1, 10
                )

                # No deadline from the caller: the plugin's own timer (digest's 5 s) ends it.
                timed_out = await callback.Invoke(request(text="a", delay_ms=60_000), timeout=30)
                assert timed_out.is_error
                assert (
                    timed_out.error == "DEADLINE_EXCEEDED: tool 'digest' did not finish within 5s"
                )
                await wait_for(
                    _async(plugin.log), lambda log: log.count("tool digest stopped") == 2, 10
                )

                call = callback.Invoke(request(text="a", delay_ms=60_000), timeout=30)
                await asyncio.sleep(0.3)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                await wait_for(
                    _async(plugin.log), lambda log: log.count("tool digest stopped") == 3, 10
                )

                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await callback.Invoke(
                        callback_pb2.ToolCallbackInvokeRequest(name="nope"), timeout=10
                    )
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.anyio
async def test_java_plugin_passes_the_conformance_check(
    jar: Path, registry: str, tmp_path: Path
) -> None:
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        with JavaPluginProcess(registry, tmp_path):
            [tool, *_] = await registered(stub)
            address = tool.tool.callback_address
            tools = await tools_from_registry(registry, address)
            assert {t.name for t in tools} == NAMES
            results = await run_checks(address, tools)
    assert not [r for r in results if r.verdict == FAIL], results
    assert {r.check for r in results if r.verdict == PASS} >= {
        "well-formed",
        "bad-json",
        "wrong-types",
        "unknown-tool",
        "deadline",
        "cancelled",
        "still-serving",
    }


@pytest.mark.anyio
async def test_java_plugin_sends_the_token_read_from_toolcall_token_file(
    jar: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    async with registry_in_process(tmp_path, token="s3cret-token") as registry:
        async with channel(registry) as ch:
            stub = registry_pb2_grpc.ToolRegistryStub(ch)
            with JavaPluginProcess(
                registry, tmp_path, TOOLCALL_TOKEN_FILE=str(token_file)
            ) as plugin:
                await registered(stub)
                plugin.proc.send_signal(signal.SIGTERM)
                # Clear and RevokeLease need the token too.
                await wait_for(lambda: list_tools(stub, source=SOURCE), lambda t: not t, 15)
                # The tools are gone when Clear returns; the log line may come a moment later.
                await wait_for(_async(plugin.log), lambda log: "cleared 2 tools" in log, 15)


def _async(read: Callable[[], str]) -> Callable[[], Awaitable[str]]:
    """``wait_for`` polls a coroutine function; the log is read synchronously."""

    async def fetch() -> str:
        return read()

    return fetch


def test_bench_b_java_dispatches_to_the_java_plugin(jar: Path, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    args = ["--quick", "--only", "B-java", "--calls", "20", "--output", str(output)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    figures = json.loads(output.read_text())["scenarios"]["B-java"]
    assert figures["p50_us"] > 0 and figures["c64_per_s"] > 0
