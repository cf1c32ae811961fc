"""Conversation history and async tasks in SQLite (stdlib sqlite3, WAL).

All database work runs on one dedicated thread, so the event loop never
blocks on disk and the connection is never shared between threads. A chat
turn costs one read (only for a session not in the in-memory cache) and one
write transaction for all of its messages.

Bounds: a stored message keeps at most ``part_bytes`` of content parts
(images...; the rest become text parts saying what they were). The cache
keeps, per session, only the newest messages a provider
request can hold (``tail_messages`` and ``tail_bytes``), for at most
``cache_sessions`` sessions and ``cache_bytes`` in total (least recently used
evicted first); reads that are not served by the cache stop at the bound they
were asked for, so no request loads a whole session.

Failures: every database error becomes a ``StoreError`` whose ``kind`` says
what went wrong (the servicer turns it into a status); a write that fails
changes nothing, in the file or in the cache. Before each write the file is
checked: deleted, replaced or made read-only (no write permission bits, which
also stops root) is an error instead of writes that would be lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from llm_service.messages import Message, ToolCall, capped_parts, message_bytes
from toolcall.parts import part_size
from toolcall.v1 import tools_pb2

T = TypeVar("T")
TaskState = Literal["running", "succeeded", "failed", "cancelled"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tool_calls TEXT,
    tool_call_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    parts BLOB
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
    acked INTEGER NOT NULL DEFAULT 0,
    parts BLOB
);
CREATE INDEX IF NOT EXISTS tasks_by_session ON tasks (session_id, acked, status);
CREATE TABLE IF NOT EXISTS session_owners (
    session_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
"""
# Owners never change once set, so a memo cannot go stale: at most this many
# sessions (ids <= 128 chars, owners <= 4 KB names), emptied when full.
OWNER_CACHE_ENTRIES = 4096

# Columns added since the first schema (long jobs, issue 14): name -> declaration.
# Databases made before get them added, empty.
TASK_COLUMNS = {
    "token": "TEXT NOT NULL DEFAULT ''",
    "job_id": "TEXT NOT NULL DEFAULT ''",
    "callback_address": "TEXT NOT NULL DEFAULT ''",
    "expires_at": "REAL",
    "progress_fraction": "REAL",
    "progress_message": "TEXT NOT NULL DEFAULT ''",
    "progress_at": "REAL",
    # The follow-up turn asked for ({"provider", "model"} as JSON; '' none) and its text.
    "follow_up": "TEXT NOT NULL DEFAULT ''",
    "follow_up_text": "TEXT NOT NULL DEFAULT ''",
}
# Whether an ended task's history note is written (issue 18): set with the note,
# in its transaction. Added to older databases as 1 for the tasks that had
# ended (noted then, or lost for good: not noted again), 0 for running ones.
NOTED_COLUMN = "noted INTEGER NOT NULL DEFAULT 0"

DEFAULT_CACHE_SESSIONS = 256
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_TAIL_MESSAGES = 200
DEFAULT_TAIL_BYTES = 2 * 1024 * 1024
# Bytes of content parts (images...) one stored message keeps; parts past it
# become a text part saying what they were (TOOLCALL_HISTORY_PART_BYTES).
DEFAULT_PART_BYTES = 1024 * 1024

StoreErrorKind = Literal["full", "readonly", "corrupt", "unavailable"]


