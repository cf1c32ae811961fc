"""Who is calling, and what they may do: principals, the authorization table, rate limits.

A principal is a name with privileges, the chat roles it may use, an admin
flag and rate limits. Principals come from a TOML file (``--principals`` or
``TOOLCALL_PRINCIPALS_FILE``, keep it mode 0600)::

    [[principal]]
    name = "alice"
    token_sha256 = "9f86d0..."    # sha256 hex of her bearer token (or token = "...")
    privileges = ["read", "invoke", "chat"]
    roles = ["default"]            # chat roles she may use; omitted: any
    turns_per_minute = 30          # Chat/ChatStream; 0 or omitted: unlimited
    tool_calls_per_minute = 120    # ToolRegistry.Invoke and a chat turn's tool calls

    [[principal]]
    name = "llm"
    certificate = "llm"            # mTLS: the client certificate's common name
    privileges = ["read"]

    [[principal]]
    name = "ops"
    token_sha256 = "..."
    admin = true                   # every privilege, every session

A caller is identified by a verified client certificate (mTLS; its subject
common name) first, else by ``authorization: Bearer <token>``. With mTLS and
no principals file, every certificate the CA signed is a principal with every
privilege but admin (sessions still belong to it). The registry's single
shared token (``TOOLCALL_TOKEN``) keeps working beside a principals file: it
names the admin principal ``token``.

``AuthGate`` is the server interceptor: every method of the guarded services
is in ``METHOD_PRIVILEGES`` or refused (fail closed); health stays open for
probes. The principal reaches the servicer through ``current_principal()``.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from toolcall import config

log = logging.getLogger(__name__)

PRIVILEGES = ("read", "invoke", "register", "clear", "chat")

# Every RPC of every guarded service, and the privilege it needs. ``None``:
# any authenticated principal (the servicer checks what it owns).
METHOD_PRIVILEGES: dict[str, str | None] = {
    "/toolcall.v1.ToolRegistry/List": "read",
    "/toolcall.v1.ToolRegistry/Watch": "read",
    # Invoke runs plugin code with caller-chosen arguments: a privilege, not a read.
    "/toolcall.v1.ToolRegistry/Invoke": "invoke",
    "/toolcall.v1.ToolRegistry/Register": "register",
    "/toolcall.v1.ToolRegistry/Unregister": "register",
    "/toolcall.v1.ToolRegistry/CreateLease": "register",
    "/toolcall.v1.ToolRegistry/KeepAlive": "register",
    "/toolcall.v1.ToolRegistry/RevokeLease": "register",
    "/toolcall.v1.ToolRegistry/Clear": "clear",
    "/toolcall.v1.LLMService/Chat": "chat",
    "/toolcall.v1.LLMService/ChatStream": "chat",
    "/toolcall.v1.LLMService/Subscribe": "chat",
    "/toolcall.v1.LLMService/AckTasks": "chat",
    "/toolcall.v1.LLMService/GetTask": "chat",
    "/toolcall.v1.LLMService/CancelTask": "chat",
    "/toolcall.v1.LLMService/GetHistory": "chat",
    # Long jobs: called by plugins and their workers; the task token in the
    # request is the authority (tasks.py), so any authenticated principal.
    "/toolcall.v1.LLMService/ReportProgress": None,
    "/toolcall.v1.LLMService/CompleteTask": None,
    "/toolcall.v1.ToolCallback/Invoke": "invoke",
    # The LLMService telling a plugin its long job ended: the caller of Invoke.
    "/toolcall.v1.ToolCallback/CancelJob": "invoke",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "read",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "read",
}
# Open to anyone who completed the TLS handshake: liveness probes.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
# Methods whose calls count against a principal's per-minute limits.
TURN_METHODS = frozenset({"/toolcall.v1.LLMService/Chat", "/toolcall.v1.LLMService/ChatStream"})
TOOL_CALL_METHODS = frozenset({"/toolcall.v1.ToolRegistry/Invoke"})

# A principals file lists people and services, not a user database.
MAX_PRINCIPALS_BYTES = 1024 * 1024
MAX_PRINCIPALS = 10_000
SHARED_TOKEN_PRINCIPAL = "token"


@dataclass(frozen=True)
class Principal:
    name: str
    privileges: frozenset[str] = frozenset(PRIVILEGES)
    # Chat roles it may use; empty: any.
    roles: frozenset[str] = frozenset()
    admin: bool = False
    turns_per_minute: int = 0
    tool_calls_per_minute: int = 0

    def may(self, privilege: str | None) -> bool:
        return privilege is None or self.admin or privilege in self.privileges

    def may_use_role(self, role: str) -> bool:
        return self.admin or not self.roles or role in self.roles


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "toolcall_principal", default=None
)


def current_principal() -> Principal | None:
    """The authenticated caller of the RPC being served; None when auth is off."""
    return _current.get()


_tool_charge: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar(
    "toolcall_tool_charge", default=None
)


def charge_tool_call() -> float:
    """Counts one tool call against the caller's ``tool_calls_per_minute``: 0 when it
    may run, else seconds until it could (the LLMService's tool calls in a turn)."""
    charge = _tool_charge.get()
    return 0.0 if charge is None else charge()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Principals:
    """The principals file, indexed by token digest and certificate name."""

    by_token: dict[str, Principal] = field(default_factory=dict)
    by_certificate: dict[str, Principal] = field(default_factory=dict)
    # mTLS without a file: any verified certificate is a principal.
    any_certificate: bool = False

    @classmethod
    def load(cls, path: str | Path, *, shared_token: str = "") -> Principals:
        """ConfigError naming the file and the entry for anything unusable."""
        p = Path(path).expanduser()
        raw = config.read_limited(p, MAX_PRINCIPALS_BYTES, "principals file")
        try:
            data = tomllib.loads(raw.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise config.ConfigError(f"principals file {str(p)!r}: {exc}") from None
        config.warn_if_shared(p)
        return cls.from_entries(data.get("principal", []), where=str(p), shared_token=shared_token)

    @classmethod
    def from_entries(
        cls, entries: Any, *, where: str = "principals", shared_token: str = ""
    ) -> Principals:
        if not isinstance(entries, list) or len(entries) > MAX_PRINCIPALS:
            raise config.ConfigError(f"{where}: [[principal]] entries, at most {MAX_PRINCIPALS}")
        out = cls()
        names: set[str] = set()
        for i, e in enumerate(entries):
            at = f"{where}: principal {i + 1}"
            if not isinstance(e, dict):
                raise config.ConfigError(f"{at} is not a table")
            principal, token, cert = _principal(e, at)
            if principal.name in names:
                raise config.ConfigError(f"{at}: name {principal.name!r} appears twice")
            names.add(principal.name)
            if token:
                if token in out.by_token:
                    raise config.ConfigError(f"{at}: its token is another principal's too")
                out.by_token[token] = principal
            if cert:
                out.by_certificate[cert] = principal
        if shared_token:
            out.by_token.setdefault(
                token_digest(shared_token), Principal(SHARED_TOKEN_PRINCIPAL, admin=True)
            )
        return out

    def authenticate(
        self, auth_context: Mapping[str, Iterable[bytes]], metadata: Iterable[tuple[str, Any]]
    ) -> Principal | str:
        """The caller's principal, or why it has none."""
        names = list(auth_context.get("x509_common_name", ()))
        if names:
            name = names[0].decode(errors="replace")
            principal = self.by_certificate.get(name)
            if principal is not None:
                return principal
            if self.any_certificate:
                return Principal(name)
            # A certificate with no entry may still carry a token.
        for key, value in metadata or ():
            if key.lower() != "authorization":
                continue
            given = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if not given.startswith("Bearer "):
                return "the authorization metadata is not 'Bearer <token>'"
            # A dict lookup by the token's sha256, not a compare per principal
            # (10,000 of them would cost ms a call): timing can at most tell
            # about the digest, from which the token cannot be worked back.
            principal = self.by_token.get(token_digest(given[len("Bearer ") :]))
            if principal is not None:
                return principal
            return "the bearer token names no principal"
        if names:
            return f"the client certificate {names[0][:64]!r} names no principal and no token came"
        return "no client certificate and no 'authorization: Bearer <token>' metadata"


def _principal(e: dict[str, Any], at: str) -> tuple[Principal, str, str]:
    known = {
        "name", "token", "token_sha256", "certificate", "privileges", "roles", "admin",
        "turns_per_minute", "tool_calls_per_minute",
    }  # fmt: skip
    if unknown := set(e) - known:
        raise config.ConfigError(f"{at}: unknown keys {', '.join(sorted(unknown))}")
    name = e.get("name")
    if not isinstance(name, str) or not name or config.token_error(name):
        raise config.ConfigError(f"{at}: name must be printable ASCII without spaces")
    token = e.get("token", "")
    digest = e.get("token_sha256", "")
    if token and digest:
        raise config.ConfigError(f"{at}: give token or token_sha256, not both")
    if token:
        if not isinstance(token, str) or config.token_error(token):
            raise config.ConfigError(f"{at}: token must be printable ASCII without spaces")
        digest = token_digest(token)
    if digest and (not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest.lower())):
        raise config.ConfigError(f"{at}: token_sha256 must be 64 hex digits")
    cert = e.get("certificate", "")
    if not isinstance(cert, str):
        raise config.ConfigError(f"{at}: certificate must be a common name")
    if not digest and not cert:
        raise config.ConfigError(f"{at}: needs a token, token_sha256 or certificate")
    privileges = e.get("privileges", ["read"])
    if not isinstance(privileges, list) or any(p not in PRIVILEGES for p in privileges):
        raise config.ConfigError(f"{at}: privileges must be among {', '.join(PRIVILEGES)}")
    roles = e.get("roles", [])
    if not isinstance(roles, list) or any(not isinstance(r, str) or not r for r in roles):
        raise config.ConfigError(f"{at}: roles must be a list of role names")
    limits = []
    for key in ("turns_per_minute", "tool_calls_per_minute"):
        value = e.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10**6:
            raise config.ConfigError(f"{at}: {key} must be an integer from 0 to 1000000")
        limits.append(value)
    admin = e.get("admin", False)
    if not isinstance(admin, bool):
        raise config.ConfigError(f"{at}: admin must be true or false")
    principal = Principal(
        name, frozenset(privileges), frozenset(roles), admin, limits[0], limits[1]
    )
    return principal, digest.lower(), cert


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)


