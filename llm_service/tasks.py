"""Async tool tasks: run in the background, stored, pushed to subscribers.

Lifecycle: ``start`` stores the task as running and returns at once (the
model gets an acknowledgement); the call runs through the same
``Dispatcher.invoke`` as sync calls, with the tool's timeout; when it ends the
result is stored, pushed to every live ``results`` stream of the session, and
appended to the session's history as a system note so the next turn sees it.
Stored results are re-sent to each new subscriber until acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from llm_service.history import HistoryStore, TaskRecord
from llm_service.messages import Message, ToolCall
from toolcall.dispatch import Dispatcher
from toolcall.ids import new_task_id
from toolcall.jsonvalue import from_value
from toolcall.tools import ToolSpec

log = logging.getLogger(__name__)

RESTARTED_ERROR = "service restarted before the task finished"
STOPPED_ERROR = "service stopped before the task finished"
_CLOSED = None  # queue sentinel: the service is stopping


def result_note(task: TaskRecord) -> str:
    """The system note added to the session's history when a task ends."""
    if task.status == "failed":
        return f"Async task {task.task_id} ({task.tool_name}) failed: {task.error}"
    output = json.dumps(task.output, ensure_ascii=False, separators=(",", ":"))
    return f"Result of async task {task.task_id} ({task.tool_name}): {output}"


class AsyncTasks:
    def __init__(self, store: HistoryStore, dispatcher: Dispatcher) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._running: dict[str, asyncio.Task[None]] = {}
        self._listeners: dict[str, set[asyncio.Queue[TaskRecord | None]]] = {}
        self._closing = False

    async def recover(self) -> None:
        """At startup: tasks left running by a previous process can never finish."""
        for task in await self._store.fail_running_tasks(RESTARTED_ERROR):
            log.warning(
                "task %s (%s) was running at shutdown; marked failed", task.task_id, task.tool_name
            )
            await self._add_note(task)

    async def start(
        self,
        spec: ToolSpec,
        call: ToolCall,
        arguments: dict[str, Any] | None,
        session_id: str,
        role: str,
    ) -> TaskRecord:
        """Starts a call whose arguments ``spec.check_arguments`` has passed (None: raw only)."""
        task = TaskRecord(
            task_id=new_task_id(),
            session_id=session_id,
            tool_name=spec.name,
            call_id=call.call_id,
            role=role,
            arguments=arguments if arguments is not None else {},
            created_at=time.time(),
        )
        await self._store.insert_task(task)
        runner = asyncio.create_task(
            self._run(spec, call, arguments, task), name=f"async-tool-{task.task_id}"
        )
        self._running[task.task_id] = runner
        runner.add_done_callback(lambda _: self._running.pop(task.task_id, None))
        return task

    async def _run(
        self, spec: ToolSpec, call: ToolCall, arguments: dict[str, Any] | None, task: TaskRecord
    ) -> None:
        try:
            result = await self._dispatcher.invoke(
                spec,
                raw_arguments=call.raw_arguments,
                arguments=arguments,
                call_id=call.call_id,
                session_id=task.session_id,
                role=task.role,
                checked=True,
            )
        except asyncio.CancelledError:
            task.status, task.error = "failed", STOPPED_ERROR
            # Record the outcome even though we were cancelled (service stopping).
            await asyncio.shield(self._finish(task))
            raise
        except Exception as exc:  # a bug, not a tool failure: still report it
            log.exception("async task %s failed", task.task_id)
            task.status, task.error = "failed", f"INTERNAL: {type(exc).__name__}: {exc}"
        else:
            task.output = from_value(result.output)
            task.status = "failed" if result.is_error else "succeeded"
            task.error = result.error if result.is_error else ""
        await self._finish(task)

    async def _finish(self, task: TaskRecord) -> None:
        task.finished_at = time.time()
        try:
            await self._store.finish_task(task)
        except Exception:
            log.exception("cannot store the result of task %s", task.task_id)
        for queue in self._listeners.get(task.session_id, ()):
            queue.put_nowait(task)
        await self._add_note(task)

    async def _add_note(self, task: TaskRecord) -> None:
        note = Message(role="system", content=result_note(task))
        try:
            async with self._store.session_lock(task.session_id):
                await self._store.append(task.session_id, [note])
        except Exception:
            log.exception("cannot add the result of task %s to the history", task.task_id)

    async def results(self, session_id: str, *, auto_ack: bool) -> AsyncGenerator[TaskRecord, None]:
        """Stored unacknowledged results, then live ones, until the service stops."""
        queue: asyncio.Queue[TaskRecord | None] = asyncio.Queue()
        # Listen before reading the store so nothing finishing in between is missed.
        self._listeners.setdefault(session_id, set()).add(queue)
        sent: set[str] = set()
        try:
            for task in await self._store.unacked_results(session_id):
                sent.add(task.task_id)
                yield task
                if auto_ack:
                    await self._store.ack_tasks(session_id, [task.task_id])
            while not self._closing:
                item = await queue.get()
                if item is _CLOSED:
                    break
                if item.task_id in sent:
                    continue
                sent.add(item.task_id)
                yield item
                if auto_ack:
                    await self._store.ack_tasks(session_id, [item.task_id])
        finally:
            listeners = self._listeners.get(session_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[session_id]

    def end_streams(self) -> None:
        """Ends every ``results`` stream (the service is stopping)."""
        self._closing = True
        for queues in self._listeners.values():
            for queue in queues:
                queue.put_nowait(_CLOSED)

    async def close(self, grace_s: float) -> None:
        """Lets running tasks finish for ``grace_s``, then cancels (and records) the rest."""
        self.end_streams()
        running = list(self._running.values())
        if running:
            log.info("waiting up to %gs for %d async task(s)", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for runner in pending:
                runner.cancel()
            for runner in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
