"""Async tool tasks: run in the background, stored, pushed to subscribers.

Lifecycle: ``start`` stores the task as running and returns at once (the
model gets an acknowledgement); the call runs through the same
``Dispatcher.invoke`` as sync calls, with the tool's timeout; when it ends the
result is stored, pushed to every live ``results`` stream of the session, and
appended to the session's history as a system note so the next turn sees it.
Stored results are re-sent to each new subscriber until acknowledged.

Bounds: running tasks per session and in total (``start`` raises
``TaskLimitError`` beyond them); subscribers per session
(``MAX_SUBSCRIBERS_PER_SESSION``); results queued for one subscriber
(``Subscription``: entries and bytes; past either the subscriber is dropped
and told so, and a new Subscribe sends every unacknowledged result again);
stored results are read in pages of ``STORED_PAGE``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from llm_service.history import TaskRecord
from llm_service.messages import Message, ToolCall
from llm_service.store import ConversationStore
from toolcall.dispatch import Dispatcher
from toolcall.ids import new_task_id
from toolcall.jsonvalue import from_value
from toolcall.parts import part_size, placeholder
from toolcall.telemetry import Telemetry
from toolcall.tools import ToolSpec

log = logging.getLogger(__name__)

RESTARTED_ERROR = "service restarted before the task finished"
# Replicas on PostgreSQL: the replica running the task died (its lock in the database freed).
REPLICA_GONE_ERROR = "the LLMService replica running the task stopped before it finished"
# How often a replica looks for the tasks of replicas that are gone.
REAP_INTERVAL_S = 1.0
STOPPED_ERROR = "service stopped before the task finished"
CANCELLED_ERROR = "CANCELLED: the task was cancelled (CancelTask)"
# A CancelTask reason is kept up to this many characters.
MAX_CANCEL_REASON_CHARS = 500
MAX_SUBSCRIBERS_PER_SESSION = 16
# Subscribe streams over all sessions (each holds a queue of up to 16 MiB).
MAX_SUBSCRIBERS = 1024
STORED_PAGE = 100
# What a queued result weighs beyond its output, error and arguments.
TASK_OVERHEAD_BYTES = 256


class TaskLimitError(Exception):
    """Too many async tasks are running (of the session, or in total)."""


class SubscriberLimitError(Exception):
    """The session has ``MAX_SUBSCRIBERS_PER_SESSION`` Subscribe streams already,
    or the service ``MAX_SUBSCRIBERS``."""


class SubscriberTooSlow(Exception):
    """The subscriber did not read fast enough; its queue went over a bound."""


def task_bytes(task: TaskRecord) -> int:
    """What a finished task weighs in a subscriber's queue."""
    return (
        TASK_OVERHEAD_BYTES
        + len(json.dumps(task.output, ensure_ascii=False).encode())
        + len(task.error.encode())
        + len(json.dumps(task.arguments, ensure_ascii=False).encode())
        + sum(part_size(p) for p in task.parts)
    )


def result_note(task: TaskRecord) -> str:
    """The system note added to the session's history when a task ends."""
    output = json.dumps(task.output, ensure_ascii=False, separators=(",", ":"))
    # Content parts are named, not shown: a note is text (Subscribe and
    # GetTask carry the parts themselves).
    parts = "".join(f" with {placeholder(p)}" for p in task.parts[:1])
    parts += "".join(f", {placeholder(p)}" for p in task.parts[1:])
    if task.status == "cancelled":
        return f"Async task {task.task_id} ({task.tool_name}) was cancelled: {task.error}"
    if task.status == "failed":
        failed = f"Async task {task.task_id} ({task.tool_name}) failed: {task.error}"
        # The tool's output explains its failure: the model gets both.
        return (failed if task.output is None else f"{failed}; output: {output}") + parts
    return f"Result of async task {task.task_id} ({task.tool_name}): {output}{parts}"


