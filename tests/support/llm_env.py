"""Shared set-up of the LLMService tests: registry, plugin process, fake providers.

``tool_plugin`` is a real plugin process (tests/support/llm_tool_plugin.py)
serving behaviours by tool name; ``LLMEnv`` runs a registry and an LLMService
in-process on ephemeral ports, with the OpenAI and Gemini SDKs pointed at
local fake servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_service import LLMServiceHost, LLMSettings, start_llm
from registry_service import RegistryHost, RegistrySettings, start_registry
from tests.support.fake_providers import FakeGemini, FakeOpenAI
from toolcall.clients import channel
from toolcall.jsonvalue import to_struct
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

PLUGIN = Path(__file__).with_name("llm_tool_plugin.py")


@contextlib.contextmanager
def tool_plugin_process(address: str) -> Iterator[str]:
    """Runs the test plugin listening on ``address``; yields it once serving."""
    proc = subprocess.Popen(
        [sys.executable, str(PLUGIN), address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", f"plugin did not start: {line!r}"
        yield address
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def tool_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Callback address of a running test plugin process (unix socket)."""
    sock = tmp_path_factory.mktemp("plugin") / "tools.sock"
    with tool_plugin_process(f"unix:{sock}") as address:
        yield address


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    server = FakeGemini()
    yield server
    server.close()


def user(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content=text)


@dataclasses.dataclass
class LLMEnv:
    registry: RegistryHost
    llm: LLMServiceHost
    plugin_address: str
    registry_stub: registry_pb2_grpc.ToolRegistryAsyncStub
    stub: llm_pb2_grpc.LLMServiceAsyncStub

    async def register(
        self,
        name: str,
        *,
        parameters: dict[str, Any] | None = None,
        mode: int = tools_pb2.TOOL_MODE_SYNC,
        description: str = "",
        timeout_s: float = 0.0,
        ack_message: str = "",
        accepts_raw_arguments: bool = False,
        role: str | None = None,
    ) -> None:
        tool = tools_pb2.ToolDefinition(
            name=name,
            description=description or f"test tool {name}",
            callback_address=self.plugin_address,
            source="test",
            timeout_seconds=timeout_s,
            mode=mode,
            ack_message=ack_message,
            accepts_raw_arguments=accepts_raw_arguments,
        )
        if parameters is not None:
            tool.parameters.CopyFrom(to_struct(parameters))
        if role is not None:
            tool.role = role
        reply = await self.registry_stub.Register(registry_pb2.RegisterRequest(tool=tool))
        assert reply.ok, reply
        for r in reply.affected_roles:
            assert await self.llm.view.wait_for(r, name, timeout_s=5), f"{name} not visible"

    def request(self, session: str, text: str, **kw: Any) -> llm_pb2.ChatRequest:
        return llm_pb2.ChatRequest(session_id=session, messages=[user(text)], **kw)

    async def chat(self, session: str, text: str, **kw: Any) -> llm_pb2.ChatResponse:
        return await self.stub.Chat(self.request(session, text, **kw), timeout=20)

    async def stream(self, session: str, text: str, **kw: Any) -> list[llm_pb2.ChatStreamResponse]:
        call = self.stub.ChatStream(
            llm_pb2.ChatStreamRequest(request=self.request(session, text, **kw)), timeout=20
        )
        return [event async for event in call]

    async def history(self, session: str) -> list[llm_pb2.ChatMessage]:
        reply = await self.stub.GetHistory(llm_pb2.GetHistoryRequest(session_id=session))
        return list(reply.messages)


async def history_with_note(env: LLMEnv, session: str, task_id: str) -> list[llm_pb2.ChatMessage]:
    """The session's history once the task's note is in it.

    The result is pushed to subscribers first; the note joins the history
    right after, behind any turn holding the session (the next turn sees it).
    """
    deadline = time.monotonic() + 5
    while True:
        history = await env.history(session)
        # The note is a system message; the turn's tool message (the
        # acknowledgement) names the task id too, so match the role as well.
        noted = any(m.role == llm_pb2.MESSAGE_ROLE_SYSTEM and task_id in m.content for m in history)
        if noted or time.monotonic() > deadline:
            return history
        await asyncio.sleep(0.02)


async def start_test_registry(
    data_path: Path,
    address: str = "127.0.0.1:0",
    roles: tuple[str, ...] = ("default",),
    **overrides: Any,
) -> RegistryHost:
    """A real ToolRegistry, in-process."""
    return await start_registry(
        RegistrySettings(
            address=address, roles=list(roles), data_path=data_path, grace_s=0.2, **overrides
        )
    )


# The LLMService suite's store: SQLite, or this PostgreSQL server when pytest
# runs with --llm-store=postgres (tests/conftest.py sets it).
PG_DSN: list[str] = []


def pg_schema(tmp_path: Path) -> str:
    """A schema of its own per test (the same for every replica of one test)."""
    return "t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]


def on_postgres(tmp_path: Path, dsn: str) -> dict[str, Any]:
    """Overrides that put an LLMService's history and tasks in PostgreSQL."""
    return {"store": "postgres", "pg_dsn": dsn, "pg_schema": pg_schema(tmp_path), "pg_pool_size": 8}


def llm_settings(tmp_path: Path, registry_target: str, **overrides: Any) -> LLMSettings:
    if PG_DSN and "store" not in overrides:
        overrides = {**on_postgres(tmp_path, PG_DSN[0]), **overrides}
    settings = LLMSettings(
        address="127.0.0.1:0",
        registry_address=registry_target,
        db_path=tmp_path / "llm.sqlite3",
        provider_max_retries=0,
        provider_timeout_s=10.0,
        openai_api_key="test-openai-key",
        gemini_api_key="test-gemini-key",
        task_grace_s=1.0,
        grace_s=0.5,
    )
    return dataclasses.replace(settings, **overrides)


@contextlib.asynccontextmanager
async def running_llm(settings: LLMSettings) -> AsyncIterator[LLMServiceHost]:
    host = await start_llm(settings)
    try:
        assert await host.view.wait_synced(10), "LLMService never synced with the registry"
        yield host
    finally:
        await host.stop()


@contextlib.asynccontextmanager
async def llm_env(
    tmp_path: Path,
    plugin_address: str,
    *,
    openai: FakeOpenAI | None = None,
    gemini: FakeGemini | None = None,
    roles: tuple[str, ...] = ("default",),
    **overrides: Any,
) -> AsyncIterator[LLMEnv]:
    registry = await start_test_registry(tmp_path / "registry.sqlite3", roles=roles)
    try:
        if openai is not None:
            overrides.setdefault("openai_base_url", openai.base_url)
        if gemini is not None:
            overrides.setdefault("gemini_base_url", gemini.base_url)
        settings = llm_settings(tmp_path, registry.target, **overrides)
        async with (
            running_llm(settings) as llm,
            channel(registry.target) as rch,
            channel(llm.target) as lch,
        ):
            if openai is not None and settings.openai_api_key:
                llm.providers.get("openai")  # import the SDK now, not in a timed call
            yield LLMEnv(
                registry=registry,
                llm=llm,
                plugin_address=plugin_address,
                registry_stub=registry_pb2_grpc.ToolRegistryStub(rch),
                stub=llm_pb2_grpc.LLMServiceStub(lch),
            )
    finally:
        await registry.stop()
