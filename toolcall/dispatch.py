"""The one routine that calls a plugin: parse, validate, dispatch, shape errors.

``Registry.Invoke`` and the LLMService's chat loop both call
``Dispatcher.invoke``; the LLMService uses it to reach plugins directly (one
hop) from its Watch-fed view of the registry. Every failure of the tool itself
comes back as a ``ToolResult`` with ``is_error`` set and a readable reason;
only cancellation by the caller propagates as an exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc

from toolcall import config
from toolcall.ids import new_call_id
from toolcall.jsonvalue import to_struct, to_value
from toolcall.tools import ToolSpec
from toolcall.v1 import callback_pb2, callback_pb2_grpc, tools_pb2

log = logging.getLogger(__name__)


def error_result(error: str, output: Any = None) -> tools_pb2.ToolResult:
    return tools_pb2.ToolResult(output=to_value(output), is_error=True, error=error)


@dataclass(slots=True)
class ToolStats:
    calls: int = 0
    errors: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    last_error: str = ""

    def record(self, latency_ms: float, error: str | None) -> None:
        self.calls += 1
        self.total_ms += latency_ms
        self.max_ms = max(self.max_ms, latency_ms)
        if error is not None:
            self.errors += 1
            self.last_error = error

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


class Dispatcher:
    """Calls plugins' ToolCallback services, one cached channel per address."""

    def __init__(
        self,
        *,
        max_message_bytes: int = config.MAX_MESSAGE_BYTES,
        max_output_bytes: int | None = None,
    ) -> None:
        self._max_message_bytes = max_message_bytes
        self._max_output_bytes = max_output_bytes or config.env_int(
            "MAX_TOOL_OUTPUT_BYTES", config.MAX_TOOL_OUTPUT_BYTES
        )
        self._stubs: dict[str, callback_pb2_grpc.ToolCallbackAsyncStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        self.stats: dict[str, ToolStats] = {}

    def _stub(self, address: str) -> callback_pb2_grpc.ToolCallbackAsyncStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_receive_message_length", self._max_message_bytes),
                    ("grpc.max_send_message_length", self._max_message_bytes),
                    # Fail fast on a dead plugin instead of backing off for seconds.
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
            self._channels.append(channel)
            stub = self._stubs[address] = callback_pb2_grpc.ToolCallbackStub(channel)
        return stub

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)

    async def invoke(
        self,
        spec: ToolSpec,
        *,
        raw_arguments: str = "",
        arguments: dict[str, Any] | None = None,
        call_id: str = "",
        session_id: str = "",
        role: str = "",
        timeout_s: float | None = None,
        checked: bool = False,
    ) -> tools_pb2.ToolResult:
        """Calls ``spec``'s plugin. ``arguments`` wins over ``raw_arguments`` when given.

        ``timeout_s`` (the caller's remaining deadline) shortens the tool's own
        timeout, never lengthens it. ``checked``: the caller has already run
        ``spec.check_arguments`` on these arguments (the async path does, to
        answer the model at once), so they are not checked again.
        """
        started = time.perf_counter()
        result = await self._invoke(
            spec,
            raw_arguments,
            arguments,
            call_id or new_call_id(),
            session_id,
            role,
            timeout_s,
            checked,
        )
        latency_ms = (time.perf_counter() - started) * 1000.0
        stats = self.stats.get(spec.name)
        if stats is None:
            stats = self.stats[spec.name] = ToolStats()
        stats.record(latency_ms, result.error if result.is_error else None)
        return result

    async def _invoke(
        self,
        spec: ToolSpec,
        raw_arguments: str,
        arguments: dict[str, Any] | None,
        call_id: str,
        session_id: str,
        role: str,
        timeout_s: float | None,
        checked: bool,
    ) -> tools_pb2.ToolResult:
        if not checked:
            arguments, refused = spec.check_arguments(raw_arguments, arguments)
            if refused:
                return error_result(refused)
        request = callback_pb2.ToolCallbackInvokeRequest(
            name=spec.name,
            arguments=to_struct(arguments),
            raw_arguments=raw_arguments or (json.dumps(arguments) if arguments else ""),
            call_id=call_id,
            session_id=session_id,
            role=role,
        )
        timeout = spec.timeout_s if timeout_s is None else max(0.0, min(spec.timeout_s, timeout_s))
        try:
            reply = await self._stub(spec.callback_address).Invoke(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return error_result(self._describe_rpc_error(spec, exc, timeout))
        if (size := reply.output.ByteSize()) > self._max_output_bytes:
            return error_result(
                f"RESOURCE_EXHAUSTED: plugin for tool '{spec.name}' at {spec.callback_address} "
                f"returned {size} bytes of output; the limit is {self._max_output_bytes} bytes"
            )
        if reply.is_error and not reply.error:
            reply.error = "tool reported an error without a message"
        return tools_pb2.ToolResult(output=reply.output, is_error=reply.is_error, error=reply.error)

    def _describe_rpc_error(self, spec: ToolSpec, exc: grpc.aio.AioRpcError, timeout: float) -> str:
        code = exc.code()
        where = f"plugin for tool '{spec.name}' at {spec.callback_address}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"DEADLINE_EXCEEDED: {where} did not answer within {timeout:g}s"
        if code == grpc.StatusCode.UNAVAILABLE:
            return f"UNAVAILABLE: {where} is unreachable ({exc.details()})"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return (
                f"RESOURCE_EXHAUSTED: {where} returned more than the "
                f"{self._max_message_bytes} byte message limit"
            )
        if code == grpc.StatusCode.CANCELLED:
            return f"CANCELLED: the call to {where} was cancelled"
        return f"{code.name}: {where} failed: {exc.details()}"
