"""Conversation history, async tasks and acknowledgements in PostgreSQL, for replicas.

The same methods as the SQLite ``HistoryStore`` (``llm_service.store``), on
``asyncpg`` (an asyncio driver: no thread, no blocking), plus what several
LLMService replicas on one database need:

- Turns of one session never interleave across replicas: ``session_lock``
  holds a PostgreSQL advisory lock keyed by the session for the turn (a
  replica that dies drops its connection, and PostgreSQL the lock).
- A task is owned by the replica that runs it (``tasks.owner``). Each
  replica holds an advisory lock on its own id for as long as it lives, on
  its listener connection; ``fail_running_tasks`` (at startup and every few
  seconds) marks failed the running tasks of owners whose lock is free: that
  replica is gone. An outcome is stored only over ``running``, so a task
  ends once (a late result of a task already failed is dropped, not
  duplicated in the history).
- An ended task records whether its history note is written (``noted``, set
  by ``append_note`` in the note's transaction, so it is written once). The
  ended, unnoted tasks of an owner found gone (killed between storing the
  outcome and the note) are handed out by ``unnoted_tasks`` for a live
  replica to note.
- A finished task is announced with ``NOTIFY`` on ``toolcall_tasks``; every
  replica ``LISTEN``\\s and hands it to its Subscribe streams of that session
  (``on_finished``).

A turn costs two statements on one pooled connection: one takes the
session lock and reads what is new in the session, the other writes the
turn's messages and releases the lock at its commit (SQL functions,
migration 4). The write goes through the connection holding the lock: if
that connection died, so did the lock, and the turn fails rather than write
unlocked. Every writer of a session writes under its lock and commits
before releasing it, so a session's rows commit in id order and "the rows
after the newest one I have" is exactly what other replicas wrote since:
each replica keeps the tails of recent sessions (bounded in sessions and
bytes, ``cache_sessions`` / ``cache_bytes``) and reads only the rows after
them, checking that the newest row it has is still there (a database
restored from an older backup reloads the tail). Connections go back to the
pool without asyncpg's reset query (a round trip): a session lock whose
release failed takes its connection with it (``_release_or_drop``).

Schema changes are numbered migrations applied once, under a lock, in
``toolcall_schema_migrations``. Strings are stored as UTF-8 ``bytea`` where
a model or tool chose them (PostgreSQL ``text`` refuses NUL characters;
hostile input must still be stored as it came).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from llm_service.history import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CACHE_SESSIONS,
    StoreError,
    TaskRecord,
)
from llm_service.messages import Message, ToolCall, capped_parts, message_bytes
from toolcall.parts import part_size
from toolcall.v1 import tools_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

NOTIFY_CHANNEL = "toolcall_tasks"
# advisory lock namespaces (the first key of pg_advisory_lock(int, int)).
_SESSION_LOCKS = 0x7C01
_REPLICA_LOCKS = 0x7C02
_MIGRATION_LOCK = 0x7C03
# Tails up to this many messages are read with one LIMIT query; more, with a cursor.
FETCH_LIMIT = 1000
# How often a replica looks for the tasks of replicas that are gone.
REAP_INTERVAL_S = 2.0
# What a lost or refused connection raises: a StoreError "unavailable" for callers.
# InternalClientError: releasing a connection that PostgreSQL dropped mid-statement
# (a restart) fails so; it was INTERNAL to the client.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    TimeoutError,
)
# An owner is gone once its liveness lock was found free in this many rounds
# in a row: a live replica whose connection dropped (PostgreSQL restarted)
# takes its lock again within a round (its listener retries every 0.5 s).
GONE_AFTER_ROUNDS = 3

MIGRATIONS: list[str] = [
    # 1: history, tasks (with their owner replica) and acknowledgements.
    """
    CREATE TABLE toolcall_messages (
        id BIGSERIAL PRIMARY KEY,
        session_id TEXT NOT NULL,
        role TEXT NOT NULL,
        content BYTEA NOT NULL,
        tool_calls TEXT,
        tool_call_id BYTEA NOT NULL,
        name BYTEA NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        parts BYTEA
    );
    CREATE INDEX toolcall_messages_by_session ON toolcall_messages (session_id, id);
    CREATE TABLE toolcall_tasks (
        task_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        tool_name TEXT NOT NULL,
        call_id BYTEA NOT NULL,
        role TEXT NOT NULL,
        arguments TEXT NOT NULL,
        status TEXT NOT NULL,
        output TEXT,
        error BYTEA NOT NULL DEFAULT ''::bytea,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        acked BOOLEAN NOT NULL DEFAULT FALSE,
        parts BYTEA,
        owner TEXT NOT NULL
    );
    CREATE INDEX toolcall_tasks_by_session ON toolcall_tasks (session_id, acked, status);
    CREATE INDEX toolcall_tasks_running ON toolcall_tasks (owner) WHERE status = 'running';
    """,
    # 2: the principal owning each session (authentication on).
    """
    CREATE TABLE toolcall_session_owners (
        session_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL
    );
    """,
    # 3: long jobs (issue 14): the task's token, the plugin's job, its progress,
    # and the follow-up turn asked for and its sentence.
    """
    ALTER TABLE toolcall_tasks
        ADD COLUMN token TEXT NOT NULL DEFAULT '',
        ADD COLUMN job_id BYTEA NOT NULL DEFAULT ''::bytea,
        ADD COLUMN callback_address TEXT NOT NULL DEFAULT '',
        ADD COLUMN expires_at DOUBLE PRECISION,
        ADD COLUMN progress_fraction DOUBLE PRECISION,
        ADD COLUMN progress_message BYTEA NOT NULL DEFAULT ''::bytea,
        ADD COLUMN progress_at DOUBLE PRECISION,
        ADD COLUMN follow_up TEXT NOT NULL DEFAULT '',
        ADD COLUMN follow_up_text BYTEA NOT NULL DEFAULT ''::bytea;
    """,
    # 4: a turn's two statements (PostgresStore.recent / append). The read takes the
    # session's lock first, when asked; a VOLATILE function's next query has a new
    # snapshot (READ COMMITTED), so it sees every row committed before the lock was
    # granted. The write, asked to release the lock, holds it at transaction level
    # too: past the session-level release, to the commit of its rows.
    """
    CREATE FUNCTION toolcall_turn_read(
        p_space INTEGER, p_session TEXT, p_lock BOOLEAN, p_after BIGINT, p_limit INTEGER
    ) RETURNS SETOF toolcall_messages LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        IF p_lock THEN
            PERFORM pg_advisory_lock(p_space, hashtext(p_session));
        END IF;
        IF p_after < 0 THEN
            RETURN QUERY SELECT * FROM toolcall_messages WHERE session_id = p_session
                ORDER BY id DESC LIMIT p_limit;
        ELSE
            RETURN QUERY SELECT * FROM toolcall_messages WHERE session_id = p_session
                AND id >= p_after ORDER BY id LIMIT p_limit;
        END IF;
    END $$;
    CREATE FUNCTION toolcall_turn_write(
        p_space INTEGER, p_session TEXT, p_unlock BOOLEAN, p_role TEXT[], p_content BYTEA[],
        p_tool_calls TEXT[], p_call_id BYTEA[], p_name BYTEA[], p_created DOUBLE PRECISION[],
        p_parts BYTEA[], OUT prev BIGINT, OUT last BIGINT
    ) LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        SELECT max(id) INTO prev FROM toolcall_messages WHERE session_id = p_session;
        WITH ins AS (
            INSERT INTO toolcall_messages (session_id, role, content, tool_calls,
                tool_call_id, name, created_at, parts)
            SELECT p_session, a, b, c, d, e, f, g FROM unnest(p_role, p_content,
                p_tool_calls, p_call_id, p_name, p_created, p_parts)
                WITH ORDINALITY AS u(a, b, c, d, e, f, g, n) ORDER BY n
            RETURNING id
        ) SELECT max(id) INTO last FROM ins;
        IF p_unlock THEN
            PERFORM pg_advisory_xact_lock(p_space, hashtext(p_session));
            PERFORM pg_advisory_unlock(p_space, hashtext(p_session));
        END IF;
    END $$;
    """,
    # 5: whether an ended task's history note is written (issue 18), set with the
    # note in its transaction. New tasks are inserted FALSE and an outcome stored over
    # 'running' sets FALSE; the default TRUE marks rows written by replicas of an
    # older version (still running during a rolling upgrade): they note without the
    # flag, so their tasks are never noted again by a reaper.
    """
    ALTER TABLE toolcall_tasks ADD COLUMN noted BOOLEAN NOT NULL DEFAULT TRUE;
    CREATE INDEX toolcall_tasks_unnoted ON toolcall_tasks (owner)
        WHERE NOT noted AND status != 'running';
    """,
]
# Owners found gone whose ended tasks may still lack their note (unnoted_tasks),
# most recent kept; each is forgotten once it has none left.
GONE_OWNERS_KEPT = 1024
# Owners never change once set, so the memo cannot go stale; emptied when full.
OWNER_CACHE_ENTRIES = 4096


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _s(raw: bytes | None) -> str:
    return bytes(raw or b"").decode("utf-8", "surrogatepass")


def _parts(blob: bytes | None) -> list[tools_pb2.ContentPart]:
    if not blob:
        return []
    try:
        return list(tools_pb2.ToolResult.FromString(bytes(blob)).parts)
    except Exception:  # a damaged blob costs its parts, not the session
        return [tools_pb2.ContentPart(text="[content parts could not be read]")]


def _parts_blob(parts: list[tools_pb2.ContentPart]) -> bytes | None:
    return tools_pb2.ToolResult(parts=parts).SerializeToString() if parts else None


def _message(row: Any) -> Message:
    calls = json.loads(row["tool_calls"]) if row["tool_calls"] else []
    return Message(
        role=row["role"],
        content=_s(row["content"]),
        tool_calls=[ToolCall.from_json(c) for c in calls],
        tool_call_id=_s(row["tool_call_id"]),
        name=_s(row["name"]),
        created_at=row["created_at"],
        parts=_parts(row["parts"]),
    )


def _task(row: Any) -> TaskRecord:
    return TaskRecord(
        task_id=row["task_id"],
        session_id=row["session_id"],
        tool_name=row["tool_name"],
        call_id=_s(row["call_id"]),
        role=row["role"],
        arguments=json.loads(row["arguments"]),
        status=row["status"],
        output=json.loads(row["output"]) if row["output"] is not None else None,
        error=_s(row["error"]),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        acked=row["acked"],
        parts=_parts(row["parts"]),
        token=row["token"],
        job_id=_s(row["job_id"]),
        callback_address=row["callback_address"],
        expires_at=row["expires_at"],
        progress_fraction=row["progress_fraction"],
        progress_message=_s(row["progress_message"]),
        progress_at=row["progress_at"],
        follow_up=row["follow_up"],
        follow_up_text=_s(row["follow_up_text"]),
        noted=row["noted"],
    )


@dataclass
class PostgresOptions:
    """``TOOLCALL_PG_DSN`` and pool bounds (llm_service/settings.py)."""

    # postgresql://user:password@host:port/database?sslmode=verify-full (libpq's form).
    dsn: str = ""
    # Connections per replica: turns hold one each for their session lock.
    pool_size: int = 20
    # Bound of one statement (and of connecting).
    timeout_s: float = 10.0
    # Schema holding the tables (created if missing); empty: the search_path's default.
    schema: str = ""

    def problems(self) -> list[str]:
        bad = []
        if not self.dsn:
            bad.append("the postgres store needs a DSN (TOOLCALL_PG_DSN)")
        if self.schema and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.schema):
            bad.append("the PostgreSQL schema must be lowercase letters, digits and _")
        if not 2 <= self.pool_size <= 1000:
            bad.append("the PostgreSQL pool size must be from 2 to 1000")
        return bad


@dataclass(slots=True)
class _Tail:
    """The newest messages of a session (what a turn sends) and the id of the newest."""

    messages: list[Message]
    last_id: int
    nbytes: int = 0


@dataclass(slots=True)
class _Held:
    """A session this replica serves a writer of, and the connection its PostgreSQL
    lock is taken on: the writer's read and write go through it (no pool hand-over
    per statement), each taking or releasing the lock in the same round trip."""

    db: Any
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Taken by the turn's first statement (its read), released by its write.
    locked: bool = False


async def _release_or_drop(db: Any, namespace: int, key: str) -> None:
    """Releases a session-level advisory lock; when that fails (or is cancelled) the
    connection is terminated, which releases it too: a pooled connection never
    keeps one for its next user."""
    try:
        released = await db.fetchval("SELECT pg_advisory_unlock($1, hashtext($2))", namespace, key)
    except Exception:
        db.terminate()
        return
    except BaseException:
        db.terminate()
        raise
    if not released:
        db.terminate()


async def _no_reset(_conn: Any) -> None:
    """Pool release without the reset query (a round trip per release): nothing here
    leaves state on a pooled connection. Session-level advisory locks are released,
    or their connection terminated (``_release_or_drop``); transactions are rolled
    back by asyncpg itself; no SET, LISTEN or cursor outlives its transaction."""


class PostgresStore:
    """History and tasks in PostgreSQL; raises ``StoreError`` ("unavailable") when it fails."""

    replicated = True

    def __init__(
        self,
        options: PostgresOptions,
        *,
        tail_messages: int,
        tail_bytes: int,
        part_bytes: int,
        cache_sessions: int = DEFAULT_CACHE_SESSIONS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.options = options
        self.tail_messages = max(1, tail_messages)
        self.tail_bytes = max(1, tail_bytes)
        self.part_bytes = max(0, part_bytes)
        # Tails of recent sessions: at most cache_sessions of them and cache_bytes
        # in all (message_bytes), least recently used evicted first (_evict).
        self.cache_sessions = max(0, cache_sessions)
        self.cache_bytes = max(0, cache_bytes)
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._tail_bytes_total = 0
        # Sessions whose lock this replica holds now (one holder each: _local).
        self._held: dict[str, _Held] = {}
        # This run's id: the owner of the tasks it starts.
        self.replica_id = secrets.token_hex(8)
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._finished_callbacks: list[Callable[[str, str], None]] = []
        self._reconnected_callbacks: list[Callable[[], None]] = []
        # One waiter per session per replica queues here, not on a pool connection.
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}
        self._closed = False
        self._owners: dict[str, str] = {}
        # Owner -> rounds in a row its liveness lock was free (fail_running_tasks).
        self._free_rounds: dict[str, int] = {}
        # Owners found gone (fail_running_tasks): their unnoted tasks are noted here.
        self._gone: OrderedDict[str, None] = OrderedDict()
        # One channel per schema: replicas of another deployment are not woken.
        self.channel = NOTIFY_CHANNEL + (f"_{options.schema}" if options.schema else "")
        self._server_settings = {"search_path": options.schema} if options.schema else None

    def describe(self) -> str:
        host = self.options.dsn.rsplit("@", 1)[-1]  # no password in logs
        return f"PostgreSQL {host} (replica {self.replica_id})"

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("unavailable", "PostgreSQL store is not open")
        return self._pool

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        try:
            if self.options.schema:
                conn = await asyncpg.connect(self.options.dsn, timeout=self.options.timeout_s)
                try:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.options.schema}")
                except asyncpg.UniqueViolationError:
                    pass  # another replica made it at the same moment
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                self.options.dsn,
                server_settings=self._server_settings,
                min_size=1,
                max_size=self.options.pool_size,
                timeout=self.options.timeout_s,
                command_timeout=self.options.timeout_s,
                reset=_no_reset,
            )
            await self._migrate()
            await self._listen()
        except DB_ERRORS as exc:
            await self.close()
            raise StoreError("unavailable", f"PostgreSQL: {exc}") from None
        self._keeper = asyncio.create_task(self._keep_listening(), name="llm-pg-listener")

    async def _migrate(self) -> None:
        async with self.pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1, 0)", _MIGRATION_LOCK)
            await db.execute(
                "CREATE TABLE IF NOT EXISTS toolcall_schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {
                r["version"]
                for r in await db.fetch("SELECT version FROM toolcall_schema_migrations")
            }
            for version, sql in enumerate(MIGRATIONS, start=1):
                if version not in done:
                    await db.execute(sql)
                    await db.execute(
                        "INSERT INTO toolcall_schema_migrations (version) VALUES ($1)", version
                    )
                    log.info("PostgreSQL schema migrated to version %d", version)
            newest = max(done | {len(MIGRATIONS)})
            if newest > len(MIGRATIONS):
                raise StoreError(
                    "unavailable",
                    f"the database has schema version {newest}, newer than this LLMService "
                    f"knows ({len(MIGRATIONS)}); upgrade the service",
                )

    async def _listen(self) -> None:
        """The replica's own connection: its liveness lock and LISTEN."""
        conn = await asyncpg.connect(
            self.options.dsn, timeout=self.options.timeout_s, server_settings=self._server_settings
        )
        await conn.execute(
            "SELECT pg_advisory_lock($1, hashtext($2))", _REPLICA_LOCKS, self.replica_id
        )
        await conn.add_listener(self.channel, self._notified)
        self._listener = conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        owner, _, rest = payload.partition(" ")
        session_id, _, task_id = rest.partition(" ")
        if owner == self.replica_id or not task_id:
            return  # this replica pushed its own results already
        for callback in list(self._finished_callbacks):
            callback(session_id, task_id)

    def on_finished(self, callback: Callable[[str, str], None]) -> None:
        """Calls ``callback(session_id, task_id)`` when another replica finishes a task."""
        self._finished_callbacks.append(callback)

    def on_reconnected(self, callback: Callable[[], None]) -> None:
        """Calls ``callback()`` when the listener is back after a gap: the NOTIFYs of
        the gap are lost, the results they announced are not (see ``AsyncTasks``)."""
        self._reconnected_callbacks.append(callback)

    async def _keep_listening(self) -> None:
        """Reconnects the listener after PostgreSQL restarts or the connection drops."""
        while not self._closed:
            await asyncio.sleep(0.5)
            if self._listener is not None and not self._listener.is_closed():
                continue
            try:
                await self._listen()
                log.warning("PostgreSQL listener reconnected")
                for callback in list(self._reconnected_callbacks):
                    callback()
            except DB_ERRORS as exc:
                log.warning("PostgreSQL listener cannot reconnect yet: %s", exc)

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool = None

    @contextlib.asynccontextmanager
    async def _db(self) -> AsyncIterator[Any]:
        try:
            async with self.pool.acquire() as db:
                yield db
        except DB_ERRORS as exc:
            raise StoreError("unavailable", f"PostgreSQL: {str(exc)[:300]}") from None

    # -- session lock ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session_lock(self, session_id: str) -> AsyncIterator[None]:
        """Serializes writers of one session across every replica.

        The PostgreSQL lock is taken by the holder's first statement (``recent``'s
        read, or ``append``) and released by its write: a turn is two round trips.
        """
        lock, users = self._local.get(session_id, (asyncio.Lock(), 0))
        self._local[session_id] = (lock, users + 1)
        try:
            async with lock, self._db() as db:
                held = self._held[session_id] = _Held(db)
                try:
                    yield
                finally:
                    del self._held[session_id]
                    if held.locked:
                        await _release_or_drop(db, _SESSION_LOCKS, session_id)
        finally:
            lock, users = self._local[session_id]
            if users <= 1:
                del self._local[session_id]
            else:
                self._local[session_id] = (lock, users - 1)

    @contextlib.asynccontextmanager
    async def _session_db(self, session_id: str) -> AsyncIterator[tuple[Any, _Held | None]]:
        """The connection of the session's lock when this replica holds it (one
        statement at a time), else a pooled one; and the hold."""
        held = self._held.get(session_id)
        if held is None:
            async with self._db() as db:
                yield db, None
            return
        try:
            async with held.busy:
                yield held.db, held
        except DB_ERRORS as exc:
            raise StoreError("unavailable", f"PostgreSQL: {str(exc)[:300]}") from None

    @staticmethod
    async def _locking(held: _Held | None, statement: Awaitable[T]) -> T:
        """Runs a statement that takes the session's lock; when it fails (or is
        cancelled) the lock may have been granted all the same: its connection goes."""
        if held is None or held.locked:
            return await statement
        try:
            result = await statement
        except BaseException:
            held.db.terminate()
            raise
        held.locked = True
        return result

    # -- messages ------------------------------------------------------------

    async def recent(self, session_id: str) -> list[Message]:
        """The newest messages of a session (oldest first), at most ``tail_messages``
        weighing at most ``tail_bytes``: what a turn sends. Reads only the rows after
        the tail this replica has; the whole tail when it has none or it is stale."""
        read = "SELECT * FROM toolcall_turn_read($1, $2, $3, $4, $5)"
        async with self._session_db(session_id) as (db, held):
            lock = held is not None and not held.locked
            tail = self._tails.get(session_id)
            if tail is not None:
                rows = await self._locking(
                    held,
                    db.fetch(
                        read, _SESSION_LOCKS, session_id, lock, tail.last_id, self.tail_messages + 1
                    ),
                )
                lock = False
                if tail.last_id:
                    # The newest row this replica has must still be there.
                    fresh = bool(rows) and rows[0]["id"] == tail.last_id
                    rows = rows[1:]
                else:
                    fresh = True
                if fresh and len(rows) < self.tail_messages:
                    if rows:
                        self._extend(tail, [_message(r) for r in rows], rows[-1]["id"])
                    self._tails.move_to_end(session_id)
                    return list(tail.messages)
                self._forget(session_id)
            rows = await self._locking(
                held if lock else None,
                db.fetch(read, _SESSION_LOCKS, session_id, lock, -1, self.tail_messages),
            )
        loaded = _Tail([], rows[0]["id"] if rows else 0)
        for row in rows:
            m = _message(row)
            size = message_bytes(m)
            if loaded.nbytes + size > self.tail_bytes:
                break
            loaded.messages.append(m)
            loaded.nbytes += size
        loaded.messages.reverse()
        self._remember(session_id, loaded)
        return list(loaded.messages)

    def _remember(self, session_id: str, tail: _Tail) -> None:
        self._forget(session_id)
        if self.cache_sessions == 0 or tail.nbytes > self.cache_bytes:
            return
        self._tails[session_id] = tail
        self._tail_bytes_total += tail.nbytes
        self._evict()

    def _forget(self, session_id: str) -> None:
        old = self._tails.pop(session_id, None)
        if old is not None:
            self._tail_bytes_total -= old.nbytes

    def _evict(self) -> None:
        """Least recently used tails go until both bounds hold."""
        while self._tails and (
            len(self._tails) > self.cache_sessions or self._tail_bytes_total > self.cache_bytes
        ):
            _, old = self._tails.popitem(last=False)
            self._tail_bytes_total -= old.nbytes

    def _extend(self, tail: _Tail, messages: list[Message], last_id: int) -> None:
        """Appends the session's next rows to its tail, then drops the oldest past the
        bounds (as a read newest first stopping at them would)."""
        added = sum(message_bytes(m) for m in messages)
        tail.messages.extend(messages)
        tail.last_id = last_id
        tail.nbytes += added
        self._tail_bytes_total += added
        drop, freed = 0, 0
        while drop < len(tail.messages) and (
            len(tail.messages) - drop > self.tail_messages or tail.nbytes - freed > self.tail_bytes
        ):
            freed += message_bytes(tail.messages[drop])
            drop += 1
        if drop:
            del tail.messages[:drop]
            tail.nbytes -= freed
            self._tail_bytes_total -= freed
        self._evict()

    async def messages(self, session_id: str, limit: int = 0) -> list[Message]:
        return (await self.page(session_id, limit))[0]

    async def page(
        self, session_id: str, limit: int = 0, max_bytes: int = 0
    ) -> tuple[list[Message], bool]:
        sql = "SELECT * FROM toolcall_messages WHERE session_id = $1 ORDER BY id DESC"
        out: list[Message] = []
        total, cut = 0, False

        def take(row: Any) -> bool:
            """Adds a row unless a bound is reached; False to stop."""
            nonlocal total, cut
            if 0 < limit <= len(out):
                return False
            m = _message(row)
            size = message_bytes(m)
            if max_bytes > 0 and total + size > max_bytes:
                cut = not 0 < limit <= len(out)
                return False
            out.append(m)
            total += size
            return True

        async with self._db() as db:
            if 0 < limit <= FETCH_LIMIT:
                # A turn's tail: one round trip, the LIMIT bounding what is read.
                for row in await db.fetch(sql + " LIMIT $2", session_id, limit):
                    if not take(row):
                        break
            else:
                # A cursor: a huge session is read only as far as the bounds go.
                async with db.transaction():
                    async for row in db.cursor(sql, session_id, prefetch=500):
                        if not take(row):
                            break
        out.reverse()
        return out, cut

    def _capped(self, m: Message) -> Message:
        if not m.parts or sum(part_size(p) for p in m.parts) <= self.part_bytes:
            return m
        return dataclasses.replace(m, parts=capped_parts(m.parts, self.part_bytes), weight=0)

    async def append(self, session_id: str, messages: list[Message]) -> None:
        await self._write(session_id, messages, None)

    async def append_note(self, task: TaskRecord, note: Message) -> bool:
        """Appends an ended task's history note and marks the task noted, in one
        transaction; False (nothing written) when it was noted already (by another
        replica, or by a first try whose commit's answer was lost). Called under the
        session's lock."""
        return await self._write(task.session_id, [note], task.task_id)

    async def _write(self, session_id: str, messages: list[Message], noted: str | None) -> bool:
        if not messages:
            return True
        stored = [self._capped(m) for m in messages]
        rows = [
            (
                m.role,
                _b(m.content),
                json.dumps([c.to_json() for c in m.tool_calls]) if m.tool_calls else None,
                _b(m.tool_call_id),
                _b(m.name),
                m.created_at,
                _parts_blob(m.parts),
            )
            for m in stored
        ]
        columns = [list(c) for c in zip(*rows, strict=True)]
        write = "SELECT * FROM toolcall_turn_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        async with self._session_db(session_id) as (db, held):
            if held is not None and not held.locked:  # a writer that did not read first
                await self._locking(
                    held,
                    db.execute(
                        "SELECT pg_advisory_lock($1, hashtext($2))", _SESSION_LOCKS, session_id
                    ),
                )
            unlock = held is not None
            if noted is None:
                # One statement (atomic by itself), one round trip, whatever the count; it
                # also tells the session's newest row before these, and releases the lock.
                ids = await db.fetchrow(write, _SESSION_LOCKS, session_id, unlock, *columns)
            else:
                async with db.transaction():
                    if (
                        await db.fetchval(
                            "UPDATE toolcall_tasks SET noted = TRUE WHERE task_id = $1"
                            " AND NOT noted RETURNING 1",
                            noted,
                        )
                        is None
                    ):
                        return False  # the lock, if held, goes with session_lock's end
                    ids = await db.fetchrow(write, _SESSION_LOCKS, session_id, unlock, *columns)
            if held is not None:
                held.locked = False  # released at the commit of these rows
        tail = self._tails.get(session_id)
        if tail is not None:
            if tail.last_id == (ids["prev"] or 0):
                self._extend(tail, stored, ids["last"])
            else:  # another replica wrote in between (a writer without the lock)
                self._forget(session_id)
        return True

    # -- tasks ------------------------------------------------------------

    async def claim_session(self, session_id: str, principal: str) -> str:
        """The session's owner: ``principal`` when it had none (first use claims it);
        "" (admins only) for a session written before authentication was on."""
        owner = self._owners.get(session_id)
        if owner is None:
            async with self._db() as db:
                await db.execute(
                    "INSERT INTO toolcall_session_owners (session_id, owner) SELECT $1, CASE"
                    " WHEN EXISTS (SELECT 1 FROM toolcall_messages WHERE session_id = $1)"
                    " OR EXISTS (SELECT 1 FROM toolcall_tasks WHERE session_id = $1)"
                    " THEN '' ELSE $2 END ON CONFLICT (session_id) DO NOTHING",
                    session_id,
                    principal,
                )
                owner = str(
                    await db.fetchval(
                        "SELECT owner FROM toolcall_session_owners WHERE session_id = $1",
                        session_id,
                    )
                )
            if len(self._owners) >= OWNER_CACHE_ENTRIES:
                self._owners.clear()
            self._owners[session_id] = owner
        return owner

    async def insert_task(self, t: TaskRecord) -> None:
        async with self._db() as db:
            await db.execute(
                "INSERT INTO toolcall_tasks (task_id, session_id, tool_name, call_id, role,"
                " arguments, status, created_at, owner, token, follow_up, noted)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, FALSE)",
                t.task_id,
                t.session_id,
                t.tool_name,
                _b(t.call_id),
                t.role,
                json.dumps(t.arguments),
                t.status,
                t.created_at,
                self.replica_id,
                t.token,
                t.follow_up,
            )

    async def _running_update(self, sql: str, *args: Any) -> bool:
        """Runs an UPDATE ... WHERE task_id = $1 AND status = 'running'; True when it matched."""
        async with self._db() as db:
            return await db.fetchval(sql + " RETURNING task_id", *args) is not None

    async def accept_task(self, t: TaskRecord) -> bool:
        """Stores that a running task became a long job; False when it had ended already."""
        return await self._running_update(
            "UPDATE toolcall_tasks SET job_id = $2, callback_address = $3, expires_at = $4"
            " WHERE task_id = $1 AND status = 'running'",
            t.task_id,
            _b(t.job_id),
            t.callback_address,
            t.expires_at,
        )

    async def set_progress(self, t: TaskRecord) -> bool:
        """Stores a running task's progress; False when it had ended already."""
        return await self._running_update(
            "UPDATE toolcall_tasks SET progress_fraction = $2, progress_message = $3,"
            " progress_at = $4 WHERE task_id = $1 AND status = 'running'",
            t.task_id,
            t.progress_fraction,
            _b(t.progress_message),
            t.progress_at,
        )

    async def set_follow_up_text(self, t: TaskRecord) -> None:
        async with self._db() as db:
            await db.execute(
                "UPDATE toolcall_tasks SET follow_up_text = $2 WHERE task_id = $1",
                t.task_id,
                _b(t.follow_up_text),
            )

    async def running_snapshots(self, session_id: str, limit: int) -> list[TaskRecord]:
        """A session's running long jobs and tasks that reported progress, oldest first."""
        async with self._db() as db:
            rows = await db.fetch(
                "SELECT * FROM toolcall_tasks WHERE session_id = $1 AND status = 'running'"
                " AND (job_id != ''::bytea OR progress_at IS NOT NULL)"
                " ORDER BY created_at LIMIT $2",
                session_id,
                limit,
            )
        return [_task(r) for r in rows]

    async def running_jobs(self) -> list[TaskRecord]:
        """Running long jobs of every replica: any replica accepts their reports."""
        async with self._db() as db:
            rows = await db.fetch(
                "SELECT * FROM toolcall_tasks WHERE status = 'running' AND job_id != ''::bytea"
            )
        return [_task(r) for r in rows]

    async def finish_task(self, t: TaskRecord) -> bool:
        """Stores the outcome of a running task and announces it; False when the task had
        ended already (a replica declared this one gone and failed it)."""
        if sum(part_size(p) for p in t.parts) > self.part_bytes:
            t.parts = capped_parts(t.parts, self.part_bytes)
        async with self._db() as db, db.transaction():
            # Or this very outcome, stored already: a retry after a commit whose
            # answer the connection lost (PostgreSQL restarting) goes on to push
            # and note it, instead of dropping it as "ended already".
            updated = await db.fetchval(
                "UPDATE toolcall_tasks SET status = $1, output = $2, error = $3,"
                " finished_at = $4, parts = $5,"
                # Its note is owed from now (a retry keeps what the first try left).
                " noted = CASE WHEN status = 'running' THEN FALSE ELSE noted END"
                " WHERE task_id = $6 AND (status = 'running'"
                " OR (status = $1 AND finished_at = $4)) RETURNING task_id",
                t.status,
                json.dumps(t.output),
                _b(t.error),
                t.finished_at,
                _parts_blob(t.parts),
                t.task_id,
            )
            if updated is not None:
                await self._notify(db, t)
        return updated is not None

    async def _notify(self, db: Any, t: TaskRecord) -> None:
        # Delivered at commit, to every replica's listener (this one skips its own).
        await db.execute(
            "SELECT pg_notify($1, $2)",
            self.channel,
            f"{self.replica_id} {t.session_id} {t.task_id}",
        )

    async def get_task(self, task_id: str) -> TaskRecord | None:
        async with self._db() as db:
            row = await db.fetchrow("SELECT * FROM toolcall_tasks WHERE task_id = $1", task_id)
        return _task(row) if row else None

    async def unacked_results(
        self, session_id: str, *, after: tuple[float, str] | None = None, limit: int = 0
    ) -> list[TaskRecord]:
        sql = (
            "SELECT * FROM toolcall_tasks WHERE session_id = $1 AND NOT acked"
            " AND status != 'running'"
        )
        args: list[Any] = [session_id]
        if after is not None:
            sql += " AND (finished_at, task_id) > ($2, $3)"
            # -inf is a valid float8 in PostgreSQL.
            args += [after[0], after[1]]
        sql += " ORDER BY finished_at, task_id"
        if limit > 0:
            sql += f" LIMIT {int(limit)}"
        async with self._db() as db:
            return [_task(r) for r in await db.fetch(sql, *args)]

    async def ack_tasks(self, session_id: str, task_ids: list[str]) -> int:
        async with self._db() as db:
            return int(
                await db.fetchval(
                    "WITH done AS (UPDATE toolcall_tasks SET acked = TRUE WHERE session_id = $1"
                    " AND task_id = ANY($2::text[]) AND NOT acked AND status != 'running'"
                    " RETURNING 1) SELECT count(*) FROM done",
                    session_id,
                    list(dict.fromkeys(task_ids)),
                )
            )

    async def fail_running_tasks(self, error: str) -> list[TaskRecord]:
        """Marks failed the running tasks of replicas that are gone (their liveness lock
        is free), but accepted long jobs (their plugin finishes them through any
        replica); returns them. This replica's own tasks are never touched."""
        failed: list[TaskRecord] = []
        async with self._db() as db:
            # Owners of running tasks, and of ended tasks still owing their note.
            owners = [
                r["owner"]
                for r in await db.fetch(
                    "SELECT owner FROM toolcall_tasks WHERE status = 'running' AND owner != $1"
                    " UNION SELECT owner FROM toolcall_tasks WHERE NOT noted"
                    " AND status != 'running' AND owner != $1",
                    self.replica_id,
                )
            ]
            self._free_rounds = {o: n for o, n in self._free_rounds.items() if o in owners}
            for owner in owners:
                try:
                    got = await db.fetchval(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))", _REPLICA_LOCKS, owner
                    )
                except BaseException:
                    db.terminate()  # it may have been granted as it failed
                    raise
                if not got:
                    self._free_rounds.pop(owner, None)
                    continue  # that replica is alive
                # Free once may be a live replica reconnecting (before, its
                # running tasks were failed as gone after every PostgreSQL restart).
                self._free_rounds[owner] = rounds = self._free_rounds.get(owner, 0) + 1
                if rounds < GONE_AFTER_ROUNDS:
                    await _release_or_drop(db, _REPLICA_LOCKS, owner)
                    continue
                try:
                    now = time.time()
                    async with db.transaction():
                        rows = await db.fetch(
                            "UPDATE toolcall_tasks SET status = 'failed', error = $1,"
                            " output = 'null', finished_at = $2, noted = FALSE"
                            " WHERE owner = $3 AND status = 'running' AND job_id = ''::bytea"
                            " RETURNING *",
                            _b(error),
                            now,
                            owner,
                        )
                        tasks = [_task(r) for r in rows]
                        for t in tasks:
                            await self._notify(db, t)
                    failed.extend(tasks)
                    self._gone[owner] = None
                    self._gone.move_to_end(owner)
                    while len(self._gone) > GONE_OWNERS_KEPT:
                        self._gone.popitem(last=False)
                finally:
                    await _release_or_drop(db, _REPLICA_LOCKS, owner)
        return failed

    async def unnoted_tasks(self, limit: int) -> list[TaskRecord]:
        """Ended tasks of replicas found gone (``fail_running_tasks``) whose history note
        was never written (killed between storing the outcome and the note), oldest
        first, at most ``limit``. Another replica may note them at the same moment:
        ``append_note`` writes each once."""
        if not self._gone:
            return []
        async with self._db() as db:
            rows = await db.fetch(
                "SELECT * FROM toolcall_tasks WHERE owner = ANY($1::text[]) AND NOT noted"
                " AND status != 'running' ORDER BY finished_at, task_id LIMIT $2",
                list(self._gone),
                limit,
            )
        if len(rows) < limit:  # owners with none left are done with
            left = {r["owner"] for r in rows}
            for owner in [o for o in self._gone if o not in left]:
                del self._gone[owner]
        return [_task(r) for r in rows]
