"""The plugin side of ``ToolCallback.Invoke``: validate, run the handler, shape the result.

Arguments are checked again here (a caller may be anyone on loopback) by
the same bounded routine as the registry's: ``toolcall.schemas``.

Result rules: a plain return value is the output (it must be JSON-compatible);
a pydantic model or a dataclass is the output as JSON (``model_dump``,
``asdict``); an ``Image``, ``Audio`` or ``File`` is a content part, and a
list holding any is split: its parts are the content parts, its other items
the output (one: that item; several: a list); a dict with ``output`` and
``is_error`` keys is taken as the result itself (``error`` is its message,
``parts`` its content parts); a raised exception becomes ``is_error`` with
``"ExceptionClass: message"`` (logged here, never sent as a traceback).
An unknown tool name is a NOT_FOUND status: the caller's view of this plugin
is stale, which is not the tool's fault. ``Accepted`` (an async call offered a
long job, ``CallContext.job``) is the "accepted" answer; the job is then
remembered for ``CancelJob`` (plugin_stub/jobs.py).

Traces: the handler runs in the context of the caller's W3C ``traceparent``
(the dispatcher's ``execute_tool`` span), so spans it starts with the
OpenTelemetry API are children of the tool call; with no ``traceparent``
nothing changes.

Deadlines: a call gets the tool's timeout or the caller's gRPC deadline,
whichever is shorter. An ``async def`` handler that overruns is cancelled;
so is one whose caller cancels the RPC (grpc.aio cancels the RPC task). A
plain ``def`` handler runs in a bounded thread pool; when it overruns the
caller gets the timeout error at once, but the thread runs on until the
function returns, because Python threads cannot be killed.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
from concurrent.futures import Executor
from typing import Any

import grpc
from opentelemetry import context as otel_context

from plugin_stub.context import CallContext
from plugin_stub.errors import ToolError
from plugin_stub.jobs import Accepted, Job, cancel_live, remember
from plugin_stub.local_tools import LocalTool, ToolTable
from plugin_stub.parts import PART_TYPES, Part
from toolcall.jsonvalue import from_struct, to_value
from toolcall.telemetry import attach_remote_parent
from toolcall.v1 import callback_pb2, callback_pb2_grpc, tools_pb2

log = logging.getLogger(__name__)

Response = callback_pb2.ToolCallbackInvokeResponse


def error_response(error: str, output: Any = None) -> Response:
    return Response(output=to_value(output), is_error=True, error=error)


# Return values that are JSON as they are: no parts, no conversion to look for.
_PLAIN = frozenset({dict, str, int, float, bool, type(None)})


def _structured(value: Any) -> tuple[Any, list[Part]]:
    """(output, parts) of a return value that is not plain JSON."""
    if isinstance(value, PART_TYPES):
        return None, [value]
    if isinstance(value, list | tuple):
        parts = [v for v in value if isinstance(v, PART_TYPES)]
        if not parts:
            return value, []
        rest = [_as_json(v) for v in value if not isinstance(v, PART_TYPES)]
        return (rest[0] if len(rest) == 1 else rest or None), parts
    return _as_json(value), []


def _as_json(value: Any) -> Any:
    """A pydantic model or dataclass instance as its JSON value; anything else as it is."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def shape_result(value: Any) -> Response:
    """The response for a handler's return value (see the module docstring)."""
    parts: list[Part] = []
    if type(value) is dict and "output" in value and "is_error" in value:
        output, is_error = value["output"], bool(value["is_error"])
        error = str(value.get("error") or "") if is_error else ""
        if is_error and not error:
            error = "tool reported an error without a message"
        if value.get("parts"):
            output_parts, parts = _structured(list(value["parts"]))
            if output_parts is not None:
                return error_response("TypeError: 'parts' holds something not Image/Audio/File")
        output = _as_json(output)
    else:
        output, is_error, error = value, False, ""
        if type(value) not in _PLAIN:
            output, parts = _structured(value)
    try:
        out = to_value(output)
    except (TypeError, ValueError):
        return error_response(
            f"TypeError: result is not JSON serializable ({type(output).__name__})"
        )
    except (OverflowError, RecursionError) as exc:  # an int past a double's range, deep nesting
        return error_response(f"ValueError: result cannot be sent ({type(exc).__name__}: {exc})")
    response = Response(output=out, is_error=is_error, error=error)
    for p in parts:  # written in place: extend() would copy every part again
        p.fill(response.parts.add())
    return response


