"""LLMService over gRPC: validate, translate, delegate. No chat logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import grpc

from llm_service import wire
from llm_service.history import StoreError, StoreErrorKind, TaskRecord
from llm_service.messages import Message, message_bytes
from llm_service.orchestrator import Orchestrator, TurnRequest, TurnResult
from llm_service.providers import PROVIDER_NAMES, ProviderError
from llm_service.providers.base import ErrorKind, ToolChoice
from llm_service.settings import MAX_TOOL_ROUNDS_LIMIT, LLMSettings
from llm_service.store import ConversationStore
from llm_service.tasks import (
    AsyncTasks,
    JobTokenError,
    ProgressTooFrequent,
    SubscriberLimitError,
    SubscriberTooSlow,
    Subscription,
    TaskEndedError,
)
from toolcall import config
from toolcall.auth import current_principal
from toolcall.errors import abort_invalid
from toolcall.registry_view import RegistryView
from toolcall.telemetry import Telemetry
from toolcall.v1 import llm_pb2, llm_pb2_grpc, tools_pb2

log = logging.getLogger(__name__)

# \Z, not $: "$" also matches before a final newline ("s1\n" would pass).
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")
ROLE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}\Z")
MAX_MODEL_CHARS = 128
# GetHistory answers at most this many bytes of messages (newest kept): the
# response fits in one gRPC message with room for its framing; ``truncated``
# says when it cut.
MAX_HISTORY_RESPONSE_BYTES = config.MAX_MESSAGE_BYTES - 64 * 1024

STATUS: dict[ErrorKind, grpc.StatusCode] = {
    "not_configured": grpc.StatusCode.FAILED_PRECONDITION,
    "unknown_provider": grpc.StatusCode.INVALID_ARGUMENT,
    "rejected": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
}

STORE_STATUS: dict[StoreErrorKind, grpc.StatusCode] = {
    "full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "readonly": grpc.StatusCode.FAILED_PRECONDITION,
    "corrupt": grpc.StatusCode.DATA_LOSS,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}

Violations = list[tuple[str, str]]


def store_status(exc: StoreError) -> tuple[grpc.StatusCode, str]:
    return STORE_STATUS[exc.kind], f"the LLMService could not store or read: {exc.message}"


def model_allowed(model: str, allowed: tuple[str, ...]) -> bool:
    return not allowed or any(fnmatch.fnmatchcase(model, p) for p in allowed)


def request_bytes(system_prompt: str, messages: list[Message]) -> int:
    """What a turn's first provider request weighs before any history."""
    system = message_bytes(Message("system", system_prompt)) if system_prompt else 0
    return system + sum(message_bytes(m) for m in messages)


def session_violation(field: str, session_id: str) -> Violations:
    if SESSION_ID.match(session_id):
        return []
    if not session_id:
        return [(field, "is required")]
    return [(field, "must match [A-Za-z0-9_.:-]{1,128}")]


