"""The tool-call loop: model round, tools, model round, ... until a text answer.

One implementation serves Chat and ChatStream: ``Orchestrator.run`` yields
events (text deltas, tool calls starting and finishing, the turn's result,
usage); Chat keeps only the result. Tool calls of one round run concurrently
(bounded per chat by ``max_parallel_tools``, async ones while they start;
running async tasks are bounded per session and in total) and go straight
to the plugin through ``Dispatcher.invoke`` - one hop, no registry between.
Every tool failure (bad JSON, schema violation, unknown tool, plugin error,
timeout, too many async tasks) is fed back to the model as an error result
it can recover from.

A turn is stored only when it completes: the new messages, the assistant's
tool calls, the tool results and the final answer go into the history in one
transaction. A turn that fails (provider error, cancelled call) leaves the
history as it was; async tasks it started still deliver their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from llm_service.history import StoreError, TaskRecord
from llm_service.messages import (
    FOLLOW_UP_PROMPT,
    Message,
    ToolCall,
    message_bytes,
    tool_result_content,
    trim_history,
)
from llm_service.providers import ModelTurn, ProviderError, ProviderRequest, Providers, TextChunk
from llm_service.providers.base import ToolChoice
from llm_service.settings import LLMSettings
from llm_service.store import ConversationStore
from llm_service.tasks import AsyncTasks, TaskLimitError
from toolcall.auth import charge_tool_call
from toolcall.dispatch import Dispatcher, error_result
from toolcall.ids import new_call_id
from toolcall.jsonvalue import from_value, to_value
from toolcall.parts import part_size, placeholder
from toolcall.registry_view import RegistryView
from toolcall.telemetry import Telemetry
from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2

log = logging.getLogger(__name__)

DEFAULT_ACK = "The task was started; its result will be delivered when it finishes."


@dataclass(slots=True)
class TurnRequest:
    session_id: str
    role: str
    messages: list[Message]
    provider: str = ""
    model: str = ""
    temperature: float | None = None
    max_tool_rounds: int = 0
    stream: bool = False
    # time.monotonic() by which the caller gives up (its gRPC deadline), if any.
    deadline: float | None = None
    # ChatRequest.tool_choice: "required" and a forced tool hold for the first
    # round only (later rounds are "auto", so the model can answer); "none"
    # for every round.
    tool_choice: ToolChoice = "auto"
    forced_tool: str = ""
    parallel_tool_calls: bool | None = None
    # Narrows the role's tools (every round); empty: all of them.
    allowed_tools: frozenset[str] = frozenset()
    # ChatRequest.follow_up_async_results (None: the service's setting).
    follow_up_async: bool | None = None


@dataclass(slots=True)
class ToolCallRecord:
    call: ToolCall
    result: tools_pb2.ToolResult
    task_id: str = ""
    latency_ms: float = 0.0


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rounds: int = 0


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallStarted:
    call: ToolCall


@dataclass(slots=True)
class ToolCallFinished:
    record: ToolCallRecord


@dataclass(slots=True)
class TurnResult:
    session_id: str
    message: Message
    records: list[ToolCallRecord]
    usage: Usage
    round_limit_reached: bool
    provider: str
    model: str


Event = TextDelta | ToolCallStarted | ToolCallFinished | TurnResult | Usage


def round_limit_text(rounds: int) -> str:
    plural = "" if rounds == 1 else "s"
    return f"Stopped after {rounds} tool round{plural} without a final answer."


@dataclass(slots=True)
class _Turn:
    """What one running turn needs while dispatching its tool calls."""

    request: TurnRequest
    semaphore: asyncio.Semaphore
    records: list[ToolCallRecord] = field(default_factory=list)


class Orchestrator:
    def __init__(
        self,
        settings: LLMSettings,
        *,
        view: RegistryView,
        dispatcher: Dispatcher,
        providers: Providers,
        store: ConversationStore,
        tasks: AsyncTasks,
        telemetry: Telemetry = Telemetry.OFF,
    ) -> None:
        self._settings = settings
        self._telemetry = telemetry
        self._view = view
        self._dispatcher = dispatcher
        self._providers = providers
        self._store = store
        self._tasks = tasks
        # Session -> names of the sync tool calls its running turn waits on.
        self._waiting_on_tools: dict[str, list[str]] = {}

    def waiting_on_tools(self, session_id: str) -> list[str]:
        """Sync tools the session's running turn is waiting on (empty: none).

        A Chat for that session now would wait for the turn, and the turn for
        the tools: if a tool is the one asking, neither ever gets there.
        """
        return self._waiting_on_tools.get(session_id, [])

    def run(self, req: TurnRequest) -> AsyncGenerator[Event, None]:
        """Runs one turn; raises ProviderError when the model cannot be reached."""
        return self._observed(req) if self._telemetry.on else self._run(req)

    async def _observed(self, req: TurnRequest) -> AsyncGenerator[Event, None]:
        """``_run`` inside the turn's span (current: tool calls become its children)."""
        with self._telemetry.turn(req.session_id, req.role, req.stream) as recorder:
            async with contextlib.aclosing(self._run(req)) as events:
                async for event in events:
                    if isinstance(event, TurnResult):
                        recorder.finished(
                            event.usage.rounds,
                            event.round_limit_reached,
                            event.provider,
                            event.model,
                        )
                    yield event

    async def _run(self, req: TurnRequest) -> AsyncGenerator[Event, None]:
        provider = self._providers.get(req.provider)
        model = req.model or provider.default_model
        max_rounds = req.max_tool_rounds or self._settings.max_tool_rounds
        turn = _Turn(req, asyncio.Semaphore(max(1, self._settings.max_parallel_tools)))
        usage = Usage()
        system = (
            [Message("system", self._settings.system_prompt)]
            if self._settings.system_prompt
            else []
        )

        # One turn at a time per session, so histories never interleave.
        async with self._store.session_lock(req.session_id):
            limit = self._settings.max_history_messages
            history = trim_history(await self._store.recent(req.session_id), limit)
            new: list[Message] = list(req.messages)
            tools = self._tools(req)
            limit_reached = False
            while True:
                answer: ModelTurn | None = None
                first = usage.rounds == 0
                choice: ToolChoice = (
                    req.tool_choice if first or req.tool_choice == "none" else "auto"
                )
                forced = req.forced_tool if first else ""
                if forced and all(t.name != forced for t in tools):
                    forced = ""  # removed from the registry since the request came in
                new[:] = self._shed_parts(system, new)
                request = ProviderRequest(
                    model=model,
                    messages=system + self._fit(history, system + new) + new,
                    tools=tools,
                    temperature=req.temperature,
                    stream=req.stream,
                    tool_choice=choice if tools else "auto",
                    forced_tool=forced,
                    parallel_tool_calls=req.parallel_tool_calls,
                )
                model_round = self._telemetry.model_round(provider.name, model)
                with model_round:
                    async with contextlib.aclosing(provider.generate(request)) as items:
                        async for item in items:
                            if isinstance(item, TextChunk):
                                yield TextDelta(item.text)
                            else:
                                answer = item
                    if answer is None:  # a provider bug; never leave the caller hanging
                        raise RuntimeError(f"provider {provider.name} yielded no answer")
                model_round.answered(
                    answer.prompt_tokens, answer.completion_tokens, len(answer.tool_calls)
                )
                usage.rounds += 1
                usage.prompt_tokens += answer.prompt_tokens
                usage.completion_tokens += answer.completion_tokens
                if not answer.tool_calls:
                    final = Message("assistant", answer.text)
                    break
                if usage.rounds > max_rounds:
                    # The calls of this round are not run (and not stored: a
                    # call without its result would break the next turn).
                    limit_reached = True
                    final = Message("assistant", round_limit_text(max_rounds))
                    if req.stream:
                        yield TextDelta(final.content)
                    break
                calls = _unique_ids(answer.tool_calls)
                new.append(Message("assistant", answer.text, tool_calls=calls))
                self._waiting_on_tools[req.session_id] = self._sync_names(req.role, calls)
                try:
                    async with contextlib.aclosing(self._dispatch_round(turn, calls)) as events:
                        async for event in events:
                            yield event
                finally:
                    self._waiting_on_tools.pop(req.session_id, None)
                for record in turn.records[-len(calls) :]:
                    new.append(_tool_message(record))
                tools = self._tools(req)  # new tools are visible next round
            new.append(final)
            await self._store.append(req.session_id, new)
        yield TurnResult(
            session_id=req.session_id,
            message=final,
            records=turn.records,
            usage=usage,
            round_limit_reached=limit_reached,
            provider=provider.name,
            model=model,
        )
        yield usage

    def _tools(self, req: TurnRequest) -> list[ToolSpec]:
        tools = self._view.tools_for(req.role)
        if req.allowed_tools:
            tools = [t for t in tools if t.name in req.allowed_tools]
        return tools

    def _sync_names(self, role: str, calls: list[ToolCall]) -> list[str]:
        names = []
        for call in calls:
            spec = self._view.get(role, call.name)
            if spec is not None and not spec.is_async:
                names.append(call.name)
        return names

    def _shed_parts(self, system: list[Message], new: list[Message]) -> list[Message]:
        """The turn's messages, their oldest content parts named instead of sent
        (``[image: ...] (left out: ...)``) while they weigh more than a request holds.

        Two 3 MB images in one turn (each within the parts' bounds) would
        otherwise fail the turn; what the model does not get is not stored either.
        """
        bound = self._settings.max_request_bytes
        total = sum(message_bytes(m) for m in system + new)
        if total <= bound:
            return new
        out = list(new)
        for i, m in enumerate(out):
            if total <= bound:
                break
            # Text and references stay: only parts carrying bytes are named.
            if any(not p.HasField("text") and part_size(p) for p in m.parts):
                said = [
                    p
                    if p.HasField("text") or not part_size(p)
                    else tools_pb2.ContentPart(
                        text=f"{placeholder(p)} (left out: the request would be too big)"
                    )
                    for p in m.parts
                ]
                slim = dataclasses.replace(m, parts=said, weight=0)
                total += message_bytes(slim) - message_bytes(m)
                out[i] = slim
        return out

    def _fit(self, history: list[Message], turn: list[Message]) -> list[Message]:
        """The newest history that fits next to ``turn`` (system prompt and this turn's
        messages) in ``max_request_bytes``; the oldest goes first.

        Raises ProviderError ("rejected": INVALID_ARGUMENT) when the turn's own
        messages and tool results alone are over the bound.
        """
        bound = self._settings.max_request_bytes
        budget = bound - sum(message_bytes(m) for m in turn)
        if budget < 0:
            raise ProviderError(
                "rejected",
                f"this turn's messages and tool results weigh {bound - budget} bytes, over the "
                f"{bound} bytes a provider request may hold (TOOLCALL_MAX_REQUEST_BYTES)",
            )
        return trim_history(history, 0, budget) if budget else []

    async def _dispatch_round(
        self, turn: _Turn, calls: list[ToolCall]
    ) -> AsyncGenerator[Event, None]:
        """Runs one round's calls concurrently; finished events come as calls finish.

        With parallel_tool_calls off, only an answer's first call runs; the
        others get an error result (every call needs a result in the history).
        """
        parallel = turn.request.parallel_tool_calls is not False
        for call in calls:
            yield ToolCallStarted(call)
        running = [
            asyncio.create_task(self._call(turn, call, extra=i > 0 and not parallel))
            for i, call in enumerate(calls)
        ]
        try:
            for next_done in asyncio.as_completed(running):
                yield ToolCallFinished(await next_done)
        finally:
            for task in running:
                task.cancel()
        turn.records.extend(task.result() for task in running)

    async def _call(self, turn: _Turn, call: ToolCall, *, extra: bool = False) -> ToolCallRecord:
        req = turn.request
        started = time.perf_counter()
        task_id = ""
        spec = self._view.get(req.role, call.name)
        if req.allowed_tools and call.name not in req.allowed_tools:
            spec = None  # not offered this turn: unknown to the model
        try:
            if extra:
                result = error_result(
                    "FAILED_PRECONDITION: one tool call per answer in this turn "
                    "(parallel_tool_calls is off); this one was not run: ask for it again"
                )
            elif spec is None:
                self._telemetry.unknown_tool("chat")
                available = ", ".join(t.name for t in self._tools(req)) or "(none)"
                result = error_result(f"unknown tool '{call.name}'; available: {available}")
            elif wait := charge_tool_call():  # the caller's tool_calls_per_minute
                result = error_result(
                    f"RESOURCE_EXHAUSTED: this caller's tool calls per minute are used up; "
                    f"retry in {wait:.1f} s"
                )
            elif spec.is_async:
                # Starting counts against the per-chat cap like a sync call.
                async with turn.semaphore:
                    result, task_id = await self._start_async(spec, call, req)
            else:
                async with turn.semaphore:
                    remaining = None if req.deadline is None else req.deadline - time.monotonic()
                    result = await self._dispatcher.invoke(
                        spec,
                        raw_arguments=call.raw_arguments,
                        call_id=call.call_id,
                        session_id=req.session_id,
                        role=req.role,
                        timeout_s=remaining,
                    )
        except asyncio.CancelledError:
            raise
        except TaskLimitError as exc:  # too many async tasks running: the model is told
            result = error_result(f"RESOURCE_EXHAUSTED: {exc}")
        except StoreError:
            # A task the database cannot take (PostgreSQL restarting) fails the
            # whole turn UNAVAILABLE, which a client retries; as a tool error it
            # would be stored in the history as if the tool had failed.
            raise
        except Exception as exc:  # a bug on our side: the model still gets an answer
            log.exception("tool call %s (%s) failed", call.call_id, call.name)
            result = error_result(f"INTERNAL: {type(exc).__name__}: {exc}")
        return ToolCallRecord(call, result, task_id, (time.perf_counter() - started) * 1000.0)

    async def _start_async(
        self, spec: ToolSpec, call: ToolCall, req: TurnRequest
    ) -> tuple[tools_pb2.ToolResult, str]:
        # Bad arguments are reported now, while the model can still fix them,
        # instead of in a failed task later; the task passes them on unchecked.
        arguments, refused = spec.check_arguments(call.raw_arguments)
        if refused:
            return error_result(refused), ""
        follow = (
            self._settings.async_follow_up if req.follow_up_async is None else req.follow_up_async
        )
        follow_up = json.dumps({"provider": req.provider, "model": req.model}) if follow else ""
        task = await self._tasks.start(
            spec, call, arguments, req.session_id, req.role, follow_up=follow_up
        )
        ack = {
            "status": "accepted",
            "task_id": task.task_id,
            "message": spec.ack_message or DEFAULT_ACK,
        }
        return tools_pb2.ToolResult(output=to_value(ack)), task.task_id

    async def follow_up(self, task: TaskRecord) -> str:
        """The model's sentence about ``task``'s result (its note is in the history):
        a turn of one round without tools, with the provider and model the task's
        turn used. Raises what a turn raises (ProviderError...)."""
        chosen = json.loads(task.follow_up)
        turn = TurnRequest(
            session_id=task.session_id,
            role=task.role,
            messages=[Message("system", FOLLOW_UP_PROMPT)],
            provider=str(chosen.get("provider", "")),
            model=str(chosen.get("model", "")),
            max_tool_rounds=1,
            tool_choice="none",
            deadline=time.monotonic() + self._settings.provider_timeout_s,
        )
        async with contextlib.aclosing(self.run(turn)) as events:
            async for event in events:
                if isinstance(event, TurnResult):
                    return event.message.content
        return ""


def _unique_ids(calls: list[ToolCall]) -> list[ToolCall]:
    """Every call gets a non-empty id, unique within the round."""
    seen: set[str] = set()
    for call in calls:
        if not call.call_id or call.call_id in seen:
            call.call_id = new_call_id()
        seen.add(call.call_id)
    return calls


def _tool_message(record: ToolCallRecord) -> Message:
    result = record.result
    content = tool_result_content(
        from_value(result.output), result.error if result.is_error else None
    )
    return Message(
        "tool",
        content,
        tool_call_id=record.call.call_id,
        name=record.call.name,
        parts=list(result.parts),
    )
