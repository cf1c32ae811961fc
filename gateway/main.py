"""``toolcall gateway``: the HTTP edge, on 127.0.0.1:48913 by default.

Routes: ``/mcp`` (the registry's tools over MCP's streamable HTTP transport,
``gateway.mcp_serve``), ``/api/tools/...`` (the HTTP/JSON registry API that
HTTP plugins speak, ``gateway.http_api``), ``/v1/...`` (every ToolRegistry
and LLMService RPC as JSON, ``gateway.http_v1``), ``/healthz`` and
``/metrics`` (Prometheus text, docs/observability.md).

Starlette and uvicorn: the ASGI stack the MCP SDK's HTTP transport is
written for (its session manager is a Starlette app), so one server carries
MCP and the gateway's own routes; no HTTP is parsed by hand.

Who may call: the same two gates as the registry's ``Invoke``, since a tool
call runs plugin code. The peer must be on the loopback interface, and when a
shared token is configured (``TOOLCALL_TOKEN`` / ``TOOLCALL_TOKEN_FILE``)
``/mcp`` needs ``Authorization: Bearer <token>``. Against DNS rebinding
(a web page whose host name resolves to 127.0.0.1), the Host header must name
a loopback host and an Origin, when a browser sends one, must be a loopback
origin (the MCP SDK's check, applied to every route).

The web console is ``/``, with its API and WebSocket under ``/console/``
(``gateway.console``, which adds same-origin, JSON-only and token rules of
its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import anyio
import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console import Console, ConsoleSettings
from gateway.http_api import HttpApi
from gateway.http_v1 import Backends, InvokeLane, Transcoder
from gateway.mcp_serve import McpBridge, McpSettings
from toolcall import config, installed_version
from toolcall.address_policy import is_loopback_ip
from toolcall.telemetry import REGISTRY, Telemetry, TelemetrySettings

log = logging.getLogger(__name__)

# Open MCP sessions (each holds a server task and its streams) and how long an
# unused one lives; the SDK's defaults are 10,000 sessions and 30 minutes.
DEFAULT_MAX_MCP_SESSIONS = 256
DEFAULT_MCP_SESSION_IDLE_S = 600.0
# Largest request body (the SDK's default): a tools/call's arguments.
MAX_BODY_BYTES = 4 * 1024 * 1024

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    address: str = field(default_factory=config.gateway_address)
    token: str = ""
    # The LLMService, for /v1's LLMService RPCs (and the console).
    llm_address: str = field(default_factory=config.llm_address)
    mcp: McpSettings = field(default_factory=McpSettings)
    max_mcp_sessions: int = DEFAULT_MAX_MCP_SESSIONS
    mcp_session_idle_s: float = DEFAULT_MCP_SESSION_IDLE_S

    @classmethod
    def from_env(cls) -> GatewaySettings:
        return cls(
            address=config.gateway_address(),
            token=config.token(),
            llm_address=config.llm_address(),
            mcp=McpSettings.from_env(),
            max_mcp_sessions=config.env_int("MCP_MAX_SESSIONS", DEFAULT_MAX_MCP_SESSIONS),
            mcp_session_idle_s=config.env_float("MCP_SESSION_IDLE", DEFAULT_MCP_SESSION_IDLE_S),
        )

    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.address.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise SystemExit(f"gateway address {self.address!r} is not host:port")
        host = host.strip("[]")
        if not (is_loopback_ip(host) or host == "localhost"):
            raise SystemExit(
                f"gateway address {self.address!r}: the gateway serves loopback only "
                "(127.0.0.1, ::1 or localhost); TLS and authentication for other addresses "
                "come with the security work"
            )
        return host, int(port)


class LocalOnly:
    """ASGI middleware: loopback peers, loopback Host/Origin, and the token on ``/mcp``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode() if token else b""
        self._hosts = TransportSecurityMiddleware(
            TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=LOOPBACK_HOSTS,
                allowed_origins=LOOPBACK_ORIGINS,
            )
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Scope) -> Response | None:
        client = scope.get("client")
        if client is None or not is_loopback_ip(str(client[0])):
            peer = str(client[0])[:60] if client else "unknown"
            return PlainTextResponse(
                f"the gateway only answers loopback peers, not {peer}", status_code=403
            )
        # HTTPConnection, not Request: a WebSocket scope is checked the same way
        # (the check reads headers only; Request refuses WebSocket scopes).
        request = cast(Request, HTTPConnection(scope))
        if refusal := await self._hosts.validate_request(request, is_post=False):
            return refusal
        if self._expected and scope["path"].startswith("/mcp"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._expected):
                return PlainTextResponse(
                    "this gateway requires 'Authorization: Bearer <token>' (the toolcall token)",
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return None


_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.lower().encode("ascii")


class McpLane:
    """ASGI middleware: ``/mcp`` straight to the MCP SDK's session managers.

    Not through Starlette's router and middleware, which add nothing there
    (the SDK answers every method and error itself). A 2026-era request (the
    ``MCP-Protocol-Version`` header, as the SDK routes) goes to a manager that
    answers with JSON (``json_response``), the rest to the SSE one that keeps
    handshake-era sessions. Per 2026-era call the SDK's SSE mode runs two more
    tasks with a memory stream and timers; with the router, ~18 % of the
    gateway's CPU per call (docs/mcp.md, "Speed"). What SSE gave such a call
    besides: progress or log notifications during
    the call (the bridge sends none: long jobs are async tools and
    ``toolcall_get_task``), keep-alive pings for a call silent past 15 s (no
    proxy sits between a host and this loopback-only gateway; the SDK
    client's read timeout, 300 s, is the longest tool timeout), and the
    cancellation of a call whose host closes the connection (a 2026-era
    host's only way to cancel), which ``_cancelled_on_disconnect`` keeps.
    Handshake-era sessions stay on SSE: the SDK client, cancelling a call on
    a JSON-answering session, fails on close when the refused call's late
    answer arrives.
    """

    def __init__(
        self,
        app: ASGIApp,
        sessions: StreamableHTTPSessionManager,
        modern: StreamableHTTPSessionManager,
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.modern = modern

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/mcp":
            await self.app(scope, receive, send)
        elif not _modern(scope):
            await self.sessions.handle_request(scope, receive, send)
        elif scope["method"] == "POST":
            await _cancelled_on_disconnect(self.modern.handle_request, scope, receive, send)
        else:
            await self.modern.handle_request(scope, receive, send)


def _modern(scope: Scope) -> bool:
    """A 2026-era request: served in its own task, no session."""
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER:
            return value.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS
    return False


async def _cancelled_on_disconnect(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """Runs ``app`` for one request, cancelled if the client goes away before the answer.

    Once the body has been read, one task waits for uvicorn's
    ``http.disconnect`` and cancels the request's scope (an anyio scope, so the
    SDK's shielded clean-up still runs); the tool call's gRPC call to the
    plugin is cancelled with it. A disconnect after the answer is a closed
    keep-alive connection and changes nothing.
    """
    answered = False
    watcher: asyncio.Task[None] | None = None

    with anyio.CancelScope() as request_scope:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not answered:
                request_scope.cancel()

        async def body() -> Message:
            nonlocal watcher
            message = await receive()
            if watcher is None and not message.get("more_body", False):
                watcher = asyncio.ensure_future(watch())
            return message

        async def answer(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        try:
            await app(scope, body, answer)
        finally:
            if watcher is not None:
                watcher.cancel()


def build_app(settings: GatewaySettings, bridge: McpBridge) -> Starlette:
    """The gateway's ASGI app; its lifespan starts and stops the MCP bridge."""
    console = Console(
        ConsoleSettings(
            llm_address=settings.llm_address,
            registry_address=settings.mcp.registry_address,
            token=settings.token,
            default_role=settings.mcp.role,
            version=installed_version(),
        ),
        bridge.view,
    )

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=LOOPBACK_HOSTS,
        allowed_origins=LOOPBACK_ORIGINS,
    )
    sessions = StreamableHTTPSessionManager(
        app=bridge.server,
        security_settings=security,
        max_request_body_size=MAX_BODY_BYTES,
        session_idle_timeout=settings.mcp_session_idle_s,
        max_sessions=settings.max_mcp_sessions,
    )
    # 2026-era requests (McpLane): one JSON answer each, no session.
    modern = StreamableHTTPSessionManager(
        app=bridge.server,
        security_settings=security,
        max_request_body_size=MAX_BODY_BYTES,
        json_response=True,
    )

    async def health(request: Request) -> Response:
        synced = bridge.view.synced
        return JSONResponse(
            {
                "status": "ok" if synced else "starting",
                "registry": settings.mcp.registry_address,
                "registry_synced": synced,
                "mcp_async_tasks_running": bridge.jobs.running,
            },
            status_code=200 if synced else 503,
        )

    backends = Backends(settings.mcp.registry_address, settings.llm_address)
    transcoder = Transcoder(backends)

    async def metrics(request: Request) -> Response:
        # Prometheus text format (docs/observability.md); behind LocalOnly like the rest.
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bridge.start()
        await console.start()
        try:
            async with sessions.run(), modern.run():
                yield
        finally:
            await console.close()
            await bridge.close()
            await backends.close()

    app = Starlette(
        routes=[
            *console.routes(),
            Route("/mcp", endpoint=StreamableHTTPASGIApp(sessions)),
            Route("/healthz", endpoint=health),
            *HttpApi(backends).routes(),
            *transcoder.routes(),
            Route("/metrics", endpoint=metrics),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(InvokeLane, transcoder=transcoder)  # inside LocalOnly: after its gates
    app.add_middleware(McpLane, sessions=sessions, modern=modern)
    app.add_middleware(LocalOnly, token=settings.token)
    return app


async def serve(settings: GatewaySettings) -> int:
    host, port = settings.host_port()
    # Metrics always (served at /metrics); traces when an OTLP endpoint is set.
    traces = TelemetrySettings.from_env("gateway").build()
    telemetry = Telemetry(tracer_provider=traces.tracer_provider, metrics=True, owned=True)
    bridge = McpBridge(settings.mcp, version=installed_version(), telemetry=telemetry)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(settings, bridge),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            # WebSocket frames from a page (the console's are small JSON messages).
            ws_max_size=1024 * 1024,
            # Bounded like the gRPC services: connections and a slow client's
            # time to send its request headers.
            limit_concurrency=1024,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=5,
            server_header=False,
            access_log=False,
            # No X-Forwarded-For rewriting of the peer: LocalOnly judges the real one.
            proxy_headers=False,
        )
    )
    log.info(
        "gateway on http://%s:%d (MCP at /mcp, role %r; registry %s)",
        host,
        port,
        settings.mcp.role,
        settings.mcp.registry_address,
    )
    await server.serve()
    telemetry.stopped()
    return 0 if server.started else 1


# -- the command ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = GatewaySettings.from_env()
    parser.add_argument(
        "--address",
        default=d.address,
        help="listen address host:port, loopback only (default: $TOOLCALL_GATEWAY_ADDRESS "
        "or %(default)s)",
    )
    parser.add_argument(
        "--registry",
        default=d.mcp.registry_address,
        help="registry address (default: $TOOLCALL_REGISTRY_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--llm",
        default=d.llm_address,
        help="LLMService address, for /v1 (default: $TOOLCALL_LLM_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--role",
        default=d.mcp.role,
        help="role served at /mcp unless the URL says ?role=... (default: $TOOLCALL_MCP_ROLE "
        "or %(default)s)",
    )


async def serve_from_args(args: argparse.Namespace) -> int:
    d = GatewaySettings.from_env()
    # Everything else (TLS, token, limits) as the environment says.
    mcp = dataclasses.replace(d.mcp, registry_address=args.registry, role=args.role)
    address = getattr(args, "address", None) or d.address
    settings = GatewaySettings(
        address=address,
        token=d.token,
        llm_address=getattr(args, "llm", None) or d.llm_address,
        mcp=mcp,
        max_mcp_sessions=d.max_mcp_sessions,
        mcp_session_idle_s=d.mcp_session_idle_s,
    )
    return await serve(settings)


async def main(args: argparse.Namespace) -> int:
    return await serve_from_args(args)