def chat_violations(
    r: llm_pb2.ChatRequest,
    known_roles: frozenset[str] | None,
    prefix: str = "",
    *,
    allowed_models: tuple[str, ...] = (),
) -> Violations:
    bad = session_violation(prefix + "session_id", r.session_id)
    if r.role and not ROLE.match(r.role):
        bad.append((prefix + "role", "must match [A-Za-z0-9_.:-]{1,64}"))
    elif r.role and known_roles is not None and r.role not in known_roles:
        known = ", ".join(sorted(known_roles)) or "(none)"
        bad.append((prefix + "role", f"unknown role '{r.role}'; known roles: {known}"))
    if not r.messages:
        bad.append((prefix + "messages", "at least one message is required"))
    for i, m in enumerate(r.messages):
        where = f"{prefix}messages[{i}]"
        if m.role not in wire.ROLE_FROM_PROTO:
            bad.append((f"{where}.role", f"unknown role {m.role}"))
        elif m.role == llm_pb2.MESSAGE_ROLE_TOOL:
            bad.append((f"{where}.role", "tool results are produced by the service, not sent"))
        if m.tool_calls:
            bad.append((f"{where}.tool_calls", "must be empty: tool calls come from the model"))
        if m.parts:
            bad.append((f"{where}.parts", "must be empty: content parts come from tools"))
        if not m.content.strip():
            bad.append((f"{where}.content", "is required"))
    if r.provider and r.provider not in PROVIDER_NAMES:
        bad.append(
            (
                prefix + "provider",
                f"unknown provider '{r.provider[:64]}'; known providers: "
                + ", ".join(PROVIDER_NAMES),
            )
        )
    if len(r.model) > MAX_MODEL_CHARS:
        bad.append((prefix + "model", f"is longer than {MAX_MODEL_CHARS} characters"))
    elif r.model and not model_allowed(r.model, allowed_models):
        bad.append(
            (
                prefix + "model",
                f"model '{r.model}' is not allowed here; allowed models: "
                + ", ".join(allowed_models)
                + " (or none, for the provider's configured model)",
            )
        )
    if r.HasField("temperature") and not (
        math.isfinite(r.temperature) and 0.0 <= r.temperature <= 2.0
    ):
        bad.append((prefix + "temperature", "must be between 0 and 2"))
    if not 0 <= r.max_tool_rounds <= MAX_TOOL_ROUNDS_LIMIT:
        bad.append((prefix + "max_tool_rounds", f"must be between 0 and {MAX_TOOL_ROUNDS_LIMIT}"))
    return bad


# ChatRequest.allowed_tools holds at most this many names.
MAX_ALLOWED_TOOLS = 128

TOOL_CHOICE: dict[int, ToolChoice] = {
    llm_pb2.TOOL_CHOICE_MODE_UNSPECIFIED: "auto",
    llm_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    llm_pb2.TOOL_CHOICE_MODE_NONE: "none",
    llm_pb2.TOOL_CHOICE_MODE_REQUIRED: "required",
}


def tool_control_violations(
    r: llm_pb2.ChatRequest, role_tools: set[str], role: str, prefix: str = ""
) -> Violations:
    """tool_choice and allowed_tools against the tools the role has now."""
    bad: Violations = []
    if len(r.allowed_tools) > MAX_ALLOWED_TOOLS:
        bad.append((prefix + "allowed_tools", f"holds more than {MAX_ALLOWED_TOOLS} names"))
    else:
        for i, name in enumerate(r.allowed_tools):
            if name not in role_tools:
                bad.append(
                    (f"{prefix}allowed_tools[{i}]", f"role '{role}' has no tool '{name[:80]}'")
                )
    kind = r.tool_choice.WhichOneof("choice")
    if kind == "mode" and r.tool_choice.mode not in TOOL_CHOICE:
        bad.append((prefix + "tool_choice.mode", f"unknown mode {r.tool_choice.mode}"))
    elif kind == "name":
        name = r.tool_choice.name
        if name not in role_tools:
            bad.append((prefix + "tool_choice.name", f"role '{role}' has no tool '{name[:80]}'"))
        elif r.allowed_tools and name not in r.allowed_tools:
            bad.append((prefix + "tool_choice.name", f"'{name}' is not in allowed_tools"))
    return bad


