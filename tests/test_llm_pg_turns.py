"""A chat turn's statements on PostgreSQL (llm_service/pg_store.py), on a real server.

A turn is two statements on one connection (read under a freshly taken session
lock; write and release), whatever replica runs it; each replica keeps the
tails of recent sessions and reads only the rows after them, so a tail must
stay exactly what the database holds: rows other replicas wrote are seen, a
tail whose newest row is gone (a database restored from an older backup) is
read again, and the bounds of a provider request and of the cache hold. A
session lock never outlives its holder on a pooled connection, since
connections go back to the pool without the reset query.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from llm_service.history import StoreError
from llm_service.messages import Message, message_bytes
from llm_service.pg_store import _SESSION_LOCKS, PostgresOptions, PostgresStore
from tests.support.llm_env import pg_schema
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def replicas(
    server: PostgresServer, tmp_path: Path, count: int = 2, **bounds: Any
) -> AsyncIterator[list[PostgresStore]]:
    """``count`` stores on one schema, as that many LLMService replicas hold them."""
    options = PostgresOptions(dsn=server.dsn(), pool_size=4, schema=pg_schema(tmp_path))
    stores = [
        PostgresStore(
            options,
            tail_messages=bounds.get("tail_messages", 200),
            tail_bytes=bounds.get("tail_bytes", 1 << 20),
            part_bytes=1 << 20,
            cache_sessions=bounds.get("cache_sessions", 256),
            cache_bytes=bounds.get("cache_bytes", 1 << 26),
        )
        for _ in range(count)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for store in stores:
            await store.open()
            stack.push_async_callback(store.close)
        yield stores


async def turn(store: PostgresStore, session: str, text: str) -> list[str]:
    """A chat turn as the orchestrator runs it; the history it was given."""
    async with store.session_lock(session):
        history = await store.recent(session)
        await store.append(session, [Message("user", text), Message("assistant", f"re {text}")])
    return [m.content for m in history]


def contents(*texts: str) -> list[str]:
    return [c for t in texts for c in (t, f"re {t}")]


@contextlib.contextmanager
def statements_counted() -> Any:
    """Counts the statements asyncpg sends (each one round trip), the reset query too."""
    counted = [0]
    execute, query = asyncpg.Connection._execute, asyncpg.Connection.execute

    async def counting_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        counted[0] += 1
        return await execute(self, *args, **kwargs)

    async def counting_query(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        if not args:  # with arguments it goes through _execute
            counted[0] += 1
        return await query(self, sql, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncpg.Connection, "_execute", counting_execute)
        patch.setattr(asyncpg.Connection, "execute", counting_query)
        yield counted


async def test_a_turn_is_two_statements_once_the_replica_has_the_sessions_tail(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with replicas(postgres_server, tmp_path, count=1) as (store,):
        await turn(store, "two", "first")
        with statements_counted() as counted:
            for i in range(10):
                await turn(store, "two", f"q{i}")
        # Before: lock, read, write, unlock and a reset query per pooled connection: 7.
        assert counted[0] == 2 * 10


async def test_each_replica_sees_every_turn_the_other_wrote_since_its_own(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with replicas(postgres_server, tmp_path) as (a, b):
        texts = [f"q{i}" for i in range(8)]
        for i, text in enumerate(texts):
            # A, A, B, A, B, B, A, B: each replica's tail falls behind and catches up.
            store = [a, a, b, a, b, b, a, b][i]
            assert await turn(store, "s", text) == contents(*texts[:i])
        assert [m.content for m in await a.messages("s")] == contents(*texts)


async def test_turns_of_one_session_racing_on_two_replicas_each_see_all_before_them(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with replicas(postgres_server, tmp_path) as (a, b):
        seen = await asyncio.gather(*(turn([a, b][i % 2], "race", f"q{i}") for i in range(16)))
        # Serialized: the turns saw 0, 2, 4, ... messages, each a prefix of the stored ones.
        stored = [m.content for m in await b.messages("race")]
        assert sorted(len(s) for s in seen) == list(range(0, 32, 2))
        assert all(stored[: len(s)] == s for s in seen)
        assert len(stored) == 32 and len(set(stored)) == 32


async def test_a_cached_tail_whose_newest_row_is_gone_is_read_again_from_the_database(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with replicas(postgres_server, tmp_path, count=1) as (store,):
        for text in ("one", "two", "three"):
            await turn(store, "restored", text)
        # As if the database came back from a backup taken before the last turn.
        async with store.pool.acquire() as db:
            await db.execute(
                "DELETE FROM toolcall_messages WHERE id IN (SELECT id FROM toolcall_messages"
                " WHERE session_id = 'restored' ORDER BY id DESC LIMIT 2)"
            )
        assert await turn(store, "restored", "four") == contents("one", "two")


async def test_the_cached_tail_holds_what_a_fresh_read_would_within_the_request_bounds(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    weight = message_bytes(Message("assistant", "re q0"))  # the heaviest
    bounds = {"tail_messages": 5, "tail_bytes": 4 * weight}
    async with replicas(postgres_server, tmp_path, **bounds) as (a, b):
        for i in range(6):
            await turn(a, "bounded", f"q{i}")
            async with a.session_lock("bounded"):
                cached = [m.content for m in await a.recent("bounded")]
            b._forget("bounded")
            async with b.session_lock("bounded"):
                fresh = [m.content for m in await b.recent("bounded")]
            assert cached == fresh
            assert len(cached) == min(4, 2 * (i + 1))


async def test_the_tails_kept_are_bounded_in_sessions_and_in_bytes(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    weight = 2 * message_bytes(Message("user", "q0"))
    async with replicas(postgres_server, tmp_path, count=1, cache_sessions=3) as (store,):
        for i in range(6):
            await turn(store, f"many-{i}", "q0")
            await turn(store, f"many-{i}", "q1")
        assert list(store._tails) == ["many-3", "many-4", "many-5"]
    async with replicas(postgres_server, tmp_path, count=1, cache_bytes=3 * weight) as (store,):
        for i in range(6):
            await turn(store, f"heavy-{i}", "q0")
            await turn(store, f"heavy-{i}", "q1")
        assert store._tail_bytes_total <= 3 * weight
        assert sum(t.nbytes for t in store._tails.values()) == store._tail_bytes_total


async def test_a_lock_wait_given_up_leaves_no_session_lock_on_a_pooled_connection(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with replicas(postgres_server, tmp_path) as (a, b):
        await turn(a, "held", "q0")
        async with a.session_lock("held"):
            await a.recent("held")  # A holds the session's lock now
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(turn(b, "held", "lost"), 0.5)
        # B's pooled connections hold nothing: a turn of B's and then one of A's go through.
        assert await asyncio.wait_for(turn(b, "held", "q1"), 10) == contents("q0")
        assert await asyncio.wait_for(turn(a, "held", "q2"), 10) == contents("q0", "q1")
        async with a.pool.acquire() as db:
            locks = await db.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1",
                _SESSION_LOCKS,
            )
        assert locks == 0


async def test_a_turn_whose_lock_connection_died_fails_instead_of_writing_unlocked(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with replicas(postgres_server, tmp_path) as (a, b):
        await turn(a, "cut", "q0")
        with pytest.raises(StoreError) as failed:
            async with a.session_lock("cut"):
                await a.recent("cut")
                # PostgreSQL drops the connection (a restart, a network cut): and the lock.
                pid = a._held["cut"].db.get_server_pid()
                async with b.pool.acquire() as db:
                    await db.execute("SELECT pg_terminate_backend($1)", pid)
                assert await turn(b, "cut", "q1") == contents("q0")  # B got the lock
                await a.append("cut", [Message("user", "late"), Message("assistant", "re late")])
        assert failed.value.kind == "unavailable"
        # Before, the write went through another pooled connection, unlocked.
        assert [m.content for m in await b.messages("cut")] == contents("q0", "q1")
        assert await turn(a, "cut", "q2") == contents("q0", "q1")
