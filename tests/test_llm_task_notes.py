"""An ended task's history note is never lost, and never written twice (issue 18).

When an async task ends, its outcome is stored, then its note appended to the
session's history (waiting for the session's turn). A runner killed between
the two used to lose the note for good (the fault drill: 0-7 per replica
killed). Now the task remembers whether its note was written (``noted``, set
in the note's transaction) and whoever outlives the runner writes the missing
ones: the next start on SQLite, another replica's reaper on PostgreSQL. The
crash point is made exactly: the outcome stored through the store API by a
store that is then closed without a note, as a killed runner leaves it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from llm_service.history import HistoryStore, StoreError, TaskRecord
from llm_service.messages import Message
from llm_service.pg_store import PostgresOptions, PostgresStore
from llm_service.servicer import turn_failure
from llm_service.tasks import result_note
from tests.support.fake_providers import FakeOpenAI
from tests.support.llm_env import fake_openai, llm_env, pg_schema, tool_plugin
from tests.support.postgres import PostgresServer
from tests.test_llm_pg_turns import replicas
from tests.test_llm_replicas import two_replicas
from toolcall.v1 import llm_pb2, llm_pb2_grpc

__all__ = ["fake_openai", "tool_plugin"]

pytestmark = pytest.mark.anyio


def ended(task_id: str, session_id: str) -> TaskRecord:
    """A task as its runner has it once the tool answered."""
    task = TaskRecord(task_id, session_id, "sleep_bg", "c1", "default", {}, created_at=time.time())
    return task


async def store_outcome_only(store: HistoryStore | PostgresStore, task: TaskRecord) -> None:
    """What a runner killed right after storing the outcome leaves: no note."""
    await store.insert_task(task)
    task.status, task.output, task.finished_at = "succeeded", {"slept": 1}, time.time()
    assert await store.finish_task(task)


async def notes_of(stub: llm_pb2_grpc.LLMServiceStub, session_id: str, task_id: str) -> int:
    reply = await stub.GetHistory(llm_pb2.GetHistoryRequest(session_id=session_id), timeout=10)
    return sum(
        1
        for m in reply.messages
        if m.role == llm_pb2.MESSAGE_ROLE_SYSTEM and f"async task {task_id} " in m.content
    )


@pytest.mark.sqlite_store
async def test_a_task_ended_but_not_noted_when_the_process_died_is_noted_once_at_the_next_start(
    tmp_path: Path, tool_plugin: str
) -> None:
    crashed = HistoryStore(tmp_path / "llm.sqlite3")
    await crashed.open()
    task = ended("task-orphan", "n1")
    await store_outcome_only(crashed, task)
    await crashed.close()  # the process is gone; nothing more is written by it

    for _ in range(2):  # restarted, then restarted again: one note all along
        async with llm_env(tmp_path, tool_plugin, store="sqlite") as env:
            assert await notes_of(env.stub, "n1", task.task_id) == 1
            stored = await env.llm.store.get_task(task.task_id)
            assert stored is not None and stored.noted and stored.status == "succeeded"


@pytest.mark.sqlite_store
async def test_a_note_is_appended_once_however_often_it_is_written(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "llm.sqlite3")
    await store.open()
    try:
        task = ended("task-1", "n2")
        await store_outcome_only(store, task)
        assert [t.task_id for t in await store.unnoted_tasks(10)] == ["task-1"]
        note = Message("system", result_note(task))
        written = [await store.append_note(task, note) for _ in range(3)]
        assert written == [True, False, False]
        assert [m.content for m in await store.messages("n2")] == [note.content]
        assert await store.unnoted_tasks(10) == []
    finally:
        await store.close()


@pytest.mark.sqlite_store
async def test_tasks_that_ended_before_the_noted_column_existed_are_not_noted_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "llm.sqlite3"
    store = HistoryStore(path)
    await store.open()
    await store_outcome_only(store, ended("old-ended", "n3"))
    await store.insert_task(ended("old-running", "n3"))
    await store.close()
    with sqlite3.connect(path) as db:  # the schema before this change
        db.execute("DROP INDEX tasks_unnoted")
        db.execute("ALTER TABLE tasks DROP COLUMN noted")

    store = HistoryStore(path)
    await store.open()
    try:
        assert await store.unnoted_tasks(10) == []  # noted then, or lost before: not again
        running = await store.get_task("old-running")
        assert running is not None and not running.noted  # its note is still owed
    finally:
        await store.close()


async def test_a_task_whose_replica_died_before_its_note_is_noted_once_by_the_survivors(
    tmp_path: Path, tool_plugin: str, postgres_server: PostgresServer, fake_openai: FakeOpenAI
) -> None:
    async with two_replicas(tmp_path, tool_plugin, postgres_server, fake_openai) as (env, b):
        options = PostgresOptions(
            dsn=postgres_server.dsn(), pool_size=2, schema=pg_schema(tmp_path)
        )
        doomed = PostgresStore(options, tail_messages=200, tail_bytes=1 << 20, part_bytes=1 << 20)
        await doomed.open()
        task = ended("task-orphan", "p1")
        await store_outcome_only(doomed, task)
        await doomed.close()  # its liveness lock is free, as when it is killed

        # Both replicas reap (every second; gone after three rounds free).
        deadline = time.monotonic() + 30
        while await notes_of(env.stub, "p1", task.task_id) == 0:
            assert time.monotonic() < deadline, "the note was never written"
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # more rounds of both reapers: still once
        assert await notes_of(env.stub, "p1", task.task_id) == 1
        assert await notes_of(b, "p1", task.task_id) == 1
        stored = await env.llm.store.get_task(task.task_id)
        assert stored is not None and stored.noted


async def test_two_replicas_writing_one_note_at_the_same_moment_store_it_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    async with replicas(postgres_server, tmp_path) as (a, b):
        for n in range(5):
            task = ended(f"task-{n}", "p2")
            await store_outcome_only(a, task)
            note = Message("system", result_note(task))

            async def write(
                store: PostgresStore, task: TaskRecord = task, note: Message = note
            ) -> bool:
                async with store.session_lock(task.session_id):
                    return await store.append_note(task, note)

            assert sorted(await asyncio.gather(write(a), write(b), write(a), write(b))) == [
                False,
                False,
                False,
                True,
            ]
        contents = [m.content for m in await b.messages("p2")]
        assert len(contents) == 5 and len(set(contents)) == 5
        assert await a.recent("p2") == await b.messages("p2")  # the cached tail is exact


async def test_tasks_ended_before_migration_5_are_not_noted_again_but_running_ones_are(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    async with replicas(postgres_server, tmp_path, count=1) as [store]:
        await store_outcome_only(store, ended("old-ended", "p3"))
        running = ended("old-running", "p3")
        await store.insert_task(running)
    db = await asyncpg.connect(postgres_server.dsn())
    try:  # the schema before migration 5
        schema = pg_schema(tmp_path)
        await db.execute(f"ALTER TABLE {schema}.toolcall_tasks DROP COLUMN noted")
        await db.execute(f"DELETE FROM {schema}.toolcall_schema_migrations WHERE version = 5")
    finally:
        await db.close()
    async with replicas(postgres_server, tmp_path, count=1) as [store]:
        old = await store.get_task("old-ended")
        assert old is not None and old.noted
        running.status, running.finished_at = "failed", time.time()
        assert await store.finish_task(running)  # ended under the new schema: note owed
        now = await store.get_task("old-running")
        assert now is not None and not now.noted


def test_a_turn_failing_on_an_unavailable_store_does_not_claim_it_was_not_stored() -> None:
    # PostgreSQL can drop the connection after the commit: the turn may be stored.
    code, message = turn_failure(StoreError("unavailable", "PostgreSQL: gone"), "s")
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "not stored" not in message and "GetHistory" in message
    code, message = turn_failure(StoreError("readonly", "read-only"), "s")
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "the turn was not stored" in message
