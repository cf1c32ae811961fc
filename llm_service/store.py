"""Where the LLMService keeps history, async tasks and acknowledgements: the store interface.

Two backends with the same methods:

- ``HistoryStore`` (``llm_service.history``): SQLite, the embedded default,
  for one process (its cache of session tails is safe because no one else
  writes the file).
- ``PostgresStore`` (``llm_service.pg_store``): PostgreSQL, for several
  replicas of the LLMService on one database: turns of a session serialized
  by an advisory lock, tasks owned by the replica running them, results
  announced to every replica with ``NOTIFY``.

``make_store`` picks one from the settings (``--store`` / ``TOOLCALL_LLM_STORE``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from llm_service.history import HistoryStore, StoreError, TaskRecord
from llm_service.messages import Message
from llm_service.pg_store import PostgresOptions, PostgresStore

if TYPE_CHECKING:
    from llm_service.settings import LLMSettings

STORES = ("sqlite", "postgres")


class ConversationStore(Protocol):
    """What the orchestrator, the servicer and the async tasks need; raises StoreError."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def describe(self) -> str: ...
    def session_lock(self, session_id: str) -> AbstractAsyncContextManager[Any]:
        """Held by a chat turn and by a task's history note: one writer per session."""

    async def recent(self, session_id: str) -> list[Message]: ...
    async def messages(self, session_id: str, limit: int = 0) -> list[Message]: ...
    async def page(
        self, session_id: str, limit: int = 0, max_bytes: int = 0
    ) -> tuple[list[Message], bool]: ...
    async def append(self, session_id: str, messages: list[Message]) -> None: ...
    async def append_note(self, task: TaskRecord, note: Message) -> bool:
        """Appends an ended task's history note and marks it noted, atomically, under
        the session's lock; False (nothing written) when it was noted already."""

    async def claim_session(self, session_id: str, principal: str) -> str:
        """The session's owning principal, claimed by ``principal`` when it had none."""

    async def insert_task(self, task: TaskRecord) -> None: ...
    async def finish_task(self, task: TaskRecord) -> bool | None:
        """Stores the outcome; False when the task had ended already (PostgreSQL)."""

    async def accept_task(self, task: TaskRecord) -> bool:
        """A running task became a long job; False when it had ended already."""

    async def set_progress(self, task: TaskRecord) -> bool:
        """A running task's progress; False when it had ended already."""

    async def set_follow_up_text(self, task: TaskRecord) -> None: ...
    async def running_snapshots(self, session_id: str, limit: int) -> list[TaskRecord]: ...
    async def running_jobs(self) -> list[TaskRecord]: ...
    async def get_task(self, task_id: str) -> TaskRecord | None: ...
    async def unacked_results(
        self, session_id: str, *, after: tuple[float, str] | None = None, limit: int = 0
    ) -> list[TaskRecord]: ...
    async def ack_tasks(self, session_id: str, task_ids: list[str]) -> int: ...
    async def unnoted_tasks(self, limit: int) -> list[TaskRecord]:
        """Ended tasks whose note was never written and whose runner is gone: SQLite
        every one (asked at startup), PostgreSQL those of replicas found gone."""

    async def fail_running_tasks(self, error: str) -> list[TaskRecord]:
        """SQLite: every running task (its runner was this process). PostgreSQL: those of
        replicas that are gone."""


class Replicated(Protocol):
    """What a store shared by replicas adds (PostgresStore)."""

    replica_id: str

    def on_finished(self, callback: Callable[[str, str], None]) -> None: ...


def _pg_options(settings: LLMSettings) -> PostgresOptions:
    return PostgresOptions(
        dsn=settings.pg_dsn, pool_size=settings.pg_pool_size, schema=settings.pg_schema
    )


def store_problems(settings: LLMSettings) -> list[str]:
    """Store settings that cannot work, as readable sentences."""
    if settings.store not in STORES:
        return [f"the store must be one of {', '.join(STORES)}, got {settings.store[:40]!r}"]
    if settings.store == "postgres":
        return _pg_options(settings).problems()
    return []


def make_store(settings: LLMSettings) -> ConversationStore:
    """The settings' store; raises StoreError ("unavailable") when they cannot work."""
    if problems := store_problems(settings):
        raise StoreError("unavailable", "; ".join(problems))
    if settings.store == "postgres":
        return PostgresStore(
            _pg_options(settings),
            tail_messages=settings.max_history_messages,
            tail_bytes=settings.max_request_bytes,
            part_bytes=settings.history_part_bytes,
            cache_sessions=settings.history_cache_sessions,
            cache_bytes=settings.history_cache_bytes,
        )
    return HistoryStore(
        settings.resolved_db_path(),
        tail_messages=settings.max_history_messages,
        tail_bytes=settings.max_request_bytes,
        cache_sessions=settings.history_cache_sessions,
        cache_bytes=settings.history_cache_bytes,
        part_bytes=settings.history_part_bytes,
    )


__all__ = [
    "STORES",
    "ConversationStore",
    "Replicated",
    "StoreError",
    "make_store",
    "store_problems",
]
