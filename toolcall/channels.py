"""The one way toolcall opens a gRPC channel, and the one retry backoff.

Every client channel (the Dispatcher's to plugins, the LLMService's Watch of
the registry, a plugin's registrar, the CLI) comes from ``open_channel`` so
they share one set of options: toolcall's message size limits and a
reconnect backoff of 0.1 s to 1 s, so a restarted peer is noticed within a
second and a dead one fails fast instead of waiting out gRPC's default
(up to two minutes). Loops that retry a whole conversation with a peer (the
registry watch, a plugin's registration) wait with ``Backoff``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from toolcall import config

if TYPE_CHECKING:
    from toolcall.tls import ClientTLS

RECONNECT_INITIAL_MS = 100
RECONNECT_MAX_MS = 1000
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0


def channel_options(max_message_bytes: int = config.MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        # Not grpc.min_reconnect_backoff_ms: gRPC also uses it as the time a
        # connection attempt may take (default 20 s), so a small value turns a
        # slow or stalled peer into a fast UNAVAILABLE instead of waiting for
        # the call's own deadline.
    ]


def open_channel(
    address: str,
    *,
    max_message_bytes: int = config.MAX_MESSAGE_BYTES,
    tls: ClientTLS | None = None,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to ``address`` (create it inside the running loop); TLS when ``tls``
    is given and the address is not a unix socket. ``extra_options``: gRPC channel
    arguments a caller needs beside ours (load balancing, keepalive)."""
    options: list[tuple[str, Any]] = [*channel_options(max_message_bytes), *extra_options]
    if tls is not None and not address.startswith(("unix:", "unix-abstract:")):
        return grpc.aio.secure_channel(address, tls.credentials, options=[*options, *tls.options])
    return grpc.aio.insecure_channel(address, options=options)


def open_sync_channel(address: str, *, tls: ClientTLS | None = None) -> grpc.Channel:
    """``open_channel``'s blocking twin, for callers outside an event loop (a long
    job reported from a worker thread or another program)."""
    options: list[tuple[str, Any]] = list(channel_options())
    if tls is not None and not address.startswith(("unix:", "unix-abstract:")):
        return grpc.secure_channel(address, tls.credentials, options=[*options, *tls.options])
    return grpc.insecure_channel(address, options=options)


class Backoff:
    """Exponential delays: ``initial_s``, doubling, capped at ``max_s``; ``reset`` on success."""

    def __init__(self, initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next = initial_s

    def reset(self) -> None:
        self._next = self.initial_s

    def peek(self) -> float:
        """The next delay, without consuming it (for log messages)."""
        return self._next

    def delay(self) -> float:
        current = self._next
        self._next = min(self._next * 2, self.max_s)
        return current
