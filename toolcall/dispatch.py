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
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import grpc

from toolcall import config
from toolcall.address_policy import canonical_address
from toolcall.channels import open_channel
from toolcall.ids import new_call_id
from toolcall.jsonvalue import to_struct, to_value
from toolcall.tools import ToolSpec
from toolcall.v1 import callback_pb2, callback_pb2_grpc, tools_pb2

log = logging.getLogger(__name__)


def error_result(error: str, output: Any = None) -> tools_pb2.ToolResult:
    return tools_pb2.ToolResult(output=to_value(output), is_error=True, error=error)


DEFAULT_MAX_CHANNELS = 256
DEFAULT_CHANNEL_IDLE_S = 60.0
# Memo of raw callback address -> canonical address (parsing costs ~18 us a
# call): at most this many entries of at most _KEY_CACHE_MAX_CHARS characters
# each (~1 MiB), emptied when full.
_KEY_CACHE_ENTRIES = 1024
_KEY_CACHE_MAX_CHARS = 512


@dataclass(frozen=True, slots=True)
class DispatchLimits:
    """The Dispatcher's bounds; each service's settings carry one as ``dispatch``."""

    # Largest tool output (serialized) passed on to a caller or a model.
    max_tool_output_bytes: int = config.MAX_TOOL_OUTPUT_BYTES
    # Channels to plugins kept open at once (least recently used closes
    # first), and how long an unused one stays open.
    max_callback_channels: int = DEFAULT_MAX_CHANNELS
    callback_channel_idle_s: float = DEFAULT_CHANNEL_IDLE_S

    @classmethod
    def from_env(cls) -> DispatchLimits:
        """Read by the services' settings (the programs' edge), never by the Dispatcher."""
        return cls(
            max_tool_output_bytes=config.env_int(
                "MAX_TOOL_OUTPUT_BYTES", config.MAX_TOOL_OUTPUT_BYTES
            ),
            max_callback_channels=config.env_int("MAX_CALLBACK_CHANNELS", DEFAULT_MAX_CHANNELS),
            callback_channel_idle_s=config.env_float(
                "CALLBACK_CHANNEL_IDLE", DEFAULT_CHANNEL_IDLE_S
            ),
        )

    def problems(self) -> list[str]:
        """Limits that cannot work, as sentences."""
        bad = []
        if self.max_tool_output_bytes < 1:
            bad.append("max_tool_output_bytes must be at least 1")
        if self.max_callback_channels < 1:
            bad.append("max_callback_channels must be at least 1")
        if not self.callback_channel_idle_s > 0:
            bad.append("callback_channel_idle_s must be a positive number of seconds")
        return bad

    def dispatcher(self) -> Dispatcher:
        if problems := self.problems():
            raise ValueError("; ".join(problems))
        return Dispatcher(
            max_output_bytes=self.max_tool_output_bytes,
            max_channels=self.max_callback_channels,
            channel_idle_s=self.callback_channel_idle_s,
        )


@dataclass(slots=True, eq=False)
class _Channel:
    channel: grpc.aio.Channel
    stub: callback_pb2_grpc.ToolCallbackAsyncStub
    in_flight: int = 0
    last_used: float = 0.0
    # Out of the pool; closed when its last call ends.
    retired: bool = False