class ToolRunner:
    """Runs one call of a local tool within its deadline."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def run(
        self,
        tool: LocalTool,
        request: callback_pb2.ToolCallbackInvokeRequest,
        remaining_s: float | None = None,
    ) -> Response:
        arguments = from_struct(request.arguments)
        if reason := tool.validate(arguments):
            return error_response(f"INVALID_ARGUMENT: {reason}")
        job = None
        if request.HasField("job"):
            offered = request.job
            job = Job(offered.task_id, offered.token, offered.llm_address, offered.max_age_seconds)
        if tool.context_param is not None:
            arguments[tool.context_param] = CallContext(
                tool=tool.name,
                call_id=request.call_id,
                session_id=request.session_id,
                role=request.role,
                raw_arguments=request.raw_arguments,
                job=job,
            )
        if tool.enum_params:
            try:
                for name, enum_type in tool.enum_params:
                    if arguments.get(name) is not None:
                        arguments[name] = enum_type(arguments[name])
            except ValueError as exc:
                return error_response(f"INVALID_ARGUMENT: {exc}")
        if tool.record_params:
            name = ""
            try:
                for name, build in tool.record_params:
                    if arguments.get(name) is not None:
                        arguments[name] = build(arguments[name])
            except Exception as exc:  # pydantic's ValidationError, a dataclass's TypeError
                return error_response(f"INVALID_ARGUMENT: arguments.{name}: {str(exc)[:500]}")
        timeout = tool.meta.timeout_s
        # A caller's deadline that comes first is enforced by gRPC itself (it
        # cancels this task); a timer of our own per call for it would cost
        # ~14 µs of CPU under load. Only the tool's own, shorter timeout needs one.
        caller_governs = remaining_s is not None and remaining_s <= timeout
        limit = None if caller_governs else asyncio.timeout(timeout)
        try:
            if limit is None:
                value = await self._call(tool, arguments)
            else:
                async with limit:
                    value = await self._call(tool, arguments)
        except TimeoutError as exc:
            if limit is not None and limit.expired():
                log.warning("tool %s did not finish within %.3gs", tool.name, timeout)
                return error_response(
                    f"DEADLINE_EXCEEDED: tool '{tool.name}' did not finish within {timeout:.3g}s"
                )
            return self._raised(tool, exc)
        except Exception as exc:
            return self._raised(tool, exc)
        if isinstance(value, Accepted):
            if job is None:
                return error_response(
                    f"FAILED_PRECONDITION: tool '{tool.name}' returned Accepted, but this call "
                    "offered no long job (only async tools called by the LLMService can accept)"
                )
            job.job_id = value.job_id or job.task_id
            remember(job)
            return Response(accepted=tools_pb2.JobAccepted(job_id=value.job_id))
        return shape_result(value)

    async def _call(self, tool: LocalTool, arguments: dict[str, Any]) -> Any:
        if tool.is_coroutine:
            return await tool.handler(**arguments)
        loop = asyncio.get_running_loop()
        call = functools.partial(tool.handler, **arguments)
        # In a copy of this task's context: the thread sees the trace context too.
        return await loop.run_in_executor(self._executor, contextvars.copy_context().run, call)

    @staticmethod
    def _raised(tool: LocalTool, exc: Exception) -> Response:
        if isinstance(exc, ToolError):  # expected: no traceback, the message as given
            log.info("tool %s failed: %s", tool.name, exc.message[:200])
            return error_response(exc.message or "tool failed", _as_json(exc.output))
        log.warning("tool %s raised %s", tool.name, type(exc).__name__, exc_info=exc)
        return error_response(f"{type(exc).__name__}: {exc}")


class CallbackServicer(callback_pb2_grpc.ToolCallbackServicer):
    """ToolCallback over a plugin's ToolTable."""

    def __init__(self, tools: ToolTable, runner: ToolRunner, plugin_id: str) -> None:
        self._lookup = tools.get
        self._run = runner.run
        self._plugin_id = plugin_id

    async def Invoke(
        self,
        request: callback_pb2.ToolCallbackInvokeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Response:
        tool = self._lookup(request.name)
        if tool is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"tool {request.name!r} is not served by plugin {self._plugin_id!r}",
            )
            raise AssertionError("unreachable")  # abort always raises
        token = attach_remote_parent(context.invocation_metadata())
        try:
            return await self._run(tool, request, context.time_remaining())
        finally:
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]

    async def CancelJob(
        self,
        request: callback_pb2.CancelJobRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> callback_pb2.CancelJobResponse:
        known = cancel_live(request.task_id, request.token, request.reason)
        if known is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "wrong token for this job")
        if known:
            log.info("job %s ended: %s", request.task_id, request.reason[:200])
        return callback_pb2.CancelJobResponse(known=bool(known))
