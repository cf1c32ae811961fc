"""Async tools called from MCP: run in the background, their results kept for polling.

MCP has no push for a result that arrives after ``tools/call`` returned (the
2025-11-25 "tasks" draft was dropped in 2026-07-28), so an ASYNC tool answers
at once with its acknowledgement and a task id, and the host asks for the
result with the built-in ``toolcall_get_task`` tool, which can wait for it.

The table lives in the gateway's memory and is bounded three ways: running
tasks (a call past ``max_running`` is an error result at once), finished
results kept (oldest dropped first past ``max_kept`` entries or
``max_kept_bytes`` of output), and their age (``keep_s``). A gateway restart
loses the table: chats that need durable async results use the LLMService,
whose tasks survive restarts and are delivered on ``Subscribe``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from toolcall.ids import new_task_id
from toolcall.v1 import tools_pb2

DEFAULT_MAX_RUNNING = 256
DEFAULT_MAX_KEPT = 1024
DEFAULT_MAX_KEPT_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP_S = 3600.0


class TasksFull(Exception):
    pass


@dataclass(slots=True)
class Job:
    task_id: str
    tool: str
    started: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: tools_pb2.ToolResult | None = None
    finished: float = 0.0
    size: int = 0


@dataclass(frozen=True, slots=True)
class JobLimits:
    max_running: int = DEFAULT_MAX_RUNNING
    max_kept: int = DEFAULT_MAX_KEPT
    max_kept_bytes: int = DEFAULT_MAX_KEPT_BYTES
    keep_s: float = DEFAULT_KEEP_S


class Jobs:
    def __init__(self, limits: JobLimits = JobLimits()) -> None:
        self.limits = limits
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._finished: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._kept_bytes = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self, tool: str, call: Awaitable[tools_pb2.ToolResult]) -> Job:
        """Runs ``call`` in the background; raises TasksFull (``call`` is closed) when full."""
        if len(self._running) >= self.limits.max_running:
            if isinstance(call, asyncio.Future | asyncio.Task):
                call.cancel()
            else:
                with contextlib.suppress(Exception):
                    call.close()  # type: ignore[attr-defined]
            raise TasksFull(
                f"RESOURCE_EXHAUSTED: {self.limits.max_running} async tool calls are running "
                "in this gateway; try again when one has finished"
            )
        job = Job(task_id=new_task_id(), tool=tool, started=time.monotonic())
        task = asyncio.ensure_future(self._run(job, call))
        self._running[job.task_id] = (job, task)
        return job

    async def _run(self, job: Job, call: Awaitable[tools_pb2.ToolResult]) -> None:
        try:
            result = await call
        except asyncio.CancelledError:
            result = tools_pb2.ToolResult(
                is_error=True, error="CANCELLED: the gateway stopped before the tool finished"
            )
            self._finish(job, result)
            raise
        except Exception as exc:  # the dispatcher answers failures as results; this is a bug
            result = tools_pb2.ToolResult(is_error=True, error=f"INTERNAL: {type(exc).__name__}")
        self._finish(job, result)

    def _finish(self, job: Job, result: tools_pb2.ToolResult) -> None:
        self._running.pop(job.task_id, None)
        job.result = result
        job.finished = time.monotonic()
        job.size = result.ByteSize()
        job.done.set()
        self._finished[job.task_id] = job
        self._kept_bytes += job.size
        self._expire()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if (
                len(self._finished) <= self.limits.max_kept
                and self._kept_bytes <= self.limits.max_kept_bytes
                and now - oldest.finished <= self.limits.keep_s
            ):
                break
            self._finished.popitem(last=False)
            self._kept_bytes -= oldest.size

    def get(self, task_id: str) -> Job | None:
        self._expire()
        if entry := self._running.get(task_id):
            return entry[0]
        return self._finished.get(task_id)

    async def close(self) -> None:
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