class Subscription:
    """One Subscribe stream: stored unacknowledged results, then live ones.

    Live results wait in a queue bounded by ``max_items`` and ``max_bytes``;
    when a push would go over either, the queue is emptied (the results stay
    stored, unacknowledged) and ``overflowed`` is set: the stream must end,
    and the next Subscribe sends them again.
    """

    def __init__(
        self, tasks: AsyncTasks, session_id: str, *, max_items: int, max_bytes: int
    ) -> None:
        self._tasks = tasks
        self.session_id = session_id
        self.max_items = max(1, max_items)
        self.max_bytes = max(1, max_bytes)
        self._queue: collections.deque[tuple[TaskRecord, int]] = collections.deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self.overflowed = asyncio.Event()
        self.closed = False

    def push(self, task: TaskRecord, size: int) -> None:
        if self.closed or self.overflowed.is_set():
            return
        if len(self._queue) >= self.max_items or self._queued_bytes + size > self.max_bytes:
            self._queue.clear()
            self._queued_bytes = 0
            self.overflowed.set()
        else:
            self._queue.append((task, size))
            self._queued_bytes += size
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def too_slow(self) -> SubscriberTooSlow:
        return SubscriberTooSlow(
            f"this subscriber fell behind by more than {self.max_items} results or "
            f"{self.max_bytes} bytes (TOOLCALL_SUBSCRIBE_BUFFER, TOOLCALL_SUBSCRIBE_BUFFER_BYTES); "
            "subscribe again: unacknowledged results are sent again"
        )

    async def _next_live(self) -> TaskRecord | None:
        """The next queued result; None once closed. Raises SubscriberTooSlow."""
        while True:
            if self.overflowed.is_set():
                raise self.too_slow()
            if self._queue:
                task, size = self._queue.popleft()
                self._queued_bytes -= size
                return task
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    async def results(self, *, auto_ack: bool) -> AsyncGenerator[TaskRecord, None]:
        """Stored unacknowledged results (in pages), then live ones, until closed.

        Raises SubscriberTooSlow when the queue went over its bounds.
        """
        store = self._tasks.store
        after: tuple[float, str] = (float("-inf"), "")
        while True:
            page = await store.unacked_results(self.session_id, after=after, limit=STORED_PAGE)
            for task in page:
                yield task
                if auto_ack:
                    await store.ack_tasks(self.session_id, [task.task_id])
            if page:
                after = (page[-1].finished_at or 0.0, page[-1].task_id)
            if len(page) < STORED_PAGE:
                break
        # Results queued while the store was read were stored first, so the
        # pages above held the ones that finished up to ``after``: skip them.
        already_sent = len(self._queue)
        while (live := await self._next_live()) is not None:
            if already_sent > 0:
                already_sent -= 1
                if (live.finished_at or 0.0, live.task_id) <= after:
                    continue
            yield live
            if auto_ack:
                await store.ack_tasks(self.session_id, [live.task_id])


