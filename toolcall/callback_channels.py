"""The bounded pool of channels from a service to its plugins' ToolCallback servers.

Channels are keyed by the canonical callback address, so every spelling of
one socket and every tool behind it share one channel (one file descriptor
on each side). A channel closes when its owner says the last tool using it
is gone (``release``), when it has been idle for ``idle_s``, or when more
than ``max_channels`` are open (least recently used first); a channel with
calls in flight closes when they end. Closing matters for dead addresses
too: gRPC keeps redialling them.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from toolcall import config
from toolcall.address_policy import canonical_address
from toolcall.channels import open_channel
from toolcall.tls import ClientTLS, is_local_address
from toolcall.v1 import callback_pb2, callback_pb2_grpc, tools_pb2

DEFAULT_MAX_CHANNELS = 256
DEFAULT_CHANNEL_IDLE_S = 60.0
# Memo of raw callback address -> canonical address (parsing costs ~18 us a
# call): at most this many entries of at most _KEY_CACHE_MAX_CHARS characters
# each (~1 MiB), emptied when full.
_KEY_CACHE_ENTRIES = 1024
_KEY_CACHE_MAX_CHARS = 512


# A plugin's reply is decoded straight into the ToolResult the Dispatcher
# passes on: ToolCallbackInvokeResponse is ToolResult field for field (same
# numbers and types; tests/test_dispatch.py checks), so its output and parts
# are never copied (copying a 1 MiB image part cost 2 ms a call).
#
# A reply protobuf cannot decode (a Value nested past its 100-message limit)
# failed Registry.Invoke with "UNKNOWN: Unexpected <class 'AttributeError'>"
# (grpcio hands on None); the deserializer answers this one object instead,
# never mutated, which the Dispatcher turns into an is_error result.
UNDECODABLE_REPLY = tools_pb2.ToolResult(is_error=True)


def _decode_reply(data: bytes) -> tools_pb2.ToolResult:
    try:
        return tools_pb2.ToolResult.FromString(data)
    except DecodeError:
        return UNDECODABLE_REPLY


def _invoke_stub(channel: grpc.aio.Channel) -> callback_pb2_grpc.ToolCallbackAsyncStub:
    stub = callback_pb2_grpc.ToolCallbackStub(channel)
    stub.Invoke = channel.unary_unary(  # answers ToolResults, typed as the stub's replies
        "/toolcall.v1.ToolCallback/Invoke",
        request_serializer=callback_pb2.ToolCallbackInvokeRequest.SerializeToString,
        response_deserializer=_decode_reply,  # type: ignore[arg-type]
    )
    return stub


@dataclass(slots=True, eq=False)
class CallbackChannel:
    channel: grpc.aio.Channel
    stub: callback_pb2_grpc.ToolCallbackAsyncStub
    in_flight: int = 0
    last_used: float = 0.0
    # Out of the pool; closed when its last call ends.
    retired: bool = False


class CallbackChannels:
    """``acquire`` a channel for a call, ``done`` when it ends; ``release`` an address."""

    def __init__(
        self,
        *,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        idle_s: float = DEFAULT_CHANNEL_IDLE_S,
        max_message_bytes: int = config.MAX_MESSAGE_BYTES,
        remote_tls: ClientTLS | None = None,
    ) -> None:
        if max_channels < 1 or not idle_s > 0:
            raise ValueError("channel pool limits must be positive")
        self._max_channels = max_channels
        self._idle_s = idle_s
        self._max_message_bytes = max_message_bytes
        # mTLS for plugins on other hosts (allow-listed); loopback stays plaintext.
        self._remote_tls = remote_tls
        # canonical address -> channel, least recently used first.
        self._pool: OrderedDict[str, CallbackChannel] = OrderedDict()
        self._retired: set[CallbackChannel] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._keys: dict[str, str] = {}

    @property
    def open_count(self) -> int:
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

    def acquire(self, address: str) -> CallbackChannel:
        key = self._key(address)
        entry = self._pool.get(key)
        if entry is None:
            tls = None if is_local_address(key) else self._remote_tls
            channel = open_channel(key, max_message_bytes=self._max_message_bytes, tls=tls)
            entry = CallbackChannel(channel, _invoke_stub(channel))
            self._pool[key] = entry
            while len(self._pool) > self._max_channels:
                self._retire(self._pool.popitem(last=False)[1])
            if self._sweep_timer is None:
                self._schedule_sweep()
        else:
            self._pool.move_to_end(key)
        entry.in_flight += 1
        entry.last_used = time.monotonic()
        return entry

    def done(self, entry: CallbackChannel) -> None:
        entry.in_flight -= 1
        entry.last_used = time.monotonic()
        if entry.retired and entry.in_flight == 0:
            self._retired.discard(entry)
            self._close_later(entry)

    def release(self, address: str) -> None:
        entry = self._pool.pop(self._key(address), None)
        if entry is not None:
            self._retire(entry)

    def _retire(self, entry: CallbackChannel) -> None:
        entry.retired = True
        if entry.in_flight:
            self._retired.add(entry)
        else:
            self._close_later(entry)

    def _close_later(self, entry: CallbackChannel) -> None:
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