class RateLimits:
    """Token buckets per (principal, kind): ``per_minute`` calls, refilled evenly.

    Bounded: one bucket per principal and kind, and principals come from the
    file; certificate-only principals (no file) have no limits, so no bucket.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, principal: str, kind: str, per_minute: int) -> float:
        """0 when the call may proceed, else seconds until it could."""
        if per_minute <= 0:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.get((principal, kind), (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - then) * per_minute / 60.0)
        if tokens >= 1.0:
            self._buckets[(principal, kind)] = (tokens - 1.0, now)
            return 0.0
        self._buckets[(principal, kind)] = (tokens, now)
        return (1.0 - tokens) * 60.0 / per_minute


def retry_status(message: str, retry_after_s: float) -> grpc.Status:
    """RESOURCE_EXHAUSTED with a google.rpc.RetryInfo detail saying when to retry."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(retry_after_s * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    )


class AuthGate(grpc.aio.ServerInterceptor):
    """Authenticates every call, checks its privilege and rate limits, sets the principal."""

    def __init__(self, principals: Principals, *, limits: RateLimits | None = None) -> None:
        self._principals = principals
        self._limits = limits or RateLimits()

    async def _admit(self, method: str, context: Any) -> Principal:
        who = self._principals.authenticate(
            context.auth_context(), context.invocation_metadata() or ()
        )
        if isinstance(who, str):
            log.warning("refused %s from %s: %s", method, context.peer(), who)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, who)
            raise AssertionError("unreachable")
        privilege = METHOD_PRIVILEGES.get(method, "admin")
        if not who.may(privilege):
            log.warning("refused %s to principal %s", method, who.name)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"principal {who.name!r} lacks the {privilege!r} privilege that "
                f"{method.rpartition('/')[2]} needs",
            )
        if who.tool_calls_per_minute:
            _tool_charge.set(
                functools.partial(
                    self._limits.take, who.name, "tool calls", who.tool_calls_per_minute
                )
            )
        kind, per_minute = "", 0
        if method in TURN_METHODS:
            kind, per_minute = "turns", who.turns_per_minute
        elif method in TOOL_CALL_METHODS:
            kind, per_minute = "tool calls", who.tool_calls_per_minute
        if per_minute and (wait := self._limits.take(who.name, kind, per_minute)):
            await context.abort_with_status(
                retry_status(
                    f"principal {who.name!r} may make {per_minute} {kind} per minute; "
                    f"retry in {wait:.1f} s",
                    wait,
                )
            )
        return who

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        admit = self._admit
        # grpc.aio handlers are coroutine functions; the stubs type them as sync.
        h: Any = handler
        if h.unary_unary is not None or h.stream_unary is not None:
            inner = h.unary_unary or h.stream_unary

            async def unary(request: Any, context: Any) -> Any:
                _current.set(await admit(method, context))
                return await inner(request, context)

            make = (
                grpc.unary_unary_rpc_method_handler
                if h.unary_unary is not None
                else grpc.stream_unary_rpc_method_handler
            )
            return make(
                unary,
                request_deserializer=h.request_deserializer,
                response_serializer=h.response_serializer,
            )
        inner_stream = h.unary_stream or h.stream_stream

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            _current.set(await admit(method, context))
            result = inner_stream(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:  # a servicer that writes with context.write
                await result

        make_stream = (
            grpc.unary_stream_rpc_method_handler
            if h.unary_stream is not None
            else grpc.stream_stream_rpc_method_handler
        )
        return make_stream(
            streaming,
            request_deserializer=h.request_deserializer,
            response_serializer=h.response_serializer,
        )


def gate(principals_file: str, *, shared_token: str, mtls: bool) -> AuthGate | None:
    """The AuthGate a service runs, or None to keep its loopback gate.

    Read once at start-up (ConfigError for an unusable file).
    """
    if principals_file:
        principals = Principals.load(principals_file, shared_token=shared_token)
    elif mtls:
        principals = Principals.from_entries([], shared_token=shared_token)
        principals.any_certificate = True
    else:
        return None
    return AuthGate(principals)