class AsyncTasks:
    def __init__(
        self,
        store: ConversationStore,
        dispatcher: Dispatcher,
        *,
        max_per_session: int = 64,
        max_total: int = 1024,
        subscribe_buffer: int = 256,
        subscribe_buffer_bytes: int = 16 * 1024 * 1024,
        telemetry: Telemetry = Telemetry.OFF,
    ) -> None:
        self.store = store
        self._dispatcher = dispatcher
        self.max_per_session = max(1, max_per_session)
        self.max_total = max(1, max_total)
        self._subscribe_buffer = subscribe_buffer
        self._subscribe_buffer_bytes = subscribe_buffer_bytes
        self._running: dict[str, asyncio.Task[None]] = {}
        # Tasks starting or running, per session and in total (the caps' counts).
        self._running_by_session: collections.Counter[str] = collections.Counter()
        self._running_total = 0
        self._listeners: dict[str, set[Subscription]] = {}
        # Task id -> the reason given to CancelTask, while its cancellation lands.
        self._cancel_reasons: dict[str, str] = {}
        self._subscriber_count = 0  # Subscribe streams over all sessions
        self._closing = False
        self._telemetry = telemetry
        # Replicas (a store with on_finished): results of tasks run elsewhere
        # reach this replica's subscribers, and tasks of dead replicas are failed here.
        self._replicated = hasattr(store, "on_finished")
        self._reaper: asyncio.Task[None] | None = None
        # Fetches of results announced by other replicas (bounded by MAX_SUBSCRIBERS
        # sessions' worth: only sessions with a subscriber here are fetched).
        self._fetches: set[asyncio.Task[None]] = set()
        if self._replicated:
            store.on_finished(self._finished_elsewhere)  # type: ignore[attr-defined]

    @property
    def subscribers(self) -> int:
        """Subscribe streams open, over all sessions."""
        return self._subscriber_count

    async def recover(self) -> None:
        """At startup: tasks left running by a previous process can never finish.

        With replicas, only those of replicas that are gone, and again every
        ``REAP_INTERVAL_S``: a replica killed mid-task leaves its tasks failed
        with a reason and delivered.
        """
        await self._reap(REPLICA_GONE_ERROR if self._replicated else RESTARTED_ERROR)
        if self._replicated:
            self._reaper = asyncio.create_task(self._reap_forever(), name="llm-task-reaper")

    async def _reap(self, error: str) -> None:
        for task in await self.store.fail_running_tasks(error):
            log.warning(
                "task %s (%s) was running in a process that is gone; marked failed",
                task.task_id,
                task.tool_name,
            )
            self._push(task)
            await self._add_note(task)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self._reap(REPLICA_GONE_ERROR)
            except Exception as exc:  # the database is away: next round
                log.warning("cannot look for tasks of stopped replicas: %s", exc)

    def _finished_elsewhere(self, session_id: str, task_id: str) -> None:
        """Another replica stored a result: hand it to this replica's subscribers."""
        if session_id not in self._listeners or self._closing:
            return
        fetch = asyncio.create_task(self._deliver(task_id))
        self._fetches.add(fetch)
        fetch.add_done_callback(self._fetches.discard)

    async def _deliver(self, task_id: str) -> None:
        try:
            task = await self.store.get_task(task_id)
        except Exception as exc:  # still stored unacknowledged: the next Subscribe sends it
            log.warning("cannot read the result of task %s: %s", task_id, exc)
            return
        if task is not None and task.finished:
            self._push(task)

    def _push(self, task: TaskRecord) -> None:
        size = task_bytes(task)
        for subscription in self._listeners.get(task.session_id, ()):
            subscription.push(task, size)

    def running(self, session_id: str | None = None) -> int:
        """Tasks running now: of one session, or in total."""
        return self._running_total if session_id is None else self._running_by_session[session_id]

    def check_room(self, session_id: str) -> None:
        """Raises TaskLimitError when no further task of ``session_id`` may start now."""
        if self._running_by_session[session_id] >= self.max_per_session:
            raise TaskLimitError(
                f"this session already has {self.max_per_session} async tasks running "
                "(TOOLCALL_MAX_ASYNC_TASKS_PER_SESSION); try again when some have finished"
            )
        if self._running_total >= self.max_total:
            raise TaskLimitError(
                f"the service already runs {self.max_total} async tasks "
                "(TOOLCALL_MAX_ASYNC_TASKS); try again later"
            )

    async def start(
        self,
        spec: ToolSpec,
        call: ToolCall,
        arguments: dict[str, Any] | None,
        session_id: str,
        role: str,
    ) -> TaskRecord:
        """Starts a call whose arguments ``spec.check_arguments`` has passed (None: raw only).

        Raises TaskLimitError when over a bound.
        """
        self.check_room(session_id)
        task = TaskRecord(
            task_id=new_task_id(),
            session_id=session_id,
            tool_name=spec.name,
            call_id=call.call_id,
            role=role,
            arguments=arguments if arguments is not None else {},
            created_at=time.time(),
        )
        # Counted from before the insert, so concurrent starts cannot all pass the check.
        self._running_by_session[session_id] += 1
        self._running_total += 1
        try:
            await self.store.insert_task(task)
        except BaseException:
            self._release(session_id)
            raise
        # Its span is current in the task: the tool call becomes its child.
        span = self._telemetry.start_task(task.task_id, spec, session_id)
        runner = asyncio.create_task(
            self._run(spec, call, arguments, task),
            name=f"async-tool-{task.task_id}",
            context=self._telemetry.task_context(span),
        )
        self._running[task.task_id] = runner

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(task.task_id, None)
            self._release(session_id)
            self._telemetry.end_task(span, task.status, task.error)

        runner.add_done_callback(done)
        return task

    async def cancel(self, task_id: str, reason: str, wait_s: float = 5.0) -> bool:
        """Cancels a task running here and waits (at most ``wait_s``) for it to end.

        False when it is not running in this process (it has ended).
        """
        runner = self._running.get(task_id)
        if runner is None or runner.done():
            return False
        # One printable line: it goes into the task's error and the history.
        printable = "".join(c if c.isprintable() else " " for c in reason)
        self._cancel_reasons[task_id] = " ".join(printable.split())[:MAX_CANCEL_REASON_CHARS]
        runner.cancel()
        await asyncio.wait({runner}, timeout=wait_s)
        return True

    def _release(self, session_id: str) -> None:
        self._running_total -= 1
        self._running_by_session[session_id] -= 1
        if self._running_by_session[session_id] <= 0:
            del self._running_by_session[session_id]

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
            reason = self._cancel_reasons.pop(task.task_id, None)
            if reason is not None:  # CancelTask: the task ends here, the service runs on
                task.status = "cancelled"
                task.error = f"{CANCELLED_ERROR}: {reason}" if reason else CANCELLED_ERROR
                await self._finish(task)
                return
            task.status, task.error = "failed", STOPPED_ERROR
            # Record the outcome even though we were cancelled (service stopping).
            await asyncio.shield(self._finish(task))
            raise
        except Exception as exc:  # a bug, not a tool failure: still report it
            log.exception("async task %s failed", task.task_id)
            task.status, task.error = "failed", f"INTERNAL: {type(exc).__name__}: {exc}"
        else:
            task.output = from_value(result.output)
            task.parts = list(result.parts)
            task.status = "failed" if result.is_error else "succeeded"
            task.error = result.error if result.is_error else ""
        await self._finish(task)

    async def _finish(self, task: TaskRecord) -> None:
        task.finished_at = time.time()
        try:
            stored = await self.store.finish_task(task)
        except Exception:
            log.exception("cannot store the result of task %s", task.task_id)
            stored = None
        if stored is False:
            # Another replica declared this one gone and failed the task: that
            # outcome was delivered; a second one would duplicate it.
            log.warning("task %s had been failed by another replica; result dropped", task.task_id)
            return
        self._push(task)
        await self._add_note(task)

    async def _add_note(self, task: TaskRecord) -> None:
        note = Message(role="system", content=result_note(task))
        try:
            async with self.store.session_lock(task.session_id):
                await self.store.append(task.session_id, [note])
        except Exception:
            log.exception("cannot add the result of task %s to the history", task.task_id)

    def subscribe(self, session_id: str) -> Subscription:
        """A new subscription; raises SubscriberLimitError. ``unsubscribe`` it when done."""
        if self._subscriber_count >= MAX_SUBSCRIBERS:
            raise SubscriberLimitError(
                f"the LLMService already serves {MAX_SUBSCRIBERS} Subscribe streams; retry later"
            )
        listeners = self._listeners.setdefault(session_id, set())
        if len(listeners) >= MAX_SUBSCRIBERS_PER_SESSION:
            raise SubscriberLimitError(
                f"session already has {MAX_SUBSCRIBERS_PER_SESSION} Subscribe streams; "
                "end one first"
            )
        subscription = Subscription(
            self,
            session_id,
            max_items=self._subscribe_buffer,
            max_bytes=self._subscribe_buffer_bytes,
        )
        if self._closing:
            subscription.close()
        # Listen before reading the store so nothing finishing in between is missed.
        listeners.add(subscription)
        self._subscriber_count += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        listeners = self._listeners.get(subscription.session_id)
        if listeners is not None and subscription in listeners:
            listeners.discard(subscription)
            self._subscriber_count -= 1
            if not listeners:
                del self._listeners[subscription.session_id]

    async def results(self, session_id: str, *, auto_ack: bool) -> AsyncGenerator[TaskRecord, None]:
        """Stored unacknowledged results, then live ones, until the service stops."""
        subscription = self.subscribe(session_id)
        try:
            async with contextlib.aclosing(subscription.results(auto_ack=auto_ack)) as items:
                async for task in items:
                    yield task
        finally:
            self.unsubscribe(subscription)

    def end_streams(self) -> None:
        """Ends every ``results`` stream (the service is stopping)."""
        self._closing = True
        for subscriptions in self._listeners.values():
            for subscription in subscriptions:
                subscription.close()

    async def close(self, grace_s: float) -> None:
        """Lets running tasks finish for ``grace_s``, then cancels (and records) the rest."""
        self.end_streams()
        for background in [self._reaper, *self._fetches]:
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        running = list(self._running.values())
        if running:
            log.info("waiting up to %gs for %d async task(s)", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for runner in pending:
                runner.cancel()
            for runner in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
