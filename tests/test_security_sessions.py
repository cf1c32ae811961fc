"""Chat sessions belong to the principal that created them (llm_service/servicer.py).

A real LLMService with a principals file: bob may not read, continue,
subscribe to or acknowledge alice's session (PERMISSION_DENIED, naming no
owner), nor see her tasks (NOT_FOUND, as for a task that does not exist); an
admin may read every session; a principal may only chat in the roles its
entry allows. Ownership is stored, so it outlives a restart.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_service.history import TaskRecord
from tests.support.llm_env import LLMEnv, llm_env, llm_settings, running_llm
from tests.support.tls import PRINCIPALS, principals_file
from toolcall.clients import channel
from toolcall.v1 import llm_pb2, llm_pb2_grpc

pytestmark = pytest.mark.anyio

ALICE = (("authorization", "Bearer alice-token"),)
BOB = (("authorization", "Bearer bob-token"),)
ADMIN = (("authorization", "Bearer admin-token"),)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[LLMEnv]:
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with llm_env(
        tmp_path, "unix:/nonexistent", roles=("default", "other"), principals_file=path
    ) as e:
        yield e


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_another_principal_cannot_use_a_session_by_any_rpc(env: LLMEnv) -> None:
    await env.stub.Chat(env.request("s1", "my password is hunter2"), metadata=ALICE, timeout=20)
    stub = env.stub
    history = llm_pb2.GetHistoryRequest(session_id="s1")
    refusals = {
        "GetHistory": stub.GetHistory(history, metadata=BOB, timeout=5),
        "Chat": stub.Chat(env.request("s1", "what was it?"), metadata=BOB, timeout=5),
        "AckTasks": stub.AckTasks(
            llm_pb2.AckTasksRequest(session_id="s1", task_ids=["t"]), metadata=BOB, timeout=5
        ),
    }
    for name, call in refusals.items():
        try:
            await call
            raise AssertionError(f"{name} answered bob")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, name
            assert "alice" not in (exc.details() or ""), name
    stream = stub.ChatStream(
        llm_pb2.ChatStreamRequest(request=env.request("s1", "again")), metadata=BOB, timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    subscription = stub.Subscribe(
        llm_pb2.SubscribeRequest(session_id="s1"), metadata=BOB, timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await subscription.read()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The owner's own stream opens and waits for results (here: until its deadline).
    own = stub.Subscribe(llm_pb2.SubscribeRequest(session_id="s1"), metadata=ALICE, timeout=0.5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await own.read()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The owner and an admin read it; the secret never reached bob.
    for who in (ALICE, ADMIN):
        reply = await stub.GetHistory(history, metadata=who, timeout=5)
        assert "hunter2" in reply.messages[0].content
    # bob's own sessions work.
    assert (await stub.Chat(env.request("s2", "hi"), metadata=BOB, timeout=20)).message.content


async def test_a_foreign_task_is_not_found_like_a_missing_one(env: LLMEnv) -> None:
    await env.stub.Chat(env.request("s1", "hello"), metadata=ALICE, timeout=20)
    task = TaskRecord("task-1", "s1", "slow", "c1", "default", {}, created_at=time.time())
    await env.llm.store.insert_task(task)
    get = llm_pb2.GetTaskRequest(task_id="task-1")
    assert (await env.stub.GetTask(get, metadata=ALICE, timeout=5)).task.task_id == "task-1"
    assert (await env.stub.GetTask(get, metadata=ADMIN, timeout=5)).task.task_id == "task-1"
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await env.stub.GetTask(get, metadata=BOB, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id="task-2"), metadata=BOB)
    assert foreign.value.code() == missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.CancelTask(llm_pb2.CancelTaskRequest(task_id="task-1"), metadata=BOB)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await env.llm.store.get_task("task-1")).status == "running"  # type: ignore[union-attr]


async def test_a_principal_chats_only_in_its_roles(env: LLMEnv) -> None:
    other = env.request("s3", "hi", role="other")
    assert await code_of(env.stub.Chat(other, metadata=ALICE, timeout=5)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await code_of(env.stub.Chat(other, metadata=BOB, timeout=20)) == grpc.StatusCode.OK
    # No chat privilege at all: the llm principal only reads the registry.
    assert await code_of(
        env.stub.Chat(env.request("s4", "hi"), metadata=(("authorization", "Bearer x"),))
    ) == (grpc.StatusCode.UNAUTHENTICATED)


async def test_a_session_written_before_authentication_belongs_to_admins_only(
    tmp_path: Path,
) -> None:
    async with llm_env(tmp_path, "unix:/nonexistent") as plain:
        await plain.chat("old", "my password is hunter2")  # no principals yet
        registry_target = plain.registry.target
        await plain.llm.stop()
        path = principals_file(tmp_path / "p.toml", PRINCIPALS)
        settings = llm_settings(tmp_path, registry_target, principals_file=path)
        async with running_llm(settings) as llm, channel(llm.target) as ch:
            stub = llm_pb2_grpc.LLMServiceStub(ch)
            history = llm_pb2.GetHistoryRequest(session_id="old")
            assert await code_of(stub.GetHistory(history, metadata=BOB, timeout=5)) == (
                grpc.StatusCode.PERMISSION_DENIED
            )
            reply = await stub.GetHistory(history, metadata=ADMIN, timeout=5)
            assert "hunter2" in reply.messages[0].content


async def test_session_ownership_outlives_a_restart(env: LLMEnv, tmp_path: Path) -> None:
    await env.stub.Chat(env.request("s1", "hello"), metadata=ALICE, timeout=20)
    settings = env.llm.settings
    await env.llm.stop()
    restarted = llm_settings(
        tmp_path, env.registry.target, principals_file=settings.principals_file
    )
    async with running_llm(restarted) as llm, channel(llm.target) as ch:
        stub = llm_pb2_grpc.LLMServiceStub(ch)
        history = llm_pb2.GetHistoryRequest(session_id="s1")
        assert await code_of(stub.GetHistory(history, metadata=BOB, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await code_of(stub.GetHistory(history, metadata=ALICE, timeout=5)) == (
            grpc.StatusCode.OK
        )
