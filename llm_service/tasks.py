"""Async tool tasks: run in the background, stored, pushed to subscribers.

Lifecycle: ``start`` stores the task as running and returns at once (the
model gets an acknowledgement); the call runs through the same
``Dispatcher.invoke`` as sync calls, with the tool's timeout; when it ends the
result is stored, pushed to every live ``results`` stream of the session, and
appended to the session's history as a system note so the next turn sees it.
The note is written once, marking the task noted in its transaction; a
runner killed between the outcome and the note leaves the task unnoted, and
the next start (SQLite) or another replica's reaper (PostgreSQL) writes it.
Stored results are re-sent to each new subscriber until acknowledged.

Long jobs: every async call offers the plugin a handle (task id, a random
per-task token, this service's address). A plugin that answers "accepted"
ends the call but not the task: it reports progress and the result later
(``report_progress`` / ``complete``, the LLMService's ReportProgress and
CompleteTask RPCs), from any process, authorised by the token alone. The
task keeps its place under the caps until it ends, survives a restart (the
store keeps it running, with its progress), and fails past its tool's
``max_job_seconds``; a cancelled or expired job's plugin is told through
``ToolCallback.CancelJob``. A result is stored only while the task runs, so
it is delivered once however many completions arrive.

Bounds: running tasks per session and in total (``start`` raises
``TaskLimitError`` beyond them); subscribers per session
(``MAX_SUBSCRIBERS_PER_SESSION``); results queued for one subscriber
(``Subscription``: entries and bytes; past either the subscriber is dropped
and told so, and a new Subscribe sends every unacknowledged result again);
stored results are read in pages of ``STORED_PAGE``; a progress message is
cut to ``MAX_PROGRESS_MESSAGE_CHARS``; expiry is checked by one timer for all
jobs (``self._jobs``, at most the running-task cap).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from llm_service.history import StoreError, TaskRecord
from llm_service.messages import Message, ToolCall
from llm_service.store import ConversationStore
from toolcall.channels import Backoff
from toolcall.dispatch import Dispatcher
from toolcall.ids import new_task_id
from toolcall.jsonvalue import from_value
from toolcall.parts import part_size, placeholder
from toolcall.telemetry import Telemetry
from toolcall.tools import ToolSpec
from toolcall.v1 import callback_pb2, tools_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

RESTARTED_ERROR = "service restarted before the task finished"
# Replicas on PostgreSQL: the replica running the task died (its lock in the database freed).
REPLICA_GONE_ERROR = "the LLMService replica running the task stopped before it finished"
# How often a replica looks for the tasks of replicas that are gone.
REAP_INTERVAL_S = 1.0
STOPPED_ERROR = "service stopped before the task finished"
# A task's end (its outcome, then its history note) that the database cannot
# take right now (PostgreSQL restarting) is retried, backing off up to
# STORE_RETRY_MAX_DELAY_S, for at most this long; only then logged and given up.
STORE_RETRY_S = 60.0
STORE_RETRY_FIRST_DELAY_S = 0.05
STORE_RETRY_MAX_DELAY_S = 1.0
# Ended tasks whose note a dead runner never wrote, noted per reaper round (or
# per page at startup).
UNNOTED_PAGE = 100
CANCELLED_ERROR = "CANCELLED: the task was cancelled (CancelTask)"
# A CancelTask reason is kept up to this many characters.
MAX_CANCEL_REASON_CHARS = 500
# A progress message is kept up to this many characters.
MAX_PROGRESS_MESSAGE_CHARS = 500
# How long telling a plugin that its job ended (CancelJob) may take.
NOTIFY_TIMEOUT_S = 5.0
# A task's progress is stored at most once per this interval (each report is
# a database write); a report sooner is refused (ProgressTooFrequent).
MIN_PROGRESS_INTERVAL_S = 0.05
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


class JobTokenError(Exception):
    """No running task with this id accepts this token (unknown id or wrong token)."""


class ProgressTooFrequent(Exception):
    """A progress report came sooner than ``MIN_PROGRESS_INTERVAL_S`` after the last one."""


class TaskEndedError(Exception):
    """The task has ended: no more progress or results are taken."""

    def __init__(self, task: TaskRecord) -> None:
        super().__init__(f"task '{task.task_id}' has already ended ({task.status})")
        self.task = task


def one_line(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    printable = "".join(c if c.isprintable() else " " for c in text[: limit * 2])
    return " ".join(printable.split())[:limit]


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
        self,
        tasks: AsyncTasks,
        session_id: str,
        *,
        max_items: int,
        max_bytes: int,
        progress: bool = False,
    ) -> None:
        self._tasks = tasks
        self.session_id = session_id
        # Also takes running tasks' progress (snapshots whose status is "running").
        self.progress = progress
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
        if not task.finished:
            # Progress: only the latest per task waits, so a chatty job cannot
            # push a slow reader over its bounds (at most one entry per task).
            for i, (queued, queued_size) in enumerate(self._queue):
                if queued.task_id == task.task_id and not queued.finished:
                    self._queue[i] = (task, size)
                    self._queued_bytes += size - queued_size
                    self._wakeup.set()
                    return
        full = len(self._queue) >= self.max_items or self._queued_bytes + size > self.max_bytes
        if full and not task.finished:
            return  # progress is superseded by the next report: dropped, not a reason to end
        if full:
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

    async def next_live(self) -> TaskRecord | None:
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
        Running tasks are progress (with ``progress``: first where the session's
        running jobs stand, then as reported): never acknowledged.

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
        if self.progress:
            # Where running jobs stand now (a later push supersedes these).
            queued = {t.task_id for t, _ in self._queue if not t.finished}
            for task in await store.running_snapshots(self.session_id, STORED_PAGE):
                if task.task_id not in queued:
                    yield task
        # Results queued while the store was read were stored first, so the
        # pages above held the ones that finished up to ``after``: skip them.
        already_sent = len(self._queue)
        while (live := await self.next_live()) is not None:
            if already_sent > 0:
                already_sent -= 1
                if live.finished and (live.finished_at or 0.0, live.task_id) <= after:
                    continue
            yield live
            if auto_ack and live.finished:
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
        tool_spec: Callable[[str, str], ToolSpec | None] = lambda role, name: None,
        max_follow_ups: int = 4,
        telemetry: Telemetry = Telemetry.OFF,
    ) -> None:
        self.store = store
        self._dispatcher = dispatcher
        # (role, name) -> the tool's spec now, to check a late result's output schema.
        self._tool_spec = tool_spec
        # This service's target, given to plugins in the long-job handle; set
        # once the server listens. Empty: calls offer no long job.
        self.llm_address = ""
        # Runs a task's follow-up turn and returns its text (set by the service:
        # the orchestrator's). At most max_follow_ups run at once; the others wait.
        self.follow_up: Callable[[TaskRecord], Awaitable[str]] | None = None
        self._follow_up_slots = asyncio.Semaphore(max(1, max_follow_ups))
        # Follow-up deliveries and expiry notices running in the background.
        self._deliveries: set[asyncio.Task[None]] = set()
        self.max_per_session = max(1, max_per_session)
        self.max_total = max(1, max_total)
        self._subscribe_buffer = subscribe_buffer
        self._subscribe_buffer_bytes = subscribe_buffer_bytes
        self._running: dict[str, asyncio.Task[None]] = {}
        # Tasks starting or running, per session and in total (the caps' counts);
        # _held: task id -> session of each task counted, so each is released once.
        self._running_by_session: collections.Counter[str] = collections.Counter()
        self._running_total = 0
        self._held: dict[str, str] = {}
        # Task id -> when its last progress was stored (held tasks only: bounded by the caps).
        self._progress_at: dict[str, float] = {}
        # Accepted long jobs running now: task id -> when they expire.
        self._jobs: dict[str, float] = {}
        self._jobs_changed = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
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
            store.on_reconnected(self._catch_up_all)  # type: ignore[attr-defined]

    @property
    def subscribers(self) -> int:
        """Subscribe streams open, over all sessions."""
        return self._subscriber_count

    async def recover(self) -> None:
        """At startup: tasks left running by a previous process can never finish,
        but accepted long jobs can (their plugins complete them): they run on.

        With replicas, only the tasks of replicas that are gone, and again every
        ``REAP_INTERVAL_S``: a replica killed mid-task leaves its tasks failed
        with a reason and delivered. Either way, tasks that ended but whose
        runner died before writing their history note get it now.
        """
        await self._reap(REPLICA_GONE_ERROR if self._replicated else RESTARTED_ERROR)
        for job in await self.store.running_jobs():
            self._hold(job.task_id, job.session_id)
            self._jobs[job.task_id] = job.expires_at or 0.0
        if self._jobs:
            log.info("%d long job(s) still running from before the restart", len(self._jobs))
        self._sweeper = asyncio.create_task(self._expire_jobs(), name="long-job-expiry")
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
        await self._note_orphans()

    async def _note_orphans(self) -> None:
        """Writes the notes of tasks whose outcome was stored but whose runner died
        before their note (before, those notes were lost for good: 0-7 per replica
        killed in the fault drill). Each is written once: ``append_note`` under the
        session's lock, whoever else writes it at the same moment. Pushed already
        (at their end, to every replica), they are not pushed again."""
        while True:
            orphans = await self.store.unnoted_tasks(UNNOTED_PAGE)
            for task in orphans:
                log.warning(
                    "task %s (%s) ended in a process that is gone before its history "
                    "note was written; writing it",
                    task.task_id,
                    task.tool_name,
                )
            noted = [await self._add_note(task) for task in orphans]
            # A full page all written: there may be more (a failing note stops here:
            # its task stays unnoted, for the next startup or reaper round).
            if len(orphans) < UNNOTED_PAGE or not all(noted):
                return

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

    def _catch_up_all(self) -> None:
        """The listener was away (PostgreSQL restarted): results announced meanwhile
        never reached this replica's open streams. Each session with one here gets
        its stored unacknowledged results again (at least once: a result already
        sent but not yet acknowledged comes twice; clients dedupe by task id).
        Before, those streams missed them until the client subscribed again."""
        for session_id in list(self._listeners):
            fetch = asyncio.create_task(self._catch_up(session_id))
            self._fetches.add(fetch)
            fetch.add_done_callback(self._fetches.discard)

    async def _catch_up(self, session_id: str) -> None:
        try:
            tasks = await self.store.unacked_results(session_id, limit=STORED_PAGE)
        except Exception as exc:  # still stored: the next Subscribe sends them
            log.warning("cannot read the results of session %s: %s", session_id, exc)
            return
        for task in tasks:
            self._push(task)

    async def _deliver(self, task_id: str) -> None:
        try:
            task = await self.store.get_task(task_id)
        except Exception as exc:  # still stored unacknowledged: the next Subscribe sends it
            log.warning("cannot read the result of task %s: %s", task_id, exc)
            return
        if task is not None and task.finished:
            self._push(task)

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
        *,
        follow_up: str = "",
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
            follow_up=follow_up,
        )
        if self.llm_address:
            task.token = secrets.token_urlsafe(32)
        # Counted from before the insert, so concurrent starts cannot all pass the check.
        self._hold(task.task_id, session_id)
        try:
            await self.store.insert_task(task)
        except BaseException:
            self._release(task.task_id)
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
            if task.task_id not in self._jobs:  # an accepted job keeps its place
                self._release(task.task_id)
            self._telemetry.end_task(span, task.status, task.error)

        runner.add_done_callback(done)
        return task

    async def cancel(self, task_id: str, reason: str, wait_s: float = 5.0) -> bool:
        """Cancels a task running here and waits (at most ``wait_s``) for it to end.

        False when it is not running in this process (it has ended).
        """
        # One printable line: it goes into the task's error and the history.
        reason = one_line(reason, MAX_CANCEL_REASON_CHARS)
        runner = self._running.get(task_id)
        if runner is None or runner.done():
            if task_id not in self._jobs:
                return False
            # An accepted job: it ends here; its plugin is told (within wait_s).
            error = f"{CANCELLED_ERROR}: {reason}" if reason else CANCELLED_ERROR
            await self._end_job(task_id, "cancelled", error, f"cancelled: {reason or 'CancelTask'}")
            return True
        self._cancel_reasons[task_id] = reason
        runner.cancel()
        await asyncio.wait({runner}, timeout=wait_s)
        return True

    def _hold(self, task_id: str, session_id: str) -> None:
        self._held[task_id] = session_id
        self._running_by_session[session_id] += 1
        self._running_total += 1

    def _release(self, task_id: str) -> None:
        session_id = self._held.pop(task_id, None)
        self._progress_at.pop(task_id, None)
        if session_id is None:  # released already
            return
        self._running_total -= 1
        self._running_by_session[session_id] -= 1
        if self._running_by_session[session_id] <= 0:
            del self._running_by_session[session_id]

    # -- long jobs -----------------------------------------------------------

    def job_handle(self, spec: ToolSpec, task: TaskRecord) -> callback_pb2.LongJob | None:
        """What the plugin gets to accept the call as a long job (None: no job offered)."""
        if not task.token:
            return None
        return callback_pb2.LongJob(
            task_id=task.task_id,
            token=task.token,
            llm_address=self.llm_address,
            max_age_seconds=spec.max_job_s,
        )

    async def _accepted(self, spec: ToolSpec, task: TaskRecord, job_id: str) -> None:
        task.job_id = job_id or task.task_id
        task.callback_address = spec.callback_address
        task.expires_at = time.time() + spec.max_job_s
        # Before the store, so the runner's end does not release its place meanwhile.
        self._jobs[task.task_id] = task.expires_at
        try:
            accepted = await self.store.accept_task(task)
        except BaseException:
            self._jobs.pop(task.task_id, None)
            raise
        if not accepted:  # completed or cancelled before the plugin's answer came
            self._jobs.pop(task.task_id, None)
            return
        self._jobs_changed.set()
        self._push(dataclasses.replace(task, parts=[]))

    async def _authorised(self, task_id: str, token: str) -> TaskRecord:
        task = await self.store.get_task(task_id)
        # One answer for an unknown id and a wrong token: a guess learns nothing.
        if (
            task is None
            or not task.token
            or not hmac.compare_digest(task.token.encode(), token.encode("utf-8", "surrogatepass"))
        ):
            raise JobTokenError(f"no task '{task_id[:64]}' with this token")
        if task.finished:
            raise TaskEndedError(task)
        return task

    async def report_progress(
        self, task_id: str, token: str, fraction: float | None, message: str
    ) -> TaskRecord:
        """Stores and pushes a running task's progress.

        Raises JobTokenError, TaskEndedError, ValueError (a fraction outside 0..1),
        ProgressTooFrequent.
        """
        if fraction is not None and not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError("fraction must be between 0 and 1")
        task = await self._authorised(task_id, token)
        now = time.monotonic()
        if now - self._progress_at.get(task_id, -math.inf) < MIN_PROGRESS_INTERVAL_S:
            raise ProgressTooFrequent(
                f"progress of task '{task_id}' was reported less than "
                f"{MIN_PROGRESS_INTERVAL_S:g}s ago; this report is dropped (report less often)"
            )
        if task_id in self._held:
            self._progress_at[task_id] = now
        task.progress_fraction = fraction
        task.progress_message = one_line(message, MAX_PROGRESS_MESSAGE_CHARS)
        task.progress_at = time.time()
        if not await self.store.set_progress(task):
            raise TaskEndedError(await self.store.get_task(task_id) or task)
        self._push(task)
        return task

    async def complete(self, task_id: str, token: str, result: tools_pb2.ToolResult) -> TaskRecord:
        """Ends a running task with a result sent later (LLMService.CompleteTask).

        The result is checked as a plugin's answer is (a bound broken ends the
        task FAILED saying which). Raises JobTokenError, TaskEndedError,
        ValueError (a result that is "accepted" again), StoreError (nothing
        was stored: the caller may send it again).
        """
        if result.HasField("accepted"):
            raise ValueError("a completion is the job's result; 'accepted' must be unset")
        task = await self._authorised(task_id, token)
        spec = self._tool_spec(task.role, task.tool_name)
        checked = self._dispatcher.check_result(
            result,
            f"the long job of tool '{task.tool_name}'",
            spec.validate_output if spec is not None else None,
        )
        if checked.is_error and not checked.error:
            checked.error = "tool reported an error without a message"
        task.output = from_value(checked.output)
        task.parts = list(checked.parts)
        task.status = "failed" if checked.is_error else "succeeded"
        task.error = checked.error if checked.is_error else ""
        if not await self._finish(task, store_errors=True):
            raise TaskEndedError(await self.store.get_task(task_id) or task)
        self._job_over(task_id)
        return task

    def _job_over(self, task_id: str) -> None:
        if self._jobs.pop(task_id, None) is not None or task_id not in self._running:
            self._release(task_id)

    async def _end_job(
        self, task_id: str, status: str, error: str, notice: str, *, wait: bool = True
    ) -> None:
        """Ends an accepted job without its result (cancelled, expired); tells its plugin
        (awaited with ``wait``, else in the background: expiry must not queue behind
        plugins that do not answer)."""
        task = await self.store.get_task(task_id)
        if task is None or task.finished:
            self._job_over(task_id)
            return
        task.status = "cancelled" if status == "cancelled" else "failed"
        task.error = error
        ended = await self._finish(task)
        self._job_over(task_id)
        if ended and task.callback_address:
            request = callback_pb2.CancelJobRequest(
                task_id=task.task_id, job_id=task.job_id, token=task.token, reason=notice
            )
            telling = self._tell_plugin(task.callback_address, request)
            if wait:
                await telling
            else:
                notice_task = asyncio.create_task(telling)
                self._deliveries.add(notice_task)
                notice_task.add_done_callback(self._deliveries.discard)

    async def _tell_plugin(self, address: str, request: callback_pb2.CancelJobRequest) -> None:
        if problem := await self._dispatcher.cancel_job(address, request, NOTIFY_TIMEOUT_S):
            log.info("could not tell the plugin of task %s: %s", request.task_id, problem)

    async def _expire_jobs(self) -> None:
        """Fails accepted jobs past their expiry; one timer for all of them."""
        while True:
            # Cleared before the scan: a job accepted meanwhile wakes the next wait.
            self._jobs_changed.clear()
            now = time.time()
            for task_id in [t for t, at in self._jobs.items() if at <= now]:
                at = datetime.datetime.fromtimestamp(self._jobs[task_id], datetime.UTC)
                error = (
                    "DEADLINE_EXCEEDED: the long job did not complete before "
                    f"{at.isoformat(timespec='seconds')} (the tool's max_job_seconds; "
                    "default 24 h)"
                )
                try:
                    await self._end_job(task_id, "failed", error, f"expired: {error}", wait=False)
                except Exception:  # the store failed: try again at the next wake-up
                    log.exception("cannot expire task %s", task_id)
            wait = min(self._jobs.values(), default=now + 3600) - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._jobs_changed.wait(), max(0.05, min(wait, 3600)))

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
                job=self.job_handle(spec, task),
            )
            if result.HasField("accepted"):
                await self._accepted(spec, task, result.accepted.job_id)
                return
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

    async def _finish(self, task: TaskRecord, *, store_errors: bool = False) -> bool:
        """Stores, pushes and notes a task's end; False (nothing done) when it had
        ended already. A store failure is raised with ``store_errors``, else logged
        (and the result pushed all the same)."""
        task.finished_at = time.time()
        try:
            if not await _retried(lambda: self.store.finish_task(task)):
                # It had ended already (completed before, or failed by another
                # replica that declared this one gone): that outcome was
                # delivered; a second one would duplicate it.
                log.info("task %s had ended already; this outcome is dropped", task.task_id)
                return False
        except Exception:
            if store_errors:
                raise
            log.exception("cannot store the result of task %s", task.task_id)
        if task.follow_up and self.follow_up is not None:
            # The note first (the follow-up turn reads it), then the sentence,
            # then the push: in the background, so a CompleteTask does not wait
            # for a model.
            delivery = asyncio.create_task(self._deliver_with_follow_up(task))
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)
            return True
        self._push(task)
        await self._add_note(task)
        return True

    async def _deliver_with_follow_up(self, task: TaskRecord) -> None:
        await self._add_note(task)
        assert self.follow_up is not None
        try:
            async with self._follow_up_slots:
                text = await self.follow_up(task)
            task.follow_up_text = one_line(text, 4000) if text else ""
            if task.follow_up_text:
                await self.store.set_follow_up_text(task)
        except asyncio.CancelledError:
            self._push(task)  # stopping: the result goes out without its sentence
            raise
        except Exception:  # a provider or store failure costs the sentence, not the result
            log.warning("follow-up turn of task %s failed", task.task_id, exc_info=True)
        self._push(task)

    def _push(self, task: TaskRecord) -> None:
        """To the session's subscribers: a result to all, progress to those asking for it."""
        size = task_bytes(task)
        for subscription in self._listeners.get(task.session_id, ()):
            if task.finished or subscription.progress:
                subscription.push(task if task.finished else dataclasses.replace(task), size)

    async def _add_note(self, task: TaskRecord) -> bool:
        """Appends the task's note to its session's history once (the task is marked
        noted with it); False when it could not be stored (logged)."""
        note = Message(role="system", content=result_note(task))

        async def add() -> None:
            async with self.store.session_lock(task.session_id):
                # Noted already: a retry after an append whose answer the connection
                # lost (PostgreSQL restarting), or another replica's reaper.
                await self.store.append_note(task, note)

        try:
            await _retried(add)
        except Exception:
            log.exception("cannot add the result of task %s to the history", task.task_id)
            return False
        return True

    def subscribe(self, session_id: str, *, progress: bool = False) -> Subscription:
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
            progress=progress,
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
        """Lets running tasks finish for ``grace_s``, then cancels (and records) the rest.

        Accepted long jobs are left running: their plugins complete them after a restart.
        """
        self.end_streams()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for delivery in list(self._deliveries):  # results are stored: resent on Subscribe
            delivery.cancel()
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


async def _retried(write: Callable[[], Awaitable[T]]) -> T:
    """``write()``, again while the store is unavailable (for at most STORE_RETRY_S).

    Before, a task that ended while PostgreSQL restarted lost its outcome (the
    row stayed running under a live owner: never delivered to another
    replica's subscribers) and its history note."""
    deadline = time.monotonic() + STORE_RETRY_S
    backoff = Backoff(STORE_RETRY_FIRST_DELAY_S, STORE_RETRY_MAX_DELAY_S)
    while True:
        try:
            return await write()
        except StoreError as exc:
            if exc.kind != "unavailable" or time.monotonic() + backoff.peek() > deadline:
                raise
            if backoff.peek() == backoff.initial_s:
                log.warning("the store is unavailable (%s); retrying", exc)
        await asyncio.sleep(backoff.delay())
