"""LLMService replicas on one real PostgreSQL: sessions, tasks and results across replicas.

Turns of one session never interleave, whichever replicas serve them (an
advisory lock per session); a Subscribe on one replica receives the results
of tasks run by another (LISTEN/NOTIFY); a replica killed with SIGKILL
mid-task leaves its task failed with a reason and delivered, once. The rest
of the LLMService suite runs on PostgreSQL with ``pytest --llm-store=postgres``
(``make test`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llm_service.tasks import REPLICA_GONE_ERROR
from tests.support.etcd import free_ports
from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.llm_env import (
    LLMEnv,
    fake_openai,
    llm_env,
    llm_settings,
    on_postgres,
    pg_schema,
    running_llm,
    tool_plugin,
    user,
)
from tests.support.postgres import PostgresServer
from toolcall.clients import channel, wait_healthy
from toolcall.v1 import llm_pb2, llm_pb2_grpc, tools_pb2

__all__ = ["fake_openai", "tool_plugin"]

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
ASYNC = tools_pb2.TOOL_MODE_ASYNC


@contextlib.asynccontextmanager
async def two_replicas(
    tmp_path: Path, plugin: str, server: PostgresServer, openai: FakeOpenAI
) -> AsyncIterator[tuple[LLMEnv, llm_pb2_grpc.LLMServiceAsyncStub]]:
    """A registry and replica A (``LLMEnv``), and replica B's stub; both on one schema."""
    pg = on_postgres(tmp_path, server.dsn())
    async with llm_env(tmp_path, plugin, openai=openai, default_provider="openai", **pg) as env:
        settings = llm_settings(
            tmp_path,
            env.registry.target,
            openai_base_url=openai.base_url,
            default_provider="openai",
            **pg,
        )
        async with running_llm(settings) as b, channel(b.target) as ch:
            yield env, llm_pb2_grpc.LLMServiceStub(ch)


async def test_a_subscriber_on_one_replica_gets_the_result_of_a_task_run_by_the_other(
    tmp_path: Path, tool_plugin: str, postgres_server: PostgresServer, fake_openai: FakeOpenAI
) -> None:
    async with two_replicas(tmp_path, tool_plugin, postgres_server, fake_openai) as (env, b):
        await env.register("sleep_bg", mode=ASYNC)
        on_b = b.Subscribe(llm_pb2.SubscribeRequest(session_id="r1"))
        fake_openai.add(
            Reply(tool_calls=[("c1", "sleep_bg", '{"seconds": 0.3}')]), Reply(text="Started.")
        )
        reply = await env.chat("r1", "sleep in the background")  # runs on replica A
        item = await asyncio.wait_for(on_b.read(), 10)
        assert item.task.task_id == reply.tool_calls[0].task_id
        assert item.task.status == llm_pb2.TASK_STATUS_SUCCEEDED
        on_b.cancel()
        # Either replica reads the one history: the turn, then the result's note, once.
        history = (await b.GetHistory(llm_pb2.GetHistoryRequest(session_id="r1"))).messages
        for _ in range(100):
            if history and history[-1].role == llm_pb2.MESSAGE_ROLE_SYSTEM:
                break
            await asyncio.sleep(0.05)
            history = (await b.GetHistory(llm_pb2.GetHistoryRequest(session_id="r1"))).messages
        notes = [m for m in history if m.role == llm_pb2.MESSAGE_ROLE_SYSTEM]
        assert len(notes) == 1 and item.task.task_id in notes[0].content


async def test_turns_of_one_session_on_two_replicas_never_interleave(
    tmp_path: Path, tool_plugin: str, postgres_server: PostgresServer, fake_openai: FakeOpenAI
) -> None:
    async with two_replicas(tmp_path, tool_plugin, postgres_server, fake_openai) as (env, b):
        # Each model answer takes a while: unlocked turns would both read the
        # history before either wrote, and their messages would interleave.
        for i in range(6):
            fake_openai.add(Reply(text=f"answer {i}", delay_s=0.15))
        stubs = [env.stub, b] * 3
        await asyncio.gather(
            *(
                stub.Chat(
                    llm_pb2.ChatRequest(session_id="one", messages=[user(f"q{i}")]), timeout=30
                )
                for i, stub in enumerate(stubs)
            )
        )
        history = (await b.GetHistory(llm_pb2.GetHistoryRequest(session_id="one"))).messages
        roles = [m.role for m in history]
        assert roles == [llm_pb2.MESSAGE_ROLE_USER, llm_pb2.MESSAGE_ROLE_ASSISTANT] * 6
        # Each turn's model request saw every turn before it: 1, 3, 5, ... messages.
        sizes = sorted(
            sum(1 for m in r.body["messages"] if m["role"] != "system")
            for r in fake_openai.requests
        )
        assert sizes == [1, 3, 5, 7, 9, 11]