class Dispatcher:
    """Calls plugins' ToolCallback services over a bounded pool of channels.

    Channels are keyed by the canonical callback address, so every spelling
    of one socket and every tool behind it share one channel (one file
    descriptor on each side). A channel closes when its owner says the last
    tool using it is gone (``release``), when it has been idle for
    ``channel_idle_s``, or when more than ``max_channels`` are open (least
    recently used first); a channel with calls in flight closes when they end.
    Closing matters for dead addresses too: gRPC keeps redialling them.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = config.MAX_MESSAGE_BYTES,
        max_output_bytes: int = config.MAX_TOOL_OUTPUT_BYTES,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        channel_idle_s: float = DEFAULT_CHANNEL_IDLE_S,
    ) -> None:
        if max_output_bytes < 1 or max_channels < 1 or not channel_idle_s > 0:
            raise ValueError("Dispatcher limits must be positive")
        self._max_message_bytes = max_message_bytes
        self._max_output_bytes = max_output_bytes
        self._max_channels = max_channels
        self._idle_s = channel_idle_s
        # canonical address -> channel, least recently used first.
        self._pool: OrderedDict[str, _Channel] = OrderedDict()
        self._retired: set[_Channel] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._keys: dict[str, str] = {}

    @property
    def open_channels(self) -> int:
        """Channels open now (pooled plus retired ones still finishing calls)."""
        return len(self._pool) + len(self._retired)

    def _key(self, address: str) -> str:
        key = self._keys.get(address)
        if key is None:
            key = canonical_address(address)
            if len(address) <= _KEY_CACHE_MAX_CHARS:
                if len(self._keys) >= _KEY_CACHE_ENTRIES:
                    self._keys.clear()
                self._keys[address] = key
        return key

    def _acquire(self, address: str) -> _Channel:
        key = self._key(address)
        entry = self._pool.get(key)
        if entry is None:
            channel = open_channel(key, max_message_bytes=self._max_message_bytes)
            entry = self._pool[key] = _Channel(channel, callback_pb2_grpc.ToolCallbackStub(channel))
            while len(self._pool) > self._max_channels:
                self._retire(self._pool.popitem(last=False)[1])
            if self._sweep_timer is None:
                self._schedule_sweep()
        else:
            self._pool.move_to_end(key)
        entry.in_flight += 1
        entry.last_used = time.monotonic()
        return entry

    def _done(self, entry: _Channel) -> None:
        entry.in_flight -= 1
        entry.last_used = time.monotonic()
        if entry.retired and entry.in_flight == 0:
            self._retired.discard(entry)
            self._close_later(entry)

    def release(self, address: str) -> None:
        """The owner's word that no tool uses ``address`` any more: close its channel."""
        entry = self._pool.pop(self._key(address), None)
        if entry is not None:
            self._retire(entry)

    def _retire(self, entry: _Channel) -> None:
        entry.retired = True
        if entry.in_flight:
            self._retired.add(entry)
        else:
            self._close_later(entry)

    def _close_later(self, entry: _Channel) -> None:
        task = asyncio.get_running_loop().create_task(entry.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweep_timer = loop.call_later(self._idle_s / 2, self._sweep)

    def _sweep(self) -> None:
        self._sweep_timer = None
        cutoff = time.monotonic() - self._idle_s
        for key in [k for k, e in self._pool.items() if not e.in_flight and e.last_used <= cutoff]:
            self._retire(self._pool.pop(key))
        if self._pool:
            self._schedule_sweep()

    async def close(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        entries = [*self._pool.values(), *self._retired]
        self._pool.clear()
        self._retired.clear()
        closing = [e.channel.close() for e in entries]
        await asyncio.gather(*closing, *self._closing, return_exceptions=True)

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
        return await self._invoke(
            spec,
            raw_arguments,
            arguments,
            call_id or new_call_id(),
            session_id,
            role,
            timeout_s,
            checked,
        )

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
        entry = self._acquire(spec.callback_address)
        try:
            reply = await entry.stub.Invoke(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return error_result(self._describe_rpc_error(spec, exc, timeout))
        finally:
            self._done(entry)
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
            # gRPC's details say why the connect failed ("No such file or
            # directory", "Connection refused"...): the caller chose the
            # address, and the dial ran with this process's rights, so the
            # details would tell it what exists on this host. The log keeps them.
            log.debug("%s is unreachable: %s", where, exc.details())
            return f"UNAVAILABLE: {where} is unreachable"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return (
                f"RESOURCE_EXHAUSTED: {where} returned more than the "
                f"{self._max_message_bytes} byte message limit"
            )
        if code == grpc.StatusCode.CANCELLED:
            return f"CANCELLED: the call to {where} was cancelled"
        return f"{code.name}: {where} failed: {exc.details()}"
