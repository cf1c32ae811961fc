"""Conversation history and async tasks in SQLite (stdlib sqlite3, WAL).

All database work runs on one dedicated thread, so the event loop never
blocks on disk and the connection is never shared between threads. A chat
turn costs one read (only for a session not in the in-memory cache) and one
write transaction for all of its messages.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from llm_service.messages import Message, ToolCall

T = TypeVar("T")
TaskState = Literal["running", "succeeded", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tool_calls TEXT,
    tool_call_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, id);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    call_id TEXT NOT NULL,
    role TEXT NOT NULL,
    arguments TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    finished_at REAL,
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_by_session ON tasks (session_id, acked, status);
"""

CACHED_SESSIONS = 256


@dataclass(slots=True)
class TaskRecord:
    task_id: str
    session_id: str
    tool_name: str
    call_id: str
    role: str
    arguments: dict[str, Any]
    status: TaskState = "running"
    output: Any = None
    error: str = ""
    created_at: float = 0.0
    finished_at: float | None = None
    acked: bool = False

    @property
    def finished(self) -> bool:
        return self.status != "running"


def _task(row: sqlite3.Row) -> TaskRecord:
    return TaskRecord(
        task_id=row["task_id"],
        session_id=row["session_id"],
        tool_name=row["tool_name"],
        call_id=row["call_id"],
        role=row["role"],
        arguments=json.loads(row["arguments"]),
        status=row["status"],
        output=json.loads(row["output"]) if row["output"] is not None else None,
        error=row["error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        acked=bool(row["acked"]),
    )


def _message(row: sqlite3.Row) -> Message:
    calls = json.loads(row["tool_calls"]) if row["tool_calls"] else []
    return Message(
        role=row["role"],
        content=row["content"],
        tool_calls=[ToolCall.from_json(c) for c in calls],
        tool_call_id=row["tool_call_id"],
        name=row["name"],
        created_at=row["created_at"],
    )


@dataclass(slots=True)
class _Cached:
    """A session's messages and the id of the last row they include."""

    messages: list[Message]
    last_id: int


class HistoryStore:
    """Sessions' messages and async tasks; every method is a coroutine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-sqlite")
        self._db: sqlite3.Connection | None = None
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: commits survive a crash of this process; only an OS
        # crash can lose the last commits. No fsync on the chat path.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("history store is not open")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    def session_lock(self, session_id: str) -> asyncio.Lock:
        """Serializes writers of one session: chat turns and async-result notes."""
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    # -- messages ---------------------------------------------------------

    async def messages(self, session_id: str, limit: int = 0) -> list[Message]:
        """A session's history, oldest first (a copy); ``limit`` > 0: only the newest."""
        cached = self._cache.get(session_id)
        if cached is None:
            cached = await self._run(self._load, session_id)
            self._remember(session_id, cached)
        self._cache.move_to_end(session_id)
        messages = self._cache[session_id].messages
        return messages[-limit:] if limit > 0 else list(messages)

    def _remember(self, session_id: str, loaded: _Cached) -> None:
        # Loads and appends finish in any order; the copy with the most rows wins.
        current = self._cache.get(session_id)
        if current is None or current.last_id < loaded.last_id:
            self._cache[session_id] = loaded
        self._cache.move_to_end(session_id)
        while len(self._cache) > CACHED_SESSIONS:
            self._cache.popitem(last=False)

    def _load(self, session_id: str) -> _Cached:
        rows = self.db.execute(
            "SELECT * FROM messages WHERE session_id = ? ORDER BY id", (session_id,)
        ).fetchall()
        return _Cached([_message(r) for r in rows], rows[-1]["id"] if rows else 0)

    async def append(self, session_id: str, messages: list[Message]) -> None:
        """Stores ``messages`` in one transaction (all or nothing)."""
        if not messages:
            return
        first_id, last_id = await self._run(self._append, session_id, messages)
        cached = self._cache.get(session_id)
        # Extend the cached copy unless it was loaded after these rows existed.
        if cached is not None and cached.last_id < first_id:
            cached.messages.extend(messages)
            cached.last_id = last_id

    def _append(self, session_id: str, messages: list[Message]) -> tuple[int, int]:
        rows = [
            (
                session_id,
                m.role,
                m.content,
                json.dumps([c.to_json() for c in m.tool_calls]) if m.tool_calls else None,
                m.tool_call_id,
                m.name,
                m.created_at,
            )
            for m in messages
        ]
        ids: list[int] = []
        with self.db:
            self.db.execute("BEGIN")
            for row in rows:
                cur = self.db.execute(
                    "INSERT INTO messages (session_id, role, content, tool_calls, tool_call_id,"
                    " name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                ids.append(cur.lastrowid or 0)
        return ids[0], ids[-1]

    # -- tasks ------------------------------------------------------------

    async def insert_task(self, task: TaskRecord) -> None:
        await self._run(self._insert_task, task)

    def _insert_task(self, t: TaskRecord) -> None:
        self.db.execute(
            "INSERT INTO tasks (task_id, session_id, tool_name, call_id, role, arguments,"
            " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.task_id,
                t.session_id,
                t.tool_name,
                t.call_id,
                t.role,
                json.dumps(t.arguments),
                t.status,
                t.created_at,
            ),
        )

    async def finish_task(self, task: TaskRecord) -> None:
        await self._run(self._finish_task, task)

    def _finish_task(self, t: TaskRecord) -> None:
        self.db.execute(
            "UPDATE tasks SET status = ?, output = ?, error = ?, finished_at = ? WHERE task_id = ?",
            (t.status, json.dumps(t.output), t.error, t.finished_at, t.task_id),
        )

    async def get_task(self, task_id: str) -> TaskRecord | None:
        return await self._run(self._get_task, task_id)

    def _get_task(self, task_id: str) -> TaskRecord | None:
        row = self.db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _task(row) if row else None

    async def unacked_results(self, session_id: str) -> list[TaskRecord]:
        """Finished, not yet acknowledged tasks of a session, oldest first."""
        return await self._run(self._unacked, session_id)

    def _unacked(self, session_id: str) -> list[TaskRecord]:
        rows = self.db.execute(
            "SELECT * FROM tasks WHERE session_id = ? AND acked = 0 AND status != 'running'"
            " ORDER BY finished_at, task_id",
            (session_id,),
        ).fetchall()
        return [_task(r) for r in rows]

    async def ack_tasks(self, session_id: str, task_ids: list[str]) -> int:
        """Marks finished tasks acknowledged; returns how many were newly marked."""
        return await self._run(self._ack, session_id, task_ids)

    def _ack(self, session_id: str, task_ids: list[str]) -> int:
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.executemany(
                "UPDATE tasks SET acked = 1 WHERE session_id = ? AND task_id = ?"
                " AND acked = 0 AND status != 'running'",
                [(session_id, t) for t in dict.fromkeys(task_ids)],
            )
            return cur.rowcount

    async def fail_running_tasks(self, error: str) -> list[TaskRecord]:
        """Marks every RUNNING task failed (their runner is gone); returns them."""
        return await self._run(self._fail_running, error)

    def _fail_running(self, error: str) -> list[TaskRecord]:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            rows = self.db.execute("SELECT * FROM tasks WHERE status = 'running'").fetchall()
            self.db.execute(
                "UPDATE tasks SET status = 'failed', error = ?, output = 'null', finished_at = ?"
                " WHERE status = 'running'",
                (error, now),
            )
        failed = [_task(r) for r in rows]
        for t in failed:
            t.status, t.error, t.finished_at = "failed", error, now
        return failed
