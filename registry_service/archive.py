"""SQLite archive of tools registered without a lease, so they survive restarts.

Leased tools are not stored: their plugin registers them again with a new
lease. Writes run on one worker thread in submission order, so they never
block the event loop and never reorder; Invoke and List never touch SQLite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from registry_service.store import Change, Key
from toolcall.v1 import tools_pb2

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tools (
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    definition BLOB NOT NULL,
    registered_at REAL NOT NULL,
    PRIMARY KEY (role, name)
)
"""


@dataclass(frozen=True, slots=True)
class StoredTool:
    role: str
    definition: tools_pb2.ToolDefinition
    registered_at: float


class ToolArchive:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="registry-sqlite"
        )
        self._last: concurrent.futures.Future[None] | None = None
        # Keys that have a row, so removing a leased tool costs no write.
        self._stored: set[Key] = set()

    async def open(self) -> list[StoredTool]:
        """Opens (creating) the database and returns every stored tool."""
        return await asyncio.wrap_future(self._worker.submit(self._open))

    def _open(self) -> list[StoredTool]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        self._db = db
        return list(self._read_all(db))

    def _read_all(self, db: sqlite3.Connection) -> Iterator[StoredTool]:
        rows = db.execute("SELECT role, name, definition, registered_at FROM tools ORDER BY 1, 2")
        for role, name, blob, registered_at in rows:
            definition = tools_pb2.ToolDefinition()
            try:
                definition.ParseFromString(blob)
            except Exception:
                log.warning("skipping unreadable stored tool %r in role %r", name, role)
                continue
            self._stored.add((role, name))
            yield StoredTool(role, definition, registered_at)

    def record(self, change: Change) -> None:
        """Store listener: mirrors a change of a leaseless tool into SQLite."""
        entry = change.entry
        key = entry.key
        if not change.removed and not entry.lease_id:
            self._stored.add(key)
            blob = entry.spec.definition.SerializeToString()
            self._submit(
                "INSERT OR REPLACE INTO tools VALUES (?, ?, ?, ?)",
                (key[0], key[1], blob, entry.registered_at),
            )
        elif key in self._stored:
            # Removed, or replaced by a leased registration.
            self._stored.discard(key)
            self._submit("DELETE FROM tools WHERE role = ? AND name = ?", key)

    def _submit(self, sql: str, params: tuple[object, ...]) -> None:
        self._last = self._worker.submit(self._execute, sql, params)

    def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        if self._db is None:
            return
        try:
            self._db.execute(sql, params)
        except sqlite3.Error:
            log.exception("cannot update %s", self.path)

    async def flush(self) -> None:
        """Waits until every change recorded so far is written."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wrap_future(last)

    async def close(self) -> None:
        await self.flush()
        await asyncio.wrap_future(self._worker.submit(self._close))
        self._worker.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
