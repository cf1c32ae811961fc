"""LLMService: request validation, the registry view, CLI wiring."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llm_service import main as llm_main
from llm_service.service import LLMServiceHost
from llm_service.settings import LLMSettings
from tests.support.llm_env import (
    LLMEnv,
    llm_env,
    llm_settings,
    start_test_registry,
    tool_plugin,
    user,
)
from toolcall.clients import channel, wait_healthy
from toolcall.errors import bad_request_violations
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

__all__ = ["tool_plugin"]

pytestmark = pytest.mark.anyio


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, tool_plugin) as e:
        yield e


async def invalid(call) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return bad_request_violations(err.value)


def fields(violations: list[tuple[str, str]]) -> set[str]:
    return {f for f, _ in violations}


async def test_chat_request_validation(env: LLMEnv) -> None:
    s = env.stub
    assert fields(await invalid(s.Chat(llm_pb2.ChatRequest(messages=[user("hi")])))) == {
        "session_id"
    }
    bad = await invalid(s.Chat(llm_pb2.ChatRequest(session_id="a b", messages=[user("hi")])))
    assert bad == [("session_id", "must match [A-Za-z0-9_.:-]{1,128}")]
    assert fields(
        await invalid(s.Chat(llm_pb2.ChatRequest(session_id="x" * 129, messages=[user("h")])))
    ) == {"session_id"}
    assert fields(await invalid(s.Chat(llm_pb2.ChatRequest(session_id="ok")))) == {"messages"}
    request = llm_pb2.ChatRequest(
        session_id="ok",
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_TOOL, content="{}"),
            llm_pb2.ChatMessage(
                role=llm_pb2.MESSAGE_ROLE_ASSISTANT,
                content="x",
                tool_calls=[llm_pb2.ToolCall(name="t")],
            ),
            llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content="  "),
            llm_pb2.ChatMessage(
                role=llm_pb2.MESSAGE_ROLE_USER,
                content="look",
                parts=[tools_pb2.ContentPart(text="parts come from tools")],
            ),
        ],
        provider="claude",
        temperature=3.0,
        max_tool_rounds=33,
        model="m" * 200,
    )
    assert fields(await invalid(s.Chat(request))) == {
        "messages[0].role",
        "messages[1].tool_calls",
        "messages[2].content",
        "messages[3].parts",
        "provider",
        "temperature",
        "max_tool_rounds",
        "model",
    }
    # ChatStream names the fields inside its request.
    stream = s.ChatStream(llm_pb2.ChatStreamRequest(request=llm_pb2.ChatRequest()))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stream:
            pass
    assert fields(bad_request_violations(err.value)) == {"request.session_id", "request.messages"}


async def test_unknown_role_is_rejected_with_known_roles(env: LLMEnv) -> None:
    bad = await invalid(env.stub.Chat(env.request("r", "hi", role="pirate")))
    assert bad == [("role", "unknown role 'pirate'; known roles: default")]
    ok = await env.chat("r", "hi", role="default")
    assert ok.message.content


async def test_other_rpcs_validate(env: LLMEnv) -> None:
    s = env.stub
    assert fields(await invalid(s.GetHistory(llm_pb2.GetHistoryRequest(limit=-1)))) == {
        "session_id",
        "limit",
    }
    assert fields(await invalid(s.AckTasks(llm_pb2.AckTasksRequest(session_id="s")))) == {
        "task_ids"
    }
    assert fields(await invalid(s.GetTask(llm_pb2.GetTaskRequest()))) == {"task_id"}
    sub = s.Subscribe(llm_pb2.SubscribeRequest(session_id="bad id"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sub.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_and_new_tools_are_visible_next_turn(env: LLMEnv) -> None:
    await wait_healthy(env.llm.target, timeout_s=5, service="toolcall.v1.LLMService")
    before = await env.chat("v", "hello")
    assert "no tools are available" in before.message.content
    await env.register("echo_hello", description="Say hello back")
    after = await env.chat("v", "hello")
    assert after.tool_calls[0].call.name == "echo_hello"
    await env.registry_stub.Unregister(registry_pb2.UnregisterRequest(name="echo_hello"))
    assert await env.llm.view.wait_for("default", "echo_hello", timeout_s=5, present=False)
    gone = await env.chat("v", "hello")
    assert not gone.tool_calls


async def test_role_scoped_tools(tmp_path: Path, tool_plugin: str) -> None:
    async with llm_env(tmp_path, tool_plugin) as env:
        await env.register("echo_everyone")
        await env.register("echo_default_only", role="default")
        assert [t.name for t in env.llm.view.tools_for("default")] == [
            "echo_default_only",
            "echo_everyone",
        ]
        assert env.llm.view.tools_for("nobody") == []


async def test_view_survives_registry_restart_and_late_start(
    tmp_path: Path, tool_plugin: str
) -> None:
    # The LLMService starts before any registry exists: chat works without tools.
    first = await start_test_registry(tmp_path / "r1.sqlite3")
    address = first.target
    await first.stop()
    settings = llm_settings(tmp_path, address)
    llm = LLMServiceHost(settings)
    await llm.start()
    try:
        assert not await llm.view.wait_synced(0.3)
        async with channel(llm.target) as ch:
            stub: llm_pb2_grpc.LLMServiceAsyncStub = llm_pb2_grpc.LLMServiceStub(ch)
            reply = await stub.Chat(
                llm_pb2.ChatRequest(session_id="late", messages=[user("hello")]), timeout=5
            )
            assert "no tools are available" in reply.message.content

        registry = await start_test_registry(tmp_path / "r1.sqlite3", address)
        try:
            assert await llm.view.wait_synced(20)  # reconnect backoff, on a busy machine
            old_instance = llm.view.instance_id
            async with channel(address) as rch:
                rstub = registry_pb2_grpc.ToolRegistryStub(rch)
                await rstub.Register(
                    registry_pb2.RegisterRequest(
                        tool=tools_pb2.ToolDefinition(name="echo_one", callback_address=tool_plugin)
                    )
                )
            assert await llm.view.wait_for("default", "echo_one", timeout_s=20)
        finally:
            await registry.stop()

        # A new registry run with other tools: the view is rebuilt from its snapshot.
        registry = await start_test_registry(tmp_path / "r2.sqlite3", address)
        try:
            async with channel(address) as rch:
                rstub = registry_pb2_grpc.ToolRegistryStub(rch)
                await rstub.Register(
                    registry_pb2.RegisterRequest(
                        tool=tools_pb2.ToolDefinition(name="echo_two", callback_address=tool_plugin)
                    )
                )
            assert await llm.view.wait_for("default", "echo_two", timeout_s=20)
            assert llm.view.get("default", "echo_one") is None
            assert llm.view.instance_id != old_instance
        finally:
            await registry.stop()
    finally:
        await llm.stop()


def test_cli_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLCALL_PROVIDER", "gemini")
    monkeypatch.setenv("TOOLCALL_MAX_TOOL_ROUNDS", "5")
    parser = argparse.ArgumentParser()
    llm_main.add_arguments(parser)
    args = parser.parse_args(["--address", "127.0.0.1:0", "--data-dir", str(tmp_path)])
    settings = llm_main.settings_from_args(args)
    assert settings.default_provider == "gemini" and settings.max_tool_rounds == 5
    assert settings.db_path == tmp_path / "llm.sqlite3"
    assert "rule-basedstand-in" in "".join(parser.format_help().split())
    with pytest.raises(SystemExit):
        llm_main.settings_from_args(parser.parse_args(["--max-tool-rounds", "0"]))


def test_bounds_from_the_environment_are_read_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOOLCALL_ALLOWED_MODELS", " gpt-4o*, ,gemini-2.5-flash ")
    monkeypatch.setenv("TOOLCALL_MAX_REQUEST_BYTES", "100000")
    monkeypatch.setenv("TOOLCALL_SUBSCRIBE_BUFFER", "7")
    monkeypatch.setenv("TOOLCALL_MAX_ASYNC_TASKS_PER_SESSION", "3")
    parser = argparse.ArgumentParser()
    llm_main.add_arguments(parser)
    settings = llm_main.settings_from_args(parser.parse_args([]))
    assert settings.allowed_models == ("gpt-4o*", "gemini-2.5-flash")
    assert settings.max_request_bytes == 100_000 and settings.subscribe_buffer == 7
    assert settings.max_async_tasks_per_session == 3
    monkeypatch.setenv("TOOLCALL_MAX_REQUEST_BYTES", "0")
    with pytest.raises(SystemExit, match="TOOLCALL_MAX_REQUEST_BYTES must be at least 1024"):
        llm_main.settings_from_args(parser.parse_args([]))


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLCALL_OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    monkeypatch.setenv("GOOGLE_API_KEY", "g-fallback")
    monkeypatch.setenv("TOOLCALL_GEMINI_API_KEY", "g-direct")
    monkeypatch.setenv("TOOLCALL_MAX_PARALLEL_TOOLS", "3")
    s = LLMSettings.from_env()
    assert s.openai_api_key == "sk-fallback" and s.gemini_api_key == "g-direct"
    assert s.max_parallel_tools == 3 and s.default_provider == "offline"
    assert s.resolved_db_path().name == "llm.sqlite3"


async def test_toolcall_llm_serves_until_sigterm(tmp_path: Path) -> None:
    sock = tmp_path / "llm.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "toolcall.cli",
        "llm",
        "--address",
        f"unix:{sock}",
        "--registry",
        "127.0.0.1:1",
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_healthy(f"unix:{sock}", timeout_s=15)
        async with channel(f"unix:{sock}") as ch:
            stub: llm_pb2_grpc.LLMServiceAsyncStub = llm_pb2_grpc.LLMServiceStub(ch)
            reply = await stub.Chat(llm_pb2.ChatRequest(session_id="cli", messages=[user("hi")]))
            assert reply.provider == "offline"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (tmp_path / "llm.sqlite3").exists()


def test_a_taken_port_is_one_readable_error_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "toolcall.cli", "llm", "--address", address],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TOOLCALL_DATA_DIR": str(tmp_path)},
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: cannot start the LLMService: {address} is in use" in result.stderr
