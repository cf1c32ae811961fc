"""``toolcall mcp serve``: the registry's tools as an MCP server, over stdio or HTTP.

Built on the MCP SDK's low-level ``Server`` (the protocol, both eras: the
``initialize`` handshake of 2024-11 to 2025-11 and the per-request envelope
of 2026-07-28); this module only maps toolcall onto it:

- ``tools/list`` reads the tools of a role from a Watch-fed ``RegistryView``
  (no registry round trip per request), cached as wire dicts until the
  registry changes.
- ``tools/call`` calls the plugin through the same ``Dispatcher`` as chats
  (one hop: validation, the tool's timeout as deadline, the output cap).
  Failures of the tool, including bad arguments and an unknown tool, are
  results with ``isError`` (the SDK's own server answers an unknown tool the
  same way), never protocol errors. A host's ``notifications/cancelled``
  cancels the handler, which cancels the gRPC call to the plugin.
- ASYNC tools answer at once with their acknowledgement and a task id; the
  built-in ``toolcall_get_task`` tool returns (and can wait for) the result
  (``gateway.mcp_tasks``).
- Registry changes become one ``notifications/tools/list_changed`` per
  coalescing window: on handshake-era sessions directly, on 2026-era ones
  through ``subscriptions/listen`` streams (the SDK's ``ListenHandler``).

Over HTTP the role is the ``role`` query parameter (``/mcp?role=support``),
else ``--role``; over stdio it is ``--role``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import grpc
import mcp_types as types
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.connection import Connection
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.mcp_tasks import DEFAULT_MAX_RUNNING, JobLimits, Jobs, TasksFull
from toolcall import config, installed_version
from toolcall.channels import open_channel
from toolcall.clients import auth_metadata
from toolcall.dispatch import Dispatcher, DispatchLimits
from toolcall.ids import new_call_id
from toolcall.jsonvalue import from_value
from toolcall.registry_view import RegistryView
from toolcall.telemetry import Telemetry
from toolcall.tls import ClientTLS, TLSSettings
from toolcall.tools import ToolSpec
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

log = logging.getLogger(__name__)

GET_TASK_TOOL = "toolcall_get_task"
# Longest a toolcall_get_task call waits for a running task.
MAX_TASK_WAIT_S = 60.0
# tools/list page size: a host that follows nextCursor gets every tool of a
# 25,000-tool registry without one huge response.
LIST_PAGE_SIZE = 1000
# Registry changes within this window become one list_changed notification.
NOTIFY_WINDOW_S = 0.05
# Open subscriptions/listen streams and handshake-era sessions told of changes.
MAX_LISTENERS = 1024
NOTIFY_TIMEOUT_S = 2.0
# The one question a bridge without a token asks the registry (see _refusal).
TOKEN_PROBE_TIMEOUT_S = 5.0
NO_TOKEN_ERROR = (
    "UNAUTHENTICATED: the registry requires a token for tool calls and this bridge was "
    "started without it: set TOOLCALL_TOKEN_FILE (or TOOLCALL_TOKEN) to the registry's "
    "token (over HTTP, /mcp callers then send 'Authorization: Bearer <token>')"
)
NO_ANSWER_ERROR = (
    "UNAVAILABLE: the registry cannot be asked whether tool calls need its token "
    "(this bridge has none); try again once it is reachable"
)

INSTRUCTIONS = (
    "Tools of a toolcall registry. Tools come and go as plugins register and stop; "
    "the list changes are announced. A tool that answers with a task_id runs in the "
    f"background: call {GET_TASK_TOOL} with that task_id for its result."
)


@dataclass(frozen=True, slots=True)
class McpSettings:
    registry_address: str = field(default_factory=config.registry_address)
    role: str = config.DEFAULT_ROLE
    dispatch: DispatchLimits = field(default_factory=DispatchLimits)
    jobs: JobLimits = field(default_factory=JobLimits)
    # How the registry watch authenticates (docs/security.md): TLS/mTLS and a token.
    tls: TLSSettings = field(default_factory=TLSSettings)
    token: str = ""

    @classmethod
    def from_env(cls) -> McpSettings:
        return cls(
            tls=TLSSettings.from_env(),
            token=config.token(),
            registry_address=config.registry_address(),
            role=config.env("MCP_ROLE", config.DEFAULT_ROLE),
            dispatch=DispatchLimits.from_env(),
            jobs=JobLimits(
                max_running=config.env_int("MCP_MAX_RUNNING_TASKS", DEFAULT_MAX_RUNNING)
            ),
        )


class _Server(Server[Any]):
    """The SDK's server, announcing ``tools.listChanged`` on every transport.

    The HTTP session manager builds its initialization options without
    notification options, which would tell handshake-era hosts that the list
    never changes.
    """

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class McpBridge:
    """The MCP server of one gateway process: a registry view, a dispatcher, a task table."""

    def __init__(
        self, settings: McpSettings, *, version: str = "", telemetry: Telemetry = Telemetry.OFF
    ) -> None:
        self.settings = settings
        remote = bool(settings.dispatch.remote_plugins)
        self.dispatcher: Dispatcher = settings.dispatch.dispatcher(
            ClientTLS.of(settings.tls) if remote else None, telemetry=telemetry, path="mcp"
        )
        self.view = RegistryView(
            settings.registry_address,
            on_change=self._tools_changed,
            tls=ClientTLS.of(settings.tls),
            metadata=auth_metadata(settings.token),
            remote=self.dispatcher.remote,
        )
        self.jobs = Jobs(settings.jobs)
        self._bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self._bus, max_subscriptions=MAX_LISTENERS)
        # Handshake-era connections that listed tools: told of changes directly,
        # forgotten when they close (their exit stack) or past MAX_LISTENERS.
        self._connections: dict[int, Connection] = {}
        self._pages: dict[tuple[str, int], dict[str, Any]] = {}
        self._notify: asyncio.TimerHandle | None = None
        self._notifying: set[asyncio.Task[None]] = set()
        # Registry instance id -> the probe's answer: asked again after a restart.
        self._token_probe: tuple[str | None, asyncio.Future[str]] | None = None
        self.server = _Server(
            "toolcall",
            version=version,
            instructions=INSTRUCTIONS,
            # The handlers return wire dicts, which the SDK's runner accepts and
            # validates like models: no pydantic model is built per call.
            on_list_tools=cast(Any, self._list_tools),
            on_call_tool=cast(Any, self._call_tool),
            on_subscriptions_listen=self._listen,
            get_tool_input_schema=self._input_schema,
        )

    async def start(self) -> None:
        self.view.start()

    async def close(self) -> None:
        if self._notify is not None:
            self._notify.cancel()
        self._listen.close()
        await self.jobs.close()
        await self.view.close()
        await self.dispatcher.close()

    # -- roles ------------------------------------------------------------

    def role_of(self, ctx: ServerRequestContext[Any, Any]) -> str:
        request = ctx.request
        query = getattr(request, "query_params", None)
        role = query.get("role") if query is not None else None
        role = role or self.settings.role
        roles = self.view.roles
        if roles is not None and role not in roles:
            known = ", ".join(sorted(roles)[:20])
            raise MCPError(types.INVALID_PARAMS, f"unknown role {role[:100]!r}; roles: {known}")
        return role

    # -- tools/list -------------------------------------------------------

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> dict[str, Any]:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self._remember(ctx)
        if not self.view.synced:
            await self.view.wait_synced(timeout=5.0)
        role = self.role_of(ctx)
        offset = 0
        if params is not None and params.cursor:
            try:
                offset = int(params.cursor)
            except ValueError:
                raise MCPError(types.INVALID_PARAMS, "invalid cursor") from None
            if offset < 0:
                raise MCPError(types.INVALID_PARAMS, "invalid cursor")
        page = self._pages.get((role, offset))
        if page is None:
            page = self._page(role, offset)
            if len(self._pages) < 64:  # bounded; emptied on every change
                self._pages[(role, offset)] = page
        return page

    def _page(self, role: str, offset: int) -> dict[str, Any]:
        specs = self.view.tools_for(role)
        tools = [tool_wire(spec) for spec in specs[offset : offset + LIST_PAGE_SIZE]]
        if (
            offset == 0
            and any(s.is_async for s in specs)
            and self.view.get(role, GET_TASK_TOOL) is None
        ):
            tools.append(GET_TASK_WIRE)
        # ttlMs 0: tools come and go with plugins, so a host may not reuse a list.
        page: dict[str, Any] = {
            "tools": tools,
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "private",
        }
        if offset + LIST_PAGE_SIZE < len(specs):
            page["nextCursor"] = str(offset + LIST_PAGE_SIZE)
        return page

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        """For the SDK's ``Mcp-Param-*`` header check. Without it, the SDK runs a
        whole tools/list per 2026-era tools/call to find the schema (a fifth
        of the gateway's CPU per call). Not role-aware: any role's definition
        of the tool (the header check only reads header declarations)."""
        spec = self.view.get(self.settings.role, name)
        if spec is None:
            for role in self.view.roles or ():
                if spec := self.view.get(role, name):
                    break
        return spec.parameters if spec is not None else None

    # -- tools/call -------------------------------------------------------

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> dict[str, Any]:
        if not self.view.synced:
            await self.view.wait_synced(timeout=5.0)
        if refusal := await self._refusal():
            return error_wire(refusal)
        role = self.role_of(ctx)
        name = params.name
        spec = self.view.get(role, name)
        if spec is None:
            if name == GET_TASK_TOOL:
                return await self._get_task(params.arguments or {})
            return error_wire(f"NOT_FOUND: unknown tool {name[:200]!r} for role {role!r}")
        arguments = params.arguments if params.arguments is not None else {}
        session_id = session_of(ctx)
        if spec.is_async:
            checked, refused = spec.check_arguments(arguments=arguments)
            if refused:
                return error_wire(refused)
            call = self.dispatcher.invoke(
                spec, arguments=checked, session_id=session_id, role=role, checked=True
            )
            try:
                job = self.jobs.start(name, call)
            except TasksFull as exc:
                return error_wire(str(exc))
            ack = {
                "status": "accepted",
                "task_id": job.task_id,
                "message": spec.ack_message or f"{name} is running in the background",
                "how_to_get_the_result": f"call {GET_TASK_TOOL} with this task_id",
            }
            return {"content": [text_block(ack)], "structuredContent": ack, **COMPLETE}
        result = await self.dispatcher.invoke(
            spec, arguments=arguments, call_id=new_call_id(), session_id=session_id, role=role
        )
        return result_wire(result)

    async def _refusal(self) -> str:
        """Why this bridge may not call tools now; "" when it may.

        Calls go straight to plugins, past the registry's Invoke and its token
        rule, so ``/mcp`` requires the token only when the bridge is given it.
        A bridge without one in front of a registry that has one would run
        tools for callers the registry refuses: it asks the registry once (per
        registry instance) with a token-less Invoke, and refuses calls if that
        is refused, or while the registry cannot answer.
        """
        if self.settings.token:
            return ""
        instance = self.view.instance_id
        if self._token_probe is None or self._token_probe[0] != instance:
            self._token_probe = (instance, asyncio.ensure_future(self._probe_token()))
        probe = self._token_probe[1]
        refused = await asyncio.shield(probe)
        if refused == NO_ANSWER_ERROR:  # not an answer: ask again next time
            if self._token_probe is not None and self._token_probe[1] is probe:
                self._token_probe = None
        return refused

    async def _probe_token(self) -> str:
        request = registry_pb2.InvokeRequest()  # no name: refused before anything runs
        try:
            async with open_channel(
                self.settings.registry_address, tls=ClientTLS.of(self.settings.tls)
            ) as channel:
                stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(
                    channel
                )
                await stub.Invoke(request, timeout=TOKEN_PROBE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                log.error("%s (the registry answered %s)", NO_TOKEN_ERROR, exc.code().name)
                return NO_TOKEN_ERROR
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return NO_ANSWER_ERROR
        return ""

    async def _get_task(self, arguments: dict[str, Any]) -> dict[str, Any]:
        task_id = arguments.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            return error_wire("INVALID_ARGUMENT: task_id (a string) is required")
        wait = arguments.get("wait_seconds", 0)
        try:  # an int of 400 digits does not fit a float
            seconds = float(wait) if not isinstance(wait, bool) else -1.0
        except (TypeError, ValueError, OverflowError):
            seconds = -1.0
        if not isinstance(wait, int | float) or not 0 <= seconds < math.inf:
            return error_wire("INVALID_ARGUMENT: wait_seconds must be a number of seconds >= 0")
        job = self.jobs.get(task_id)
        if job is None:
            return error_wire(
                f"NOT_FOUND: no task {task_id[:100]!r} in this gateway (unknown, or its "
                "result expired)"
            )
        if job.result is None and seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.done.wait(), min(seconds, MAX_TASK_WAIT_S))
        if job.result is None:
            state = {"task_id": task_id, "tool": job.tool, "status": "running"}
            return {"content": [text_block(state)], "structuredContent": state, **COMPLETE}
        return result_wire(job.result, extra={"task_id": task_id, "tool": job.tool})

    # -- list_changed -----------------------------------------------------

    def _remember(self, ctx: ServerRequestContext[Any, Any]) -> None:
        # ctx.session is a per-request proxy; the connection outlives it. The
        # SDK hands handlers no public path to it (its Context has one, but the
        # runner does not build that yet).
        connection = getattr(ctx.session, "_connection", None)
        if not isinstance(connection, Connection) or id(connection) in self._connections:
            return
        if len(self._connections) >= MAX_LISTENERS:
            self._connections.pop(next(iter(self._connections)))
        key = id(connection)
        self._connections[key] = connection
        connection.exit_stack.callback(self._connections.pop, key, None)

    def _tools_changed(self, gone: Any, added: Any) -> None:
        self._pages.clear()
        if self._notify is None:
            loop = asyncio.get_running_loop()
            self._notify = loop.call_later(NOTIFY_WINDOW_S, self._start_notify)

    def _start_notify(self) -> None:
        self._notify = None
        task = asyncio.ensure_future(self._announce())
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _announce(self) -> None:
        await self._bus.publish(ToolsListChanged())
        for key, connection in list(self._connections.items()):
            try:
                with anyio.fail_after(NOTIFY_TIMEOUT_S):
                    await connection.send_tool_list_changed()
            except Exception as exc:  # a host that went away or stopped reading
                log.debug("list_changed not delivered: %s", type(exc).__name__)
                self._connections.pop(key, None)


def session_of(ctx: ServerRequestContext[Any, Any]) -> str:
    headers = getattr(ctx.request, "headers", None)
    sid = headers.get("mcp-session-id") if headers is not None else None
    return f"mcp:{sid[:64]}" if sid else "mcp"


# -- wire shapes ----------------------------------------------------------------

# Required on the 2026-07-28 wire; the SDK drops it for handshake-era hosts.
COMPLETE: dict[str, Any] = {"isError": False, "resultType": "complete"}


def text_block(value: Any) -> dict[str, Any]:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return {"type": "text", "text": text}


def error_wire(error: str, output: Any = None, parts: Any = ()) -> dict[str, Any]:
    content = [{"type": "text", "text": error}]
    if output is not None:
        content.append(text_block(output))
    content.extend(part_block(p) for p in parts)
    return {"content": content, "isError": True, "resultType": "complete"}


def result_wire(
    result: tools_pb2.ToolResult, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ToolResult as a CallToolResult: the output as JSON text (and as
    structuredContent when it is an object), then its content parts."""
    output = from_value(result.output) if result.HasField("output") else None
    if result.is_error:
        return error_wire(result.error, output, result.parts)
    if extra is not None:
        output = {**extra, "output": output}
    content = [text_block(output)]
    content.extend(part_block(p) for p in result.parts)
    wire: dict[str, Any] = {"content": content, **COMPLETE}
    if isinstance(output, dict):
        wire["structuredContent"] = output
    return wire


def part_block(part: tools_pb2.ContentPart) -> dict[str, Any]:
    """A content part as an MCP content block (bytes base64-encoded, as MCP carries them)."""
    kind = part.WhichOneof("kind")
    if kind == "image":
        return {"type": "image", "data": _b64(part.image.data), "mimeType": part.image.mime_type}
    if kind == "audio":
        return {"type": "audio", "data": _b64(part.audio.data), "mimeType": part.audio.mime_type}
    if kind == "resource":
        r = part.resource
        mime = r.mime_type or "application/octet-stream"
        if r.data:
            embedded = {"uri": r.uri or f"toolcall:part/{r.name or 'file'}", "mimeType": mime}
            return {"type": "resource", "resource": {**embedded, "blob": _b64(r.data)}}
        return {"type": "resource_link", "uri": r.uri, "name": r.name or r.uri, "mimeType": mime}
    return {"type": "text", "text": part.text}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tool_wire(spec: ToolSpec) -> dict[str, Any]:
    """A registered tool as MCP's Tool: schema as registered, title and hints as declared."""
    d = spec.definition
    wire: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "inputSchema": spec.parameters or {"type": "object", "properties": {}},
    }
    if spec.title:
        wire["title"] = spec.title
    if d.HasField("annotations"):
        a = d.annotations
        given = {
            "readOnlyHint": a.read_only if a.HasField("read_only") else None,
            "destructiveHint": a.destructive if a.HasField("destructive") else None,
            "idempotentHint": a.idempotent if a.HasField("idempotent") else None,
            "openWorldHint": a.open_world if a.HasField("open_world") else None,
        }
        if hints := {k: v for k, v in given.items() if v is not None}:
            wire["annotations"] = hints
    if spec.output_schema:
        wire["outputSchema"] = spec.output_schema
    if d.metadata:
        wire["_meta"] = {METADATA_KEY: dict(d.metadata)}
    return wire


