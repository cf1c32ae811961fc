"""Who may change the registry or run tools: local peers only, plus an optional shared token.

Both gates apply to the mutating RPCs (Register, Unregister, Clear,
CreateLease, KeepAlive, RevokeLease) and to Invoke, which runs plugin code
with caller-chosen arguments, session_id and role. They are enforced in one
place, the ``MutationGate`` interceptor. Reading (List, Watch, health,
reflection) needs neither.

Local means the connection itself is local: a unix socket, or a TCP peer in
127.0.0.0/8 or ::1. An IPv4-mapped loopback peer (``[::ffff:127.0.0.1]``,
seen on dual-stack listeners) is local too: the kernel only produces it for
a connection that came over the loopback interface. Everything else,
including link-local and private addresses, is not.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from toolcall.address_policy import is_loopback_ip

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

MUTATING_METHODS = frozenset(
    {"Register", "Unregister", "Clear", "CreateLease", "KeepAlive", "RevokeLease"}
)
# Invoke executes code: gated like a change, not served like a read.
GATED_METHODS = MUTATING_METHODS | {"Invoke"}


def is_local_peer(peer: str) -> bool:
    """True when a gRPC peer string (``context.peer()``) is a loopback or unix-socket peer."""
    if peer.startswith(("unix:", "unix-abstract:")):
        return True
    if peer.startswith("ipv4:"):
        return is_loopback_ip(peer[len("ipv4:") :].rpartition(":")[0])
    if peer.startswith("ipv6:["):
        host, sep, _ = peer[len("ipv6:[") :].partition("]:")
        return bool(sep) and ":" in host and is_loopback_ip(host)
    return False


def bearer_token_ok(metadata: Iterable[tuple[str, Any]] | None, token: str) -> bool:
    """True when ``metadata`` has ``authorization: Bearer <token>`` (constant-time compare)."""
    expected = f"Bearer {token}".encode()
    for key, value in metadata or ():
        if key.lower() == "authorization":
            given = value if isinstance(value, bytes) else str(value).encode()
            if hmac.compare_digest(given, expected):
                return True
    return False


def access_error(
    peer: str, metadata: Iterable[tuple[str, Any]] | None, token: str
) -> tuple[grpc.StatusCode, str] | None:
    """Why a gated call from ``peer`` is refused, or None when it may proceed."""
    if not is_local_peer(peer):
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            f"changes to the registry and Invoke are only accepted from local peers "
            f"(loopback or unix socket), not from {peer[:120]}",
        )
    if token and not bearer_token_ok(metadata, token):
        return (
            grpc.StatusCode.UNAUTHENTICATED,
            "this registry requires 'authorization: Bearer <token>' metadata for changes "
            "and Invoke (TOOLCALL_TOKEN or TOOLCALL_TOKEN_FILE); it was missing or wrong",
        )
    return None


class MutationGate(grpc.aio.ServerInterceptor):
    """Applies ``access_error`` to the gated methods (changes and Invoke) of ``service``."""

    def __init__(self, service: str, token: str) -> None:
        self._methods = frozenset(f"/{service}/{m}" for m in GATED_METHODS)
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self._methods:
            return handler
        # grpc.aio handlers are coroutine functions; the stubs type them as sync.
        behavior: Any = handler.unary_unary
        if behavior is None:  # every gated RPC is unary; be safe if that changes
            return handler
        token = self._token

        async def guarded(request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
            refused = access_error(context.peer(), context.invocation_metadata(), token)
            if refused is not None:
                log.warning(
                    "refused %s from %s: %s",
                    handler_call_details.method,
                    context.peer(),
                    refused[0].name,
                )
                await context.abort(*refused)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
