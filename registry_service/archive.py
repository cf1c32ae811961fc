"""SQLite archive of tools registered without a lease, so they survive restarts.

Leased tools are not stored: their plugin registers them again with a new
lease. The registry writes a change here *before* applying it in memory, and
only applies it when the write committed: a full disk, a read-only file
system or a database deleted while running is an ``ArchiveError`` for the
caller, never a tool that is served but not stored (or removed but still
stored, to come back after a restart). Writes run on one worker thread, one
transaction each, so they never block the event loop and never reorder;
Invoke and List never touch SQLite.

At startup the file is checked (``PRAGMA quick_check``) and must be writable:
a corrupt or read-only database is an ArchiveError naming the file, not a
registry that starts empty or cannot store. A file with no write permission
bit (``chmod a-w``) counts as read-only, at startup and before each write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from registry_service.store import Entry, Key, StorageError
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


def _read_only(stat: os.stat_result) -> str | None:
    """Why a file with this mode counts as read-only: no write permission bit at all.

    Checked by mode, not by trying, so ``chmod a-w`` stops root's writes too
    (root may write anyway, and an operator who removed every write bit
    means "do not change this file").
    """
    if not stat.st_mode & 0o222:
        return "is read-only (no write permission bits)"
    return None


class ArchiveError(StorageError):
    """The database cannot be opened or written; the message names the file and the cause."""


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
        # Keys that have a row, so removing a leased tool costs no write.
        self._stored: set[Key] = set()
        # (st_dev, st_ino) of the file opened: a deleted or replaced file is
        # noticed before a write that would land in an unlinked inode.
        self._identity: tuple[int, int] | None = None

    def is_stored(self, key: Key) -> bool:
        return key in self._stored

    async def open(self) -> list[StoredTool]:
        """Opens (creating) the database and returns every stored tool; ArchiveError if unusable."""
        return await asyncio.wrap_future(self._worker.submit(self._open))

    def _open(self) -> list[StoredTool]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot be opened", exc) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise ArchiveError(
                    f"registry database {self.path} is corrupt ({'; '.join(problems[:3])}); "
                    "move it away to start with no stored tools"
                )
            # Writable? A read-only file opens fine and fails only at the first write.
            stat = os.stat(self.path)
            if err := _read_only(stat):
                raise ArchiveError(f"registry database {self.path} {err}")
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            tools = list(self._read_all(db))
        except ArchiveError:
            db.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            db.close()
            raise self._error("is unusable", exc) from None
        self._identity = (stat.st_dev, stat.st_ino)
        self._db = db
        return tools

    def _error(self, what: str, exc: BaseException) -> ArchiveError:
        hint = ""
        if isinstance(exc, sqlite3.DatabaseError) and any(
            sign in str(exc) for sign in ("not a database", "malformed")
        ):
            what, hint = "is corrupt", "; move it away to start with no stored tools"
        return ArchiveError(f"registry database {self.path} {what}: {exc}{hint}")

    def _read_all(self, db: sqlite3.Connection) -> Iterator[StoredTool]:
        rows = db.execute("SELECT role, name, definition, registered_at FROM tools ORDER BY 1, 2")
        for role, name, blob, registered_at in rows:
            definition = tools_pb2.ToolDefinition()
            try:
                definition.ParseFromString(blob)
            except Exception:
                # The row stays in the file; only this tool is not served.
                log.warning("skipping unreadable stored tool %r in role %r", name, role)
                continue
            self._stored.add((role, name))
            yield StoredTool(role, definition, registered_at)

    def changes_for(self, put: list[Entry], removed: list[Key]) -> tuple[list[Entry], list[Key]]:
        """The writes that keep the file in step: leaseless entries are stored; rows of
        removed keys and of keys now leased are deleted."""
        puts = [e for e in put if not e.lease_id]
        deletes = [e.key for e in put if e.lease_id and e.key in self._stored]
        deletes += [k for k in removed if k in self._stored]
        return puts, deletes

    async def write(self, puts: list[Entry], deletes: list[Key]) -> None:
        """Commits ``puts`` and ``deletes`` in one transaction, or raises ArchiveError."""
        if not puts and not deletes:
            return
        rows = [
            (e.role, e.spec.name, e.spec.definition.SerializeToString(), e.registered_at)
            for e in puts
        ]
        await asyncio.wrap_future(self._worker.submit(self._write, rows, deletes))
        self._stored.difference_update(deletes)
        self._stored.update(e.key for e in puts)

    def _write(self, rows: list[tuple[str, str, bytes, float]], deletes: list[Key]) -> None:
        db = self._db
        if db is None:
            raise ArchiveError(f"registry database {self.path} is closed")
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stat = None
        if stat is None or (stat.st_dev, stat.st_ino) != self._identity:
            raise ArchiveError(
                f"registry database {self.path} was deleted or replaced while the registry "
                "ran; changes cannot be stored (restart the registry)"
            )
        if err := _read_only(stat):
            raise ArchiveError(f"registry database {self.path} {err}; changes cannot be stored")
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM tools WHERE role = ? AND name = ?", deletes)
            db.executemany("INSERT OR REPLACE INTO tools VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("cannot roll back %s", self.path)
            log.error("cannot write %s: %s", self.path, exc)
            raise ArchiveError(f"registry database {self.path} cannot be written: {exc}") from None

    async def close(self) -> None:
        await asyncio.wrap_future(self._worker.submit(self._close))
        self._worker.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