class StoreError(Exception):
    """The database could not do what was asked; nothing was changed.

    ``kind``: "full" (disk or database full), "readonly" (the file is
    read-only, deleted or replaced), "corrupt" (not a database / malformed),
    "unavailable" (any other database error).
    """

    def __init__(self, kind: StoreErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: StoreErrorKind = kind
        self.message = message


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    name = getattr(exc, "sqlite_errorname", "")
    kind: StoreErrorKind = "unavailable"
    if name.startswith("SQLITE_FULL"):
        kind = "full"
    elif name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        kind = "readonly"
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        kind = "corrupt"
    return StoreError(kind, f"database {path}: {exc}")


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
    # The result's content parts (capped like a history message's).
    parts: list[tools_pb2.ContentPart] = field(default_factory=list)
    # Long jobs: the secret handed to the plugin with the call (it authorises
    # ReportProgress / CompleteTask); once accepted, the plugin's job id, the
    # address CancelJob goes to, and when the job fails unless completed.
    token: str = ""
    job_id: str = ""
    callback_address: str = ""
    expires_at: float | None = None
    # The latest progress reported (fraction None: unknown; at None: none yet).
    progress_fraction: float | None = None
    progress_message: str = ""
    progress_at: float | None = None
    # ChatRequest.follow_up_async_results: the turn to run when the task ends
    # ({"provider", "model"} as JSON; '' none), and the model's answer.
    follow_up: str = ""
    follow_up_text: str = ""
    # Its history note is written (it is, once, with the note: ``append_note``).
    noted: bool = False

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
        parts=_parts(row["parts"]),
        token=row["token"],
        job_id=row["job_id"],
        callback_address=row["callback_address"],
        expires_at=row["expires_at"],
        progress_fraction=row["progress_fraction"],
        progress_message=row["progress_message"],
        progress_at=row["progress_at"],
        follow_up=row["follow_up"],
        follow_up_text=row["follow_up_text"],
        noted=bool(row["noted"]),
    )


def _parts(blob: bytes | None) -> list[tools_pb2.ContentPart]:
    """Content parts stored as a ToolResult holding only parts."""
    if not blob:
        return []
    try:
        return list(tools_pb2.ToolResult.FromString(blob).parts)
    except Exception:  # a damaged blob costs its parts, not the session
        return [tools_pb2.ContentPart(text="[content parts could not be read]")]


def _parts_blob(parts: list[tools_pb2.ContentPart]) -> bytes | None:
    return tools_pb2.ToolResult(parts=parts).SerializeToString() if parts else None


def _message(row: sqlite3.Row) -> Message:
    calls = json.loads(row["tool_calls"]) if row["tool_calls"] else []
    parts = _parts(row["parts"])
    return Message(
        role=row["role"],
        content=row["content"],
        tool_calls=[ToolCall.from_json(c) for c in calls],
        tool_call_id=row["tool_call_id"],
        name=row["name"],
        created_at=row["created_at"],
        parts=parts,
    )


@dataclass(slots=True)
class _Cached:
    """The newest messages of a session and the id of the last row they include."""

    messages: list[Message]
    last_id: int
    nbytes: int = 0
    # False when older messages of the session were left out.
    complete: bool = True