async def test_a_replica_killed_mid_task_leaves_it_failed_with_a_reason_and_delivered_once(
    tmp_path: Path, tool_plugin: str, postgres_server: PostgresServer, fake_openai: FakeOpenAI
) -> None:
    pg = on_postgres(tmp_path, postgres_server.dsn())
    async with llm_env(
        tmp_path, tool_plugin, openai=fake_openai, default_provider="openai", **pg
    ) as env:
        await env.register("sleep_bg", mode=ASYNC)
        [port] = free_ports(1)
        doomed = f"127.0.0.1:{port}"
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "toolcall.cli", "llm", "--store", "postgres"],
            *["--address", doomed, "--registry", env.registry.target, "--provider", "openai"],
            env=dict(
                os.environ,
                PYTHONPATH=str(REPO),
                TOOLCALL_PG_DSN=postgres_server.dsn(),
                TOOLCALL_PG_SCHEMA=pg_schema(tmp_path),
                TOOLCALL_OPENAI_BASE_URL=fake_openai.base_url,
                TOOLCALL_OPENAI_API_KEY="test-openai-key",
            ),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_healthy(doomed, timeout_s=30)
            survivor = env.stub  # replica A, in this process
            watching = survivor.Subscribe(llm_pb2.SubscribeRequest(session_id="k1"))
            # Five tasks in one turn, all running on the doomed replica.
            calls = [(f"c{i}", "sleep_bg", '{"seconds": 60}') for i in range(5)]
            fake_openai.add(Reply(tool_calls=calls), Reply(text="Started."))
            async with channel(doomed) as ch:
                await asyncio.sleep(1)  # the doomed replica's view has the tool
                reply = await llm_pb2_grpc.LLMServiceStub(ch).Chat(
                    llm_pb2.ChatRequest(session_id="k1", messages=[user("go")]), timeout=20
                )
            task_ids = {c.task_id for c in reply.tool_calls}
            assert len(task_ids) == 5
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            delivered = [(await asyncio.wait_for(watching.read(), 20)).task for _ in range(5)]
            watching.cancel()
            assert {t.task_id for t in delivered} == task_ids  # delivered == expected
            assert {t.status for t in delivered} == {llm_pb2.TASK_STATUS_FAILED}
            assert {t.result.error for t in delivered} == {REPLICA_GONE_ERROR}
            await asyncio.sleep(1.5)  # another reaper round: still one note each
            history = await env.history("k1")
            notes = [m for m in history if m.role == llm_pb2.MESSAGE_ROLE_SYSTEM]
            assert len(notes) == 5
            assert {t for t in task_ids for m in notes if t in m.content} == task_ids
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_an_llm_service_with_no_reachable_postgres_does_not_start_and_says_why(
    tmp_path: Path,
) -> None:
    [port] = free_ports(1)
    settings = llm_settings(
        tmp_path, "127.0.0.1:1", store="postgres", pg_dsn=f"postgresql://x@127.0.0.1:{port}/x"
    )
    from llm_service import start_llm
    from llm_service.history import StoreError

    with pytest.raises(StoreError, match="PostgreSQL"):
        await start_llm(settings)


async def test_unknown_store_settings_are_refused_before_start(tmp_path: Path) -> None:
    from llm_service.store import store_problems

    assert store_problems(llm_settings(tmp_path, "x", store="postgres", pg_dsn="")) == [
        "the postgres store needs a DSN (TOOLCALL_PG_DSN)"
    ]
    assert "must be one of" in store_problems(llm_settings(tmp_path, "x", store="mysql"))[0]


async def test_a_postgres_restart_loses_no_history_and_results_reach_other_replicas_again(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    from tests.support.postgres import start_server, stop_server

    server = start_server()  # its own: it restarts here
    try:
        async with two_replicas(tmp_path, tool_plugin, server, fake_openai) as (env, b):
            await env.register("sleep_bg", mode=ASYNC)
            fake_openai.add(Reply(text="before"))
            await env.chat("pr", "one")
            server.stop("fast")
            server.start()
            # The first calls after the restart may find dead pool connections:
            # UNAVAILABLE (retryable), never a lost or doubled row.
            fake_openai.add(Reply(text="after"))
            for _ in range(20):
                try:
                    await env.chat("pr", "two")
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    await asyncio.sleep(0.2)
            history = (await b.GetHistory(llm_pb2.GetHistoryRequest(session_id="pr"))).messages
            assert [m.content for m in history] == ["one", "before", "two", "after"]

            await asyncio.sleep(1.5)  # the listeners reconnect (every 0.5 s)
            on_b = b.Subscribe(llm_pb2.SubscribeRequest(session_id="pr2"))
            fake_openai.add(
                Reply(tool_calls=[("c1", "sleep_bg", '{"seconds": 0.2}')]), Reply(text="ok")
            )
            reply = await env.chat("pr2", "sleep")
            item = await asyncio.wait_for(on_b.read(), 10)
            assert item.task.task_id == reply.tool_calls[0].task_id
            on_b.cancel()
    finally:
        stop_server(server)