async def _send(
    context: grpc.aio.ServicerContext,
    response: llm_pb2.SubscribeResponse,
    stop: asyncio.Event,
    ack: Callable[[], Awaitable[object]] | None,
) -> bool:
    """Writes ``response`` then runs ``ack``; False (the write abandoned) if ``stop`` is set first.

    A client that stops reading blocks the write (HTTP/2 flow control); the
    subscription's queue then overflows and sets ``stop``, so the stream can
    end with a status instead of waiting for the client forever. The ack runs
    in the same task as the write, so a client that cancels right after
    reading still has the result acknowledged.
    """

    async def write_then_ack() -> None:
        await context.write(response)
        if ack is not None:
            await ack()

    sending = asyncio.ensure_future(write_then_ack())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((sending, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not sending.done():
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        return False
    await sending  # its errors (a failing database) are the stream's
    return True


@contextlib.asynccontextmanager
async def store_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """A database failure inside becomes a status with its reason, not UNKNOWN."""
    try:
        yield
    except StoreError as exc:
        await context.abort(*store_status(exc))


def turn_failure(exc: Exception, session_id: str) -> tuple[grpc.StatusCode, str]:
    """The status a Chat or ChatStream turn that raised ``exc`` ends with."""
    if isinstance(exc, ProviderError):
        return STATUS[exc.kind], exc.message
    if isinstance(exc, StoreError):
        code, message = store_status(exc)
        if exc.kind != "unavailable":  # refused before writing: nothing changed
            return code, message + "; the turn was not stored"
        # The connection may have dropped after the commit (its answer lost).
        return code, message + (
            "; the turn may or may not have been stored: look it up with GetHistory "
            "before sending it again"
        )
    log.exception("chat turn of session %s failed", session_id)
    return grpc.StatusCode.INTERNAL, f"chat turn failed: {type(exc).__name__}"


class LLMServicer(llm_pb2_grpc.LLMServiceServicer):
    def __init__(
        self,
        settings: LLMSettings,
        *,
        orchestrator: Orchestrator,
        store: ConversationStore,
        tasks: AsyncTasks,
        view: RegistryView,
        telemetry: Telemetry = Telemetry.OFF,
    ) -> None:
        self._settings = settings
        self._telemetry = telemetry
        self._orchestrator = orchestrator
        self._store = store
        self._tasks = tasks
        self._view = view
        self._turns_in_flight = 0

    @property
    def turns_in_flight(self) -> int:
        return self._turns_in_flight

    async def _own(self, session_id: str, context: grpc.aio.ServicerContext) -> None:
        """Refuses a session another principal owns (toolcall/auth.py); first use claims it.

        PERMISSION_DENIED, not NOT_FOUND: clients choose session ids, and Chat
        must refuse to write into a foreign session anyway, which tells that it
        exists; the answer never names the owner. Admins may use every session.
        """
        principal = current_principal()
        if principal is None or principal.admin:
            return
        async with store_errors(context):
            owner = await self._store.claim_session(session_id, principal.name)
        if owner != principal.name:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"session '{session_id}' belongs to another principal; use a session id "
                "of your own",
            )

    async def _visible(
        self, task: TaskRecord | None, context: grpc.aio.ServicerContext
    ) -> TaskRecord | None:
        """``task``, or None when its session belongs to another principal.

        NOT_FOUND then, as for a missing task: task ids are the service's random
        ids, so a foreign one says nothing at all.
        """
        principal = current_principal()
        if task is None or principal is None or principal.admin:
            return task
        async with store_errors(context):
            owner = await self._store.claim_session(task.session_id, principal.name)
        return task if owner == principal.name else None

    @contextlib.asynccontextmanager
    async def _admitted(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """One of at most ``max_turns`` turns in flight; past it RESOURCE_EXHAUSTED at once.

        A turn holds its history, the model's reply and tool results in memory;
        refusing early keeps a burst from taking the service's memory with it.
        """
        limit = self._settings.max_turns
        if self._turns_in_flight >= limit:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{limit} chat turns are in flight, the most this LLMService runs at once "
                "(TOOLCALL_MAX_TURNS); retry shortly",
            )
        self._turns_in_flight += 1
        try:
            yield
        finally:
            self._turns_in_flight -= 1

    async def _turn(
        self,
        r: llm_pb2.ChatRequest,
        context: grpc.aio.ServicerContext,
        *,
        stream: bool,
        prefix: str,
    ) -> TurnRequest:
        s = self._settings
        bad = chat_violations(r, self._view.roles, prefix, allowed_models=s.allowed_models)
        role = r.role or s.default_role
        if not any(f.startswith(prefix + "role") for f, _ in bad):
            names = {t.name for t in self._view.tools_for(role)}
            bad.extend(tool_control_violations(r, names, role, prefix))
        messages = [] if bad else [wire.message_from_proto(m) for m in r.messages]
        if messages and (size := request_bytes(s.system_prompt, messages)) > s.max_request_bytes:
            bad.append(
                (
                    prefix + "messages",
                    f"weigh {size} bytes with the system prompt; a provider request holds at "
                    f"most {s.max_request_bytes} bytes (TOOLCALL_MAX_REQUEST_BYTES)",
                )
            )
        if bad:
            await abort_invalid(context, bad)
        role = r.role or s.default_role
        if (principal := current_principal()) is not None and not principal.may_use_role(role):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"principal {principal.name!r} may not chat in role '{role}'; its roles: "
                + ", ".join(sorted(principal.roles)),
            )
        await self._own(r.session_id, context)
        if waiting := self._orchestrator.waiting_on_tools(r.session_id):
            # Waiting for the session would deadlock when a tool is the caller.
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session '{r.session_id}' is in a turn waiting on its tool calls "
                f"({', '.join(sorted(set(waiting)))[:200]}): a tool cannot chat in the session "
                "that called it (use another session_id); other callers: retry when the turn ends",
            )
        remaining = context.time_remaining()
        return TurnRequest(
            session_id=r.session_id,
            role=role,
            messages=messages,
            provider=r.provider,
            model=r.model,
            temperature=r.temperature if r.HasField("temperature") else None,
            max_tool_rounds=r.max_tool_rounds,
            stream=stream,
            deadline=None if remaining is None else time.monotonic() + remaining,
            tool_choice=TOOL_CHOICE.get(r.tool_choice.mode, "auto"),
            forced_tool=r.tool_choice.name,
            parallel_tool_calls=(
                r.parallel_tool_calls if r.HasField("parallel_tool_calls") else None
            ),
            allowed_tools=frozenset(r.allowed_tools),
            follow_up_async=(
                r.follow_up_async_results if r.HasField("follow_up_async_results") else None
            ),
        )

    async def Chat(
        self, request: llm_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ChatResponse:
        turn = await self._turn(request, context, stream=False, prefix="")
        async with self._admitted(context):
            try:
                async with contextlib.aclosing(self._orchestrator.run(turn)) as events:
                    async for event in events:
                        if isinstance(event, TurnResult):
                            return wire.turn_to_proto(event)
            except Exception as exc:
                code, message = turn_failure(exc, turn.session_id)
            else:
                code, message = grpc.StatusCode.INTERNAL, "chat turn ended without a result"
            await context.abort(code, message)
        raise AssertionError("unreachable")  # abort always raises

    async def ChatStream(
        self, request: llm_pb2.ChatStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.ChatStreamResponse]:
        turn = await self._turn(request.request, context, stream=True, prefix="request.")
        subscription: Subscription | None = None
        if request.task_updates:
            try:
                subscription = self._tasks.subscribe(turn.session_id, progress=True)
            except SubscriberLimitError as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            async with self._admitted(context):
                try:
                    async with contextlib.aclosing(self._events(turn, subscription)) as events:
                        async for event in events:
                            yield event
                    return
                except Exception as exc:
                    code, message = turn_failure(exc, turn.session_id)
                await context.abort(code, message)
        finally:
            if subscription is not None:
                self._tasks.unsubscribe(subscription)

    async def _events(
        self, turn: TurnRequest, subscription: Subscription | None
    ) -> AsyncGenerator[llm_pb2.ChatStreamResponse, None]:
        """The turn's events; with a subscription, the session's task updates between them.

        The turn runs in a task of its own (its generator must stay in one
        task) and hands each event over through a one-place queue, so it runs
        no further ahead of the client than before; task updates wait in the
        subscription's bounded queue.
        """
        if subscription is None:
            async with contextlib.aclosing(self._orchestrator.run(turn)) as events:
                async for event in events:
                    yield wire.event_to_proto(event)
            return
        handover: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        done = object()

        async def pump() -> None:
            try:
                async with contextlib.aclosing(self._orchestrator.run(turn)) as events:
                    async for event in events:
                        await handover.put(event)
                await handover.put(done)
            except Exception as exc:  # raised again in the stream's task
                await handover.put(exc)

        turn_task = asyncio.create_task(pump(), name=f"chat-stream-{turn.session_id}")
        next_event: asyncio.Future[object] = asyncio.ensure_future(handover.get())
        # Live updates only (stored results are Subscribe's); cancelling a wait is safe.
        next_update: asyncio.Future[TaskRecord | None] | None = asyncio.ensure_future(
            subscription.next_live()
        )
        try:
            while True:
                waiting = {next_event} | ({next_update} if next_update is not None else set())
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if next_update is not None and next_update.done():
                    try:
                        task = next_update.result()
                    except SubscriberTooSlow:
                        task = None
                    if task is None:
                        next_update = None  # updates end; the turn goes on
                    else:
                        update = wire.task_to_proto(task)
                        yield llm_pb2.ChatStreamResponse(task_update=update)
                        next_update = asyncio.ensure_future(subscription.next_live())
                if next_event.done():
                    item = next_event.result()
                    if item is done:
                        return
                    if isinstance(item, Exception):
                        raise item
                    yield wire.event_to_proto(item)  # type: ignore[arg-type]
                    next_event = asyncio.ensure_future(handover.get())
        finally:
            for pending in (next_event, next_update, turn_task):
                if pending is not None:
                    pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await turn_task

    # Writes with context.write (not yield) so a write blocked by a client that
    # stopped reading can be abandoned: a coroutine, which the stub's type misses.
    async def Subscribe(  # type: ignore[override]
        self, request: llm_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> None:
        if bad := session_violation("session_id", request.session_id):
            await abort_invalid(context, bad)
        await self._own(request.session_id, context)
        try:
            subscription = self._tasks.subscribe(request.session_id, progress=request.progress)
        except SubscriberLimitError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise AssertionError("unreachable") from None
        try:
            # Headers now: a client's wait_for_connection() returns once it listens.
            await context.send_initial_metadata(())
            results = subscription.results(auto_ack=False)  # acked below, once written
            async with store_errors(context), contextlib.aclosing(results):
                async for task in results:
                    if not task.finished:  # a running long job's progress: never acknowledged
                        response = llm_pb2.SubscribeResponse(progress=wire.task_to_proto(task))
                    else:
                        response = llm_pb2.SubscribeResponse(task=wire.task_to_proto(task))
                    ack = (
                        functools.partial(self._store.ack_tasks, task.session_id, [task.task_id])
                        if request.auto_ack and task.finished
                        else None
                    )
                    if not await _send(context, response, subscription.overflowed, ack):
                        raise subscription.too_slow()
                    self._telemetry.results_delivered()
        except SubscriberTooSlow as exc:
            # Dropped, not buffered without end; nothing is lost: every
            # unacknowledged result is sent again on the next Subscribe.
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            self._tasks.unsubscribe(subscription)
        # Results only end when the service stops; say so, so clients resubscribe.
        await context.abort(grpc.StatusCode.UNAVAILABLE, "LLMService is stopping; subscribe again")

    async def AckTasks(
        self, request: llm_pb2.AckTasksRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.AckTasksResponse:
        bad = session_violation("session_id", request.session_id)
        if not request.task_ids:
            bad.append(("task_ids", "at least one task id is required"))
        if bad:
            await abort_invalid(context, bad)
        await self._own(request.session_id, context)
        async with store_errors(context):
            n = await self._store.ack_tasks(request.session_id, list(request.task_ids))
        return llm_pb2.AckTasksResponse(acknowledged=n)

    async def GetTask(
        self, request: llm_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetTaskResponse:
        if not request.task_id:
            await abort_invalid(context, [("task_id", "is required")])
        async with store_errors(context):
            task = await self._store.get_task(request.task_id)
        task = await self._visible(task, context)
        if task is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no task '{request.task_id[:64]}'")
            raise AssertionError("unreachable")
        return llm_pb2.GetTaskResponse(task=wire.task_to_proto(task))

    async def CancelTask(
        self, request: llm_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.CancelTaskResponse:
        if not request.task_id:
            await abort_invalid(context, [("task_id", "is required")])
        async with store_errors(context):
            task = await self._visible(await self._store.get_task(request.task_id), context)
        if task is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no task '{request.task_id[:64]}'")
            raise AssertionError("unreachable")
        if task.finished or not await self._tasks.cancel(task.task_id, request.reason):
            async with store_errors(context):
                task = await self._store.get_task(request.task_id) or task
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"task '{task.task_id}' has already ended "
                f"({llm_pb2.TaskStatus.Name(wire.TASK_STATUS[task.status])})",
            )
        async with store_errors(context):
            task = await self._store.get_task(request.task_id) or task
        return llm_pb2.CancelTaskResponse(task=wire.task_to_proto(task))

    async def _job_call(
        self,
        context: grpc.aio.ServicerContext,
        task_id: str,
        token: str,
        bad: Violations,
        call: Callable[[], Awaitable[object]],
    ) -> None:
        """Runs a long job's ReportProgress / CompleteTask with their statuses."""
        if not task_id:
            bad.insert(0, ("task_id", "is required"))
        if not token:
            bad.append(("token", "is required"))
        if bad:
            await abort_invalid(context, bad)
        async with store_errors(context):
            try:
                await call()
            except JobTokenError as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            except ProgressTooFrequent as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            except TaskEndedError as exc:
                status = llm_pb2.TaskStatus.Name(wire.TASK_STATUS[exc.task.status])
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"task '{exc.task.task_id}' has already ended ({status})",
                )
            except ValueError as exc:
                await abort_invalid(context, [("result", str(exc))])

    async def ReportProgress(
        self, request: llm_pb2.ReportProgressRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ReportProgressResponse:
        fraction = request.fraction if request.HasField("fraction") else None
        bad: Violations = []
        if fraction is not None and not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            bad.append(("fraction", "must be between 0 and 1"))
        await self._job_call(
            context,
            request.task_id,
            request.token,
            bad,
            lambda: self._tasks.report_progress(
                request.task_id, request.token, fraction, request.message
            ),
        )
        return llm_pb2.ReportProgressResponse()

    async def CompleteTask(
        self, request: llm_pb2.CompleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.CompleteTaskResponse:
        bad: Violations = []
        if request.result.HasField("accepted"):
            bad.append(("result.accepted", "must be unset: a completion is the job's result"))
        ended: list[TaskRecord] = []

        async def complete() -> None:
            result = tools_pb2.ToolResult()
            result.CopyFrom(request.result)
            ended.append(await self._tasks.complete(request.task_id, request.token, result))

        await self._job_call(context, request.task_id, request.token, bad, complete)
        return llm_pb2.CompleteTaskResponse(task=wire.task_to_proto(ended[0]))

    async def GetHistory(
        self, request: llm_pb2.GetHistoryRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetHistoryResponse:
        bad = session_violation("session_id", request.session_id)
        if request.limit < 0:
            bad.append(("limit", "must not be negative"))
        if bad:
            await abort_invalid(context, bad)
        await self._own(request.session_id, context)
        async with store_errors(context):
            messages, truncated = await self._store.page(
                request.session_id, request.limit, MAX_HISTORY_RESPONSE_BYTES
            )
        return llm_pb2.GetHistoryResponse(
            messages=[wire.message_to_proto(m) for m in messages], truncated=truncated
        )