class HistoryStore:
    """Sessions' messages and async tasks; every method is a coroutine.

    Raises ``StoreError`` when the database fails.
    """

    def __init__(
        self,
        path: Path,
        *,
        tail_messages: int = DEFAULT_TAIL_MESSAGES,
        tail_bytes: int = DEFAULT_TAIL_BYTES,
        cache_sessions: int = DEFAULT_CACHE_SESSIONS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        part_bytes: int = DEFAULT_PART_BYTES,
    ) -> None:
        self.path = path
        self.part_bytes = max(0, part_bytes)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-sqlite")
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] = (0, 0)
        # Bounds of the cache (see the module docstring).
        self.tail_messages = max(1, tail_messages)
        self.tail_bytes = max(1, tail_bytes)
        self.cache_sessions = max(0, cache_sessions)
        self.cache_bytes = max(0, cache_bytes)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cached_bytes = 0
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._owners: dict[str, str] = {}
        # Finished tasks not yet acknowledged (counted at open, then kept up to
        # date by the one database thread): the awaiting-ack gauge.
        self.unacked = 0

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc

    async def open(self) -> None:
        """Opens (or creates) the database; a file that is not one, or fails
        ``PRAGMA quick_check``, is a "corrupt" StoreError."""
        try:
            await self._run(self._open)
        except OSError as exc:
            raise StoreError("unavailable", f"database {self.path}: {exc}") from exc

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: commits survive a crash of this process; only an OS
            # crash can lose the last commits. No fsync on the chat path.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            # Databases made before content parts: the column is added, empty.
            for table in ("messages", "tasks"):
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if "parts" not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN parts BLOB")
            columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
            for name, declaration in TASK_COLUMNS.items():
                if name not in columns:
                    db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {declaration}")
            if "noted" not in columns:
                with db:  # both or neither: a half-done upgrade would note old tasks again
                    db.execute("BEGIN")
                    db.execute(f"ALTER TABLE tasks ADD COLUMN {NOTED_COLUMN}")
                    db.execute("UPDATE tasks SET noted = 1 WHERE status != 'running'")
            db.execute(
                "CREATE INDEX IF NOT EXISTS tasks_unnoted ON tasks (finished_at)"
                " WHERE noted = 0 AND status != 'running'"
            )
            # Damage anywhere in the file is found now (~75 ms per 100 MB), not
            # by whichever request first reads the damaged page.
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                found = " ".join("; ".join(problems).split())[:300]  # one line
                raise StoreError("corrupt", f"database {self.path}: damaged ({found})")
        except BaseException:
            db.close()
            raise
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._db = db
        self.unacked = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE acked = 0 AND status != 'running'"
        ).fetchone()[0]

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("history store is not open")
        return self._db

    def _writable(self) -> sqlite3.Connection:
        """The connection, once the file is known to still be the one opened and writable.

        SQLite keeps writing to a deleted file (lost at the next start) and
        root ignores permissions, so both are checked here (one stat).
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(
                "readonly", f"database {self.path} was deleted; restart the service"
            ) from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreError("readonly", f"database {self.path} was replaced; restart the service")
        if not st.st_mode & 0o222 or not os.access(self.path, os.W_OK):
            raise StoreError("readonly", f"database {self.path} is read-only")
        return self.db

    def describe(self) -> str:
        return str(self.path)

    @property
    def cached_sessions(self) -> int:
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

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

    async def recent(self, session_id: str) -> list[Message]:
        """The newest messages of a session (a copy, oldest first), at most
        ``tail_messages`` of them weighing at most ``tail_bytes``: what a turn sends."""
        cached = self._cache.get(session_id)
        if cached is None:
            cached = await self._run(self._load, session_id, self.tail_messages, self.tail_bytes)
            cached = self._remember(session_id, cached)
        else:
            self._cache.move_to_end(session_id)
        return list(cached.messages)

    async def messages(self, session_id: str, limit: int = 0) -> list[Message]:
        """A session's newest ``limit`` messages (0: all), oldest first, not byte-bounded."""
        return (await self.page(session_id, limit))[0]

    async def page(
        self, session_id: str, limit: int = 0, max_bytes: int = 0
    ) -> tuple[list[Message], bool]:
        """The newest ``limit`` messages (0: all) weighing at most ``max_bytes`` (0: any),
        oldest first, and whether older ones asked for were left out for the byte bound.

        Served by the cache when it holds them; read from the database otherwise
        (without filling the cache: one large read must not evict the working set).
        """
        cached = self._cache.get(session_id)
        if cached is not None and (cached.complete or 0 < limit <= len(cached.messages)):
            kept = cached.messages[-limit:] if limit > 0 else cached.messages
            total, first = 0, len(kept)
            while first > 0:
                total += message_bytes(kept[first - 1])
                if 0 < max_bytes < total:
                    break
                first -= 1
            return list(kept[first:]), first > 0
        loaded = await self._run(self._load, session_id, limit, max_bytes)
        # Left out for the byte bound: fewer messages than asked for (or than exist).
        cut = not loaded.complete and not 0 < limit <= len(loaded.messages)
        return loaded.messages, cut

    def _remember(self, session_id: str, loaded: _Cached) -> _Cached:
        # Loads and appends finish in any order; the copy with the most rows wins.
        current = self._cache.get(session_id)
        if current is None or current.last_id < loaded.last_id:
            self._forget(session_id)
            self._cache[session_id] = loaded
            self._cached_bytes += loaded.nbytes
            current = loaded
        self._cache.move_to_end(session_id)
        self._evict()
        return current

    def _forget(self, session_id: str) -> None:
        old = self._cache.pop(session_id, None)
        if old is not None:
            self._cached_bytes -= old.nbytes

    def _evict(self) -> None:
        """Least recently used sessions go until both bounds hold."""
        while self._cache and (
            len(self._cache) > self.cache_sessions or self._cached_bytes > self.cache_bytes
        ):
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes

    def _load(self, session_id: str, limit: int, max_bytes: int) -> _Cached:
        """Reads newest first and stops at the bounds, so a huge session is never read whole."""
        cur = self.db.execute(
            "SELECT * FROM messages WHERE session_id = ? ORDER BY id DESC", (session_id,)
        )
        out: list[Message] = []
        total, last_id, complete = 0, 0, True
        for row in cur:
            last_id = last_id or row["id"]
            if 0 < limit <= len(out):
                complete = False
                break
            m = _message(row)
            size = message_bytes(m)
            if max_bytes > 0 and total + size > max_bytes:
                complete = False
                break
            out.append(m)
            total += size
        cur.close()
        out.reverse()
        return _Cached(out, last_id, total, complete)

    async def append(self, session_id: str, messages: list[Message]) -> None:
        """Stores ``messages`` in one transaction (all or nothing); their content
        parts capped at ``part_bytes`` a message (in the file and the cache)."""
        await self._write(session_id, messages, None)

    async def append_note(self, task: TaskRecord, note: Message) -> bool:
        """Appends an ended task's history note and marks the task noted, in one
        transaction; False (nothing written) when it was noted already. Called
        under the session's lock."""
        return await self._write(task.session_id, [note], task.task_id)

    async def _write(self, session_id: str, messages: list[Message], noted: str | None) -> bool:
        if not messages:
            return True
        messages = [self._capped(m) for m in messages]
        ids = await self._run(self._append, session_id, messages, noted)
        if ids is None:
            return False
        first_id, last_id = ids
        cached = self._cache.get(session_id)
        # Extend the cached copy unless it was loaded after these rows existed.
        if cached is not None and cached.last_id < first_id:
            cached.messages.extend(messages)
            cached.last_id = last_id
            added = sum(message_bytes(m) for m in messages)
            cached.nbytes += added
            self._cached_bytes += added
            self._trim_tail(cached)
            self._evict()
        return True

    def _capped(self, m: Message) -> Message:
        if not m.parts or sum(part_size(p) for p in m.parts) <= self.part_bytes:
            return m
        return dataclasses.replace(m, parts=capped_parts(m.parts, self.part_bytes), weight=0)

    def _trim_tail(self, cached: _Cached) -> None:
        drop, freed = 0, 0
        while drop < len(cached.messages) and (
            len(cached.messages) - drop > self.tail_messages
            or cached.nbytes - freed > self.tail_bytes
        ):
            freed += message_bytes(cached.messages[drop])
            drop += 1
        if drop:
            del cached.messages[:drop]
            cached.nbytes -= freed
            self._cached_bytes -= freed
            cached.complete = False

    def _append(
        self, session_id: str, messages: list[Message], noted: str | None
    ) -> tuple[int, int] | None:
        """Inserts the rows; with ``noted`` (a task id) only if that task is not
        noted yet, marking it so in the same transaction (else None)."""
        db = self._writable()
        rows = [
            (
                session_id,
                m.role,
                m.content,
                json.dumps([c.to_json() for c in m.tool_calls]) if m.tool_calls else None,
                m.tool_call_id,
                m.name,
                m.created_at,
                _parts_blob(m.parts),
            )
            for m in messages
        ]
        ids: list[int] = []
        with db:
            db.execute("BEGIN")
            if noted is not None and not (
                db.execute(
                    "UPDATE tasks SET noted = 1 WHERE task_id = ? AND noted = 0", (noted,)
                ).rowcount
            ):
                return None
            for row in rows:
                cur = db.execute(
                    "INSERT INTO messages (session_id, role, content, tool_calls, tool_call_id,"
                    " name, created_at, parts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                ids.append(cur.lastrowid or 0)
        return ids[0], ids[-1]

    # -- tasks ------------------------------------------------------------

    async def claim_session(self, session_id: str, principal: str) -> str:
        """The session's owner: ``principal`` when it had none (first use claims it).

        A session with history or tasks but no owner was written before
        authentication was on: it goes to nobody ("", admins only), not to
        whoever asks first."""
        owner = self._owners.get(session_id)
        if owner is None:
            owner = await self._run(self._claim, session_id, principal)
            if len(self._owners) >= OWNER_CACHE_ENTRIES:
                self._owners.clear()
            self._owners[session_id] = owner
        return owner

    def _claim(self, session_id: str, principal: str) -> str:
        db = self._writable()
        db.execute(
            "INSERT OR IGNORE INTO session_owners (session_id, owner) SELECT ?, CASE WHEN "
            "EXISTS (SELECT 1 FROM messages WHERE session_id = ?) OR "
            "EXISTS (SELECT 1 FROM tasks WHERE session_id = ?) THEN '' ELSE ? END",
            (session_id, session_id, session_id, principal),
        )
        row = db.execute(
            "SELECT owner FROM session_owners WHERE session_id = ?", (session_id,)
        ).fetchone()
        return str(row[0])

    async def insert_task(self, task: TaskRecord) -> None:
        await self._run(self._insert_task, task)

    def _insert_task(self, t: TaskRecord) -> None:
        self._writable().execute(
            "INSERT INTO tasks (task_id, session_id, tool_name, call_id, role, arguments,"
            " status, created_at, token, follow_up) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.task_id,
                t.session_id,
                t.tool_name,
                t.call_id,
                t.role,
                json.dumps(t.arguments),
                t.status,
                t.created_at,
                t.token,
                t.follow_up,
            ),
        )

    async def finish_task(self, task: TaskRecord) -> bool:
        """Stores a task's outcome; its content parts capped at ``part_bytes`` (in ``task`` too).

        Only a running task ends: False (nothing written) when it had ended
        already, so a result is delivered once however many arrive.
        """
        if sum(part_size(p) for p in task.parts) > self.part_bytes:
            task.parts = capped_parts(task.parts, self.part_bytes)
        return await self._run(self._finish_task, task)

    def _finish_task(self, t: TaskRecord) -> bool:
        cur = self._writable().execute(
            "UPDATE tasks SET status = ?, output = ?, error = ?, finished_at = ?, parts = ?"
            " WHERE task_id = ? AND status = 'running'",
            (
                t.status,
                json.dumps(t.output),
                t.error,
                t.finished_at,
                _parts_blob(t.parts),
                t.task_id,
            ),
        )
        if cur.rowcount and t.status != "running":
            self.unacked += 1
        return 0 < cur.rowcount

    async def accept_task(self, task: TaskRecord) -> bool:
        """Stores that a running task became a long job (job_id, callback_address,
        expires_at of ``task``); False when it had ended already."""
        return await self._run(self._accept_task, task)

    def _accept_task(self, t: TaskRecord) -> bool:
        return (
            0
            < self._writable()
            .execute(
                "UPDATE tasks SET job_id = ?, callback_address = ?, expires_at = ?"
                " WHERE task_id = ? AND status = 'running'",
                (t.job_id, t.callback_address, t.expires_at, t.task_id),
            )
            .rowcount
        )

    async def set_progress(self, task: TaskRecord) -> bool:
        """Stores a running task's progress (the progress_* fields of ``task``);
        False when it had ended already."""
        return await self._run(self._set_progress, task)

    def _set_progress(self, t: TaskRecord) -> bool:
        return (
            0
            < self._writable()
            .execute(
                "UPDATE tasks SET progress_fraction = ?, progress_message = ?, progress_at = ?"
                " WHERE task_id = ? AND status = 'running'",
                (t.progress_fraction, t.progress_message, t.progress_at, t.task_id),
            )
            .rowcount
        )

    async def set_follow_up_text(self, task: TaskRecord) -> None:
        """Stores the model's sentence about a task's result (``task.follow_up_text``)."""
        await self._run(self._set_follow_up_text, task)

    def _set_follow_up_text(self, t: TaskRecord) -> None:
        self._writable().execute(
            "UPDATE tasks SET follow_up_text = ? WHERE task_id = ?", (t.follow_up_text, t.task_id)
        )

    async def running_snapshots(self, session_id: str, limit: int) -> list[TaskRecord]:
        """A session's running tasks that are long jobs or reported progress, oldest
        first, at most ``limit`` (what a new progress subscriber is shown first)."""
        return await self._run(self._running_snapshots, session_id, limit)

    def _running_snapshots(self, session_id: str, limit: int) -> list[TaskRecord]:
        rows = self.db.execute(
            "SELECT * FROM tasks WHERE session_id = ? AND status = 'running'"
            " AND (job_id != '' OR progress_at IS NOT NULL) ORDER BY created_at LIMIT ?",
            (session_id, limit),
        ).fetchall()
        return [_task(r) for r in rows]

    async def running_jobs(self) -> list[TaskRecord]:
        """Running tasks their plugins accepted as long jobs (they outlive a restart)."""
        return await self._run(self._running_jobs)

    def _running_jobs(self) -> list[TaskRecord]:
        rows = self.db.execute(
            "SELECT * FROM tasks WHERE status = 'running' AND job_id != ''"
        ).fetchall()
        return [_task(r) for r in rows]

    async def get_task(self, task_id: str) -> TaskRecord | None:
        return await self._run(self._get_task, task_id)

    def _get_task(self, task_id: str) -> TaskRecord | None:
        row = self.db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _task(row) if row else None

    async def unacked_results(
        self, session_id: str, *, after: tuple[float, str] | None = None, limit: int = 0
    ) -> list[TaskRecord]:
        """Finished, not yet acknowledged tasks of a session, oldest first.

        ``after``: only those after this (finished_at, task_id); ``limit`` > 0:
        at most that many (a page).
        """
        return await self._run(self._unacked, session_id, after, limit)

    def _unacked(
        self, session_id: str, after: tuple[float, str] | None, limit: int
    ) -> list[TaskRecord]:
        sql = "SELECT * FROM tasks WHERE session_id = ? AND acked = 0 AND status != 'running'"
        args: list[Any] = [session_id]
        if after is not None:
            sql += " AND (finished_at, task_id) > (?, ?)"
            args += [after[0], after[1]]
        sql += " ORDER BY finished_at, task_id"
        if limit > 0:
            sql += " LIMIT ?"
            args.append(limit)
        return [_task(r) for r in self.db.execute(sql, args).fetchall()]

    async def ack_tasks(self, session_id: str, task_ids: list[str]) -> int:
        """Marks finished tasks acknowledged; returns how many were newly marked."""
        return await self._run(self._ack, session_id, task_ids)

    def _ack(self, session_id: str, task_ids: list[str]) -> int:
        db = self._writable()
        with db:
            db.execute("BEGIN")
            cur = db.executemany(
                "UPDATE tasks SET acked = 1 WHERE session_id = ? AND task_id = ?"
                " AND acked = 0 AND status != 'running'",
                [(session_id, t) for t in dict.fromkeys(task_ids)],
            )
        self.unacked -= cur.rowcount
        return cur.rowcount

    async def unnoted_tasks(self, limit: int) -> list[TaskRecord]:
        """Ended tasks whose history note was never written (the process was killed
        between storing the outcome and the note), oldest first, at most ``limit``.
        Asked at startup only: whoever was to write them is gone."""
        return await self._run(self._unnoted, limit)

    def _unnoted(self, limit: int) -> list[TaskRecord]:
        rows = self.db.execute(
            "SELECT * FROM tasks WHERE noted = 0 AND status != 'running'"
            " ORDER BY finished_at, task_id LIMIT ?",
            (limit,),
        ).fetchall()
        return [_task(r) for r in rows]

    async def fail_running_tasks(self, error: str) -> list[TaskRecord]:
        """Marks every RUNNING task failed (their runner is gone) but accepted long
        jobs (their plugin finishes them); returns them."""
        return await self._run(self._fail_running, error)

    def _fail_running(self, error: str) -> list[TaskRecord]:
        now = time.time()
        db = self._writable()
        with db:
            db.execute("BEGIN")
            rows = db.execute(
                "SELECT * FROM tasks WHERE status = 'running' AND job_id = ''"
            ).fetchall()
            db.execute(
                "UPDATE tasks SET status = 'failed', error = ?, output = 'null', finished_at = ?"
                " WHERE status = 'running' AND job_id = ''",
                (error, now),
            )
        failed = [_task(r) for r in rows]
        self.unacked += len(failed)
        for t in failed:
            t.status, t.error, t.finished_at = "failed", error, now
        return failed