# Where a tool's metadata map travels in MCP (``_meta`` keys carry a prefix).
METADATA_KEY = "toolcall/metadata"


GET_TASK_WIRE: dict[str, Any] = {
    "name": GET_TASK_TOOL,
    "title": "Get the result of a background tool call",
    "description": (
        "Returns the status and, once finished, the result of a tool call that answered "
        "with a task_id. wait_seconds (at most 60) waits for a running task to finish."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "task_id": {"type": "string", "description": "task_id from the tool's answer"},
            "wait_seconds": {"type": "number", "minimum": 0, "maximum": MAX_TASK_WAIT_S},
        },
        "required": ["task_id"],
    },
    "annotations": {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False},
}


# -- the command ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = McpSettings.from_env()
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio for hosts that start the server (default), or http: streamable HTTP "
        "at /mcp of the HTTP gateway (same as `toolcall gateway`)",
    )
    parser.add_argument(
        "--role",
        default=d.role,
        help="role whose tools are served (over HTTP: unless the URL says ?role=...) "
        "(default: $TOOLCALL_MCP_ROLE or %(default)s)",
    )
    parser.add_argument(
        "--registry",
        default=d.registry_address,
        help="registry address (default: $TOOLCALL_REGISTRY_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="HTTP listen address with --transport http (default: $TOOLCALL_GATEWAY_ADDRESS "
        f"or {config.DEFAULT_GATEWAY_ADDRESS})",
    )


def settings_from_args(args: argparse.Namespace) -> McpSettings:
    # Everything else (TLS, token, limits) as the environment says.
    return dataclasses.replace(
        McpSettings.from_env(), registry_address=args.registry, role=args.role
    )


async def main(args: argparse.Namespace) -> int:
    if args.transport == "http":
        from gateway import main as gateway_main

        return await gateway_main.serve_from_args(args)
    return await serve_stdio(settings_from_args(args))


async def serve_stdio(settings: McpSettings) -> int:
    from mcp.server.stdio import stdio_server

    bridge = McpBridge(settings, version=installed_version())
    await bridge.start()
    log.info("serving role %r of %s over stdio", settings.role, settings.registry_address)
    try:
        async with stdio_server() as (read, write):
            await bridge.server.run(read, write, bridge.server.create_initialization_options())
    finally:
        await bridge.close()
    return 0
