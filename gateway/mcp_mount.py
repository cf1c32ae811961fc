"""``toolcall mcp mount``: an MCP server's tools registered as a toolcall plugin.

    toolcall mcp mount --name notes -- python my_server.py       # stdio
    toolcall mcp mount --name docs --url http://127.0.0.1:8000/mcp
    toolcall mcp mount --config mcp.json        # {"mcpServers": {name: {...}}}

Each server is one ``plugin_stub.Plugin`` (its own ToolCallback server and
lease) whose source is ``mcp:<name>``; its tools are the server's, listed
with the MCP SDK's ``ClientSession`` and registered with the SDK's
``register_llm_tool``, so leases, keep-alive and re-registration are the
plugin SDK's. A toolcall call becomes one MCP ``tools/call``; the plugin SDK
bounds it by the tool's timeout and the caller's deadline, and cancelling it
(deadline, or the caller cancels) makes the MCP SDK send
``notifications/cancelled``.

Tools follow the server: re-listed on ``notifications/tools/list_changed``;
withdrawn while the server is down (crashed, exited, no answer to
``initialize`` within ``--init-timeout``, an HTTP server that stops answering
pings) and registered again when it is back; a stdio server is restarted
with backoff (0.5 s doubling to 30 s; reset after a minute up). SIGTERM or
Ctrl-C stops the servers and clears their tools. Other servers of the same
mount are not affected by one that misbehaves.

Refused, each with one log line: a tool whose name (after ``--prefix``) or
input schema breaks the registry's rules, a second tool of the same name, a
name another source already registers (never silently replaced: pick a
``--prefix``), tools past ``MAX_TOOLS_PER_SERVER``. Messages from a stdio
server are bounded by ``--max-message-bytes`` (gateway/mcp_stdio.py), and so
are an HTTP server's JSON answers (gateway/mcp_http.py) and SSE events.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import grpc
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from gateway.mcp_http import bounded_client
from gateway.mcp_stdio import bounded_stdio
from plugin_stub import Audio, File, Image, Plugin
from plugin_stub.parts import Part
from toolcall import config
from toolcall.channels import Backoff, open_channel
from toolcall.clients import auth_metadata
from toolcall.parts import IMAGE_SIGNATURES
from toolcall.tls import ClientTLS
from toolcall.tools import MAX_DESCRIPTION_CHARS, NAME_PATTERN, name_error
from toolcall.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_INIT_TIMEOUT_S = 10.0
# A JSON-RPC message from a stdio server: the largest tool output a caller
# can get (config.MAX_TOOL_OUTPUT_BYTES) plus room for JSON escaping.
DEFAULT_MAX_MESSAGE_BYTES = 4 * config.MAX_TOOL_OUTPUT_BYTES
MAX_TOOLS_PER_SERVER = 1000
MAX_CONFIG_BYTES = 1024 * 1024
RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0
# A server up this long is healthy again: its next crash restarts at once.
HEALTHY_AFTER_S = 60.0
HTTP_PING_INTERVAL_S = 5.0
# The registry's tool list, read to refuse a name another source holds.
MAX_LISTED_TOOLS = 100_000


class MountError(ValueError):
    """A mount's configuration is unusable; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One MCP server to mount: a command (stdio) or a URL (streamable HTTP)."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""

    @property
    def source(self) -> str:
        return f"mcp:{self.name}"

    def describe(self) -> str:
        return self.url or " ".join([self.command, *self.args])


@dataclass(frozen=True, slots=True)
class MountSettings:
    registry_address: str = config.DEFAULT_REGISTRY_ADDRESS
    token: str = ""
    prefix: str = ""
    timeout_s: float = config.DEFAULT_TOOL_TIMEOUT_S
    init_timeout_s: float = DEFAULT_INIT_TIMEOUT_S
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    lease_ttl_s: float = 6.0
    restart_initial_s: float = RESTART_INITIAL_S
    restart_max_s: float = RESTART_MAX_S


# -- sources ---------------------------------------------------------------


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise MountError(f"server name {str(name)[:80]!r} must match [A-Za-z0-9_.-]{{1,64}}")
    return name


def check_url(url: str) -> str:
    """A streamable HTTP URL on loopback (an MCP server elsewhere is not mounted)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MountError(f"url {url[:200]!r} must be http://HOST:PORT/PATH")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise MountError(f"url {url[:200]!r} is not on loopback (127.0.0.1, [::1] or localhost)")
    return url


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MountError(f"{what} must be a list of strings")
    return value


def server_from_entry(name: str, entry: Any) -> ServerSpec:
    """One ``mcpServers`` entry: ``{"command", "args", "env", "cwd"}`` or ``{"url"}``."""
    where = f"mcpServers.{str(name)[:64]}"
    check_name(name)
    if not isinstance(entry, dict):
        raise MountError(f"{where} must be an object")
    kind = entry.get("type", "")
    if kind in ("sse",):
        raise MountError(f"{where}: the SSE transport is not supported; use streamable HTTP")
    if isinstance(entry.get("url"), str):
        return ServerSpec(name=name, url=check_url(entry["url"]))
    command = entry.get("command")
    if not isinstance(command, str) or not command:
        raise MountError(f'{where} needs a "command" (stdio) or a "url" (streamable HTTP)')
    env = entry.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise MountError(f"{where}.env must map names to strings")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise MountError(f"{where}.cwd must be a string")
    return ServerSpec(
        name=name,
        command=command,
        args=tuple(_strings(entry.get("args", []), f"{where}.args")),
        env=dict(env),
        cwd=cwd,
    )


def load_config(path: str | Path) -> list[ServerSpec]:
    """The servers of an ``mcpServers`` file (as MCP hosts write it), except ``disabled`` ones."""
    p = Path(path)
    try:
        raw = config.read_limited(p, MAX_CONFIG_BYTES, "mcpServers file")
    except config.ConfigError as exc:
        raise MountError(str(exc)) from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MountError(f"{p} is not JSON: {str(exc)[:200]}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict) or not servers:
        raise MountError(f'{p} needs a non-empty "mcpServers" object')
    return [
        server_from_entry(name, entry)
        for name, entry in servers.items()
        if not (isinstance(entry, dict) and entry.get("disabled") is True)
    ]


# -- results ---------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_text(text: str) -> Any:
    """The JSON value a text holds, else the text itself."""
    stripped = text.strip()
    if not stripped or stripped[0] not in '{["-0123456789tfn':
        return text
    try:
        return json.loads(stripped, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return text


def _content_value(block: Any) -> tuple[Any, Part | None, str | None]:
    """(value to keep in the output, None, None), (None, content part, None) for
    binary content, or (None, None, what was dropped)."""
    if isinstance(block, types.TextContent):
        return decode_text(block.text), None, None
    if isinstance(block, types.EmbeddedResource):
        res = block.resource
        if isinstance(res, types.TextResourceContents):
            return {"uri": str(res.uri), "text": res.text}, None, None
        data = _b64decode(res.blob)
        if data is None:
            return None, None, f"resource {res.uri} (its blob is not base64)"
        return None, File(uri=str(res.uri), data=data, mime_type=res.mime_type or ""), None
    if isinstance(block, types.ResourceLink):
        return {"resource_link": str(block.uri), "name": block.name}, None, None
    if isinstance(block, types.ImageContent | types.AudioContent):
        data = _b64decode(block.data)
        if data is None:
            return None, None, f"{block.type} content (its data is not base64)"
        if isinstance(block, types.AudioContent):
            return None, Audio(data, block.mime_type), None
        if block.mime_type in IMAGE_SIGNATURES:
            return None, Image(data, block.mime_type), None
        # A type toolcall's images do not take (SVG...): passed on as a file.
        return None, File(uri="mcp:image", data=data, mime_type=block.mime_type), None
    mime = getattr(block, "mime_type", "")
    return None, None, f"{getattr(block, 'type', 'unknown')} content ({mime or 'unknown type'})"


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _display_options(t: types.Tool) -> dict[str, Any]:
    """The MCP tool's title, hints and output schema as ``register_llm_tool`` options."""
    options: dict[str, Any] = {}
    title = t.title or (t.annotations.title if t.annotations else None)
    if title:
        options["title"] = title[:128]
    if t.annotations is not None:
        a = t.annotations
        options.update(
            read_only=a.read_only_hint,
            destructive=a.destructive_hint,
            idempotent=a.idempotent_hint,
            open_world=a.open_world_hint,
        )
    if t.output_schema:
        options["output_schema"] = t.output_schema
    return options


def tool_result(result: types.CallToolResult) -> dict[str, Any]:
    """An MCP ``CallToolResult`` as the plugin SDK's result dict (see docs/mcp.md).

    ``structuredContent`` is the output when present; else one text block is
    the output (JSON-decoded when it is JSON), several are a list. Images,
    audio and binary resources become the result's content parts. ``isError``
    becomes ``is_error`` with the text as the error.
    """
    values: list[Any] = []
    texts: list[str] = []
    parts: list[Part] = []
    for block in result.content:
        value, part, dropped = _content_value(block)
        if part is not None:
            parts.append(part)
        elif dropped is not None:
            values.append(f"[{dropped} dropped]")
        else:
            values.append(value)
            if isinstance(block, types.TextContent):
                texts.append(block.text)
    structured = result.structured_content
    if result.is_error:
        error = "\n".join(texts) or "the MCP tool reported an error without a message"
        return {"output": structured, "is_error": True, "error": error, "parts": parts}
    if structured is not None:
        output = structured
    elif len(values) == 1:
        output = values[0]
    else:
        output = values or None
    return {"output": output, "is_error": False, "parts": parts}


def error_result(error: str) -> dict[str, Any]:
    return {"output": None, "is_error": True, "error": error}


# -- one server --------------------------------------------------------------


class _McpPlugin(Plugin):
    """A Plugin whose tools come from an MCP server: source ``mcp:<name>``."""

    def __init__(self, spec: ServerSpec, settings: MountSettings) -> None:
        super().__init__(
            plugin_id=spec.name,
            registry_address=settings.registry_address,
            token=settings.token,
            lease_ttl_s=settings.lease_ttl_s,
            source=spec.source,
        )


@dataclass(frozen=True, slots=True)
class _Mounted:
    mcp_name: str
    fingerprint: str


class ServerMount:
    """Keeps one MCP server running (stdio) or connected (HTTP), its tools registered."""

    def __init__(self, spec: ServerSpec, settings: MountSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.name = spec.name
        self.plugin = _McpPlugin(spec, settings)
        self._registry: registry_pb2_grpc.ToolRegistryAsyncStub | None = None
        self._metadata = auth_metadata(settings.token)
        self._session: ClientSession | None = None
        self._mounted: dict[str, _Mounted] = {}
        self._list_changed = asyncio.Event()
        self.up = asyncio.Event()  # set while a session is initialized
        self.starts = 0

    @property
    def tool_names(self) -> list[str]:
        return sorted(self._mounted)

    async def run(self) -> None:
        """Until cancelled: connect, mount the tools, and start again when the server ends."""
        backoff = Backoff(self.settings.restart_initial_s, self.settings.restart_max_s)
        # TLS as the plugin's registrar dials it (TOOLCALL_TLS_*; docs/security.md).
        channel = open_channel(self.settings.registry_address, tls=ClientTLS.of(self.plugin.tls))
        self._registry = registry_pb2_grpc.ToolRegistryStub(channel)
        try:
            await self.plugin.start()
            while True:
                started = time.monotonic()
                try:
                    reason = await self._session_once()
                except Exception as exc:  # a bug must not end the mount; say what happened
                    log.exception("MCP server %s: session failed", self.name)
                    reason = f"failed ({type(exc).__name__}: {str(exc)[:200]})"
                finally:
                    self._session = None
                    self.up.clear()
                    self._withdraw()
                if time.monotonic() - started > HEALTHY_AFTER_S:
                    backoff.reset()
                delay = backoff.delay()
                log.warning(
                    "MCP server %s %s; its tools are withdrawn; %s in %.1fs",
                    self.name,
                    reason,
                    "reconnecting" if self.spec.url else "restarting",
                    delay,
                )
                await anyio.sleep(delay)
        finally:
            with anyio.CancelScope(shield=True):
                await self.plugin.stop()
                await channel.close()

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[tuple[Any, Any, anyio.Event, Callable[[], str]]]:
        """(read, write, ended, why) for one connection to the server."""
        if self.spec.url:
            ended = anyio.Event()
            limit = self.settings.max_message_bytes
            async with (
                bounded_client(limit) as client,
                streamable_http_client(
                    self.spec.url, http_client=client, max_sse_event_size=limit
                ) as (read, write),
            ):
                yield read, write, ended, lambda: "stopped answering"
            return
        params = StdioServerParameters(
            command=self.spec.command,
            args=list(self.spec.args),
            env=self.spec.env or None,
            cwd=self.spec.cwd,
        )
        async with bounded_stdio(
            params, max_message_bytes=self.settings.max_message_bytes, name=self.name
        ) as conn:
            yield (
                conn.read_stream,
                conn.write_stream,
                conn.exited,
                lambda: f"exited (code {conn.returncode})",
            )

    async def _session_once(self) -> str:
        """One connection, from start to the server's end; returns why it ended."""
        self.starts += 1
        try:
            async with (
                self._connect() as (read, write, ended, why),
                ClientSession(read, write, message_handler=self._on_message) as session,
            ):
                try:
                    with anyio.fail_after(self.settings.init_timeout_s):
                        info = await session.initialize()
                except TimeoutError:
                    return f"did not answer initialize within {self.settings.init_timeout_s:g}s"
                except MCPError as exc:
                    return f"refused initialize ({exc.message[:200]})"
                log.info(
                    "MCP server %s is up: %s %s(%s)",
                    self.name,
                    info.server_info.name,
                    f"{info.server_info.version} " if info.server_info.version else "",
                    self.spec.describe()[:200],
                )
                self._session = session
                self.up.set()
                self._list_changed.set()  # the first listing
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._follow_tools, session)
                    if self.spec.url:
                        tg.start_soon(self._ping, session, ended)
                    await ended.wait()
                    tg.cancel_scope.cancel()
                reason = why
            return reason()
        except OSError as exc:
            return f"could not be started ({exc.strerror or exc})"
        except Exception as exc:
            if self.spec.url and _is_connection_error(exc):
                return f"is not reachable at {self.spec.url} ({_first_error(exc)})"
            raise

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._list_changed.set()
        elif isinstance(message, Exception):
            log.warning("MCP server %s: transport error: %s", self.name, str(message)[:200])

    async def _ping(self, session: ClientSession, ended: anyio.Event) -> None:
        """An HTTP server has no process to watch: it is down when it stops answering."""
        while True:
            await anyio.sleep(HTTP_PING_INTERVAL_S)
            try:
                with anyio.fail_after(self.settings.init_timeout_s):
                    await session.send_ping()
            except (TimeoutError, MCPError, OSError) as exc:
                log.warning("MCP server %s did not answer a ping: %s", self.name, exc or "timeout")
                ended.set()
                return

    async def _follow_tools(self, session: ClientSession) -> None:
        """Lists the tools at start and after each ``tools/list_changed`` (coalesced)."""
        while True:
            await self._list_changed.wait()
            self._list_changed.clear()
            try:
                tools = await self._list(session)
                await self._apply(tools)
            except (TimeoutError, MCPError, ValidationError) as exc:
                log.warning(
                    "MCP server %s: tools/list failed (%s); keeping its tools as they are",
                    self.name,
                    str(exc)[:200] or "timeout",
                )
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "registry at %s: %s; listing %s's tools again in 1s",
                    self.settings.registry_address,
                    exc.code().name,
                    self.name,
                )
                await anyio.sleep(1.0)
                self._list_changed.set()

    async def _list(self, session: ClientSession) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            with anyio.fail_after(self.settings.init_timeout_s):
                page = await session.list_tools(params=params)
            tools.extend(page.tools)
            if len(tools) > MAX_TOOLS_PER_SERVER:
                log.error(
                    "MCP server %s lists more than %d tools; only the first %d are mounted",
                    self.name,
                    MAX_TOOLS_PER_SERVER,
                    MAX_TOOLS_PER_SERVER,
                )
                return tools[:MAX_TOOLS_PER_SERVER]
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def _apply(self, tools: list[types.Tool]) -> None:
        """Makes the plugin's tools those of ``tools``; one log line per tool refused."""
        wanted: dict[str, types.Tool] = {}
        for t in tools:
            registered = self.settings.prefix + t.name
            if registered in wanted:
                log.warning(
                    "MCP server %s lists tool %r more than once; the first is mounted",
                    self.name,
                    t.name,
                )
                continue
            if err := name_error(registered):
                log.warning(
                    "MCP server %s: tool %r is not mounted: its name %s",
                    self.name,
                    t.name[:80],
                    err,
                )
                continue
            wanted[registered] = t
        new = [n for n in wanted if n not in self._mounted]
        for name, holder in (await self._held_elsewhere(new)).items():
            log.error(
                "MCP server %s: tool %r is not mounted: %s already registers a tool of that "
                "name (mount with --prefix to tell them apart)",
                self.name,
                name,
                holder,
            )
            del wanted[name]
        fingerprints = {n: _fingerprint(t) for n, t in wanted.items()}
        for name in list(self._mounted):
            if fingerprints.get(name) != self._mounted[name].fingerprint:
                self.plugin.unregister_llm_tool(name)
                del self._mounted[name]
        for name, t in wanted.items():
            if name in self._mounted:
                continue
            try:
                self.plugin.register_llm_tool(
                    name,
                    self._handler(t.name),
                    description=_description(t),
                    parameters=t.input_schema,
                    timeout=self.settings.timeout_s,
                    **_display_options(t),
                )
            except ValueError as exc:
                log.warning("MCP server %s: tool %r is not mounted: %s", self.name, name, exc)
                continue
            self._mounted[name] = _Mounted(t.name, fingerprints[name])
        log.info(
            "MCP server %s: %d tools mounted as source %s: %s",
            self.name,
            len(self._mounted),
            self.spec.source,
            ", ".join(sorted(self._mounted))[:500],
        )

    async def _held_elsewhere(self, names: list[str]) -> dict[str, str]:
        """Which of ``names`` another source registers (name -> source)."""
        if not names or self._registry is None:
            return {}
        wanted = set(names)
        held: dict[str, str] = {}
        page = registry_pb2.ListRequest()
        listed = 0
        while True:
            reply = await self._registry.List(page, metadata=self._metadata, timeout=5)
            for t in reply.tools:
                if t.tool.name in wanted and t.tool.source != self.spec.source:
                    held.setdefault(t.tool.name, t.tool.source or "a tool without source")
            listed += len(reply.tools)
            if not reply.next_page_token or listed > MAX_LISTED_TOOLS:
                return held
            page.page_token = reply.next_page_token

    def _withdraw(self) -> None:
        for name in list(self._mounted):
            self.plugin.unregister_llm_tool(name)
        self._mounted.clear()

    def _handler(self, mcp_name: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def call(**arguments: Any) -> dict[str, Any]:
            return await self.call(mcp_name, arguments)

        return call

    async def call(self, mcp_name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """One MCP ``tools/call``; bounded and cancelled by the plugin SDK's ToolRunner."""
        session = self._session
        if session is None:
            return error_result(f"UNAVAILABLE: MCP server {self.name} is not running")
        try:
            result = await session.call_tool(mcp_name, arguments)
        except MCPError as exc:
            message = exc.message[:2000]
            if "byte limit" in message and message.startswith("SSE stream failed"):
                # The MCP SDK's bound on one SSE event (max_sse_event_size).
                return error_result(
                    f"RESOURCE_EXHAUSTED: MCP server {self.name} answered with an event of more "
                    f"than {self.settings.max_message_bytes} bytes; the mount's limit is "
                    "--max-message-bytes"
                )
            if exc.code == types.CONNECTION_CLOSED:
                return error_result(
                    f"UNAVAILABLE: MCP server {self.name} went away during the call "
                    "(it is restarted; the call was not retried)"
                )
            if "RESOURCE_EXHAUSTED" in message:
                return error_result(message[message.index("RESOURCE_EXHAUSTED") :])
            return error_result(f"MCP server {self.name}: {message}")
        except ValidationError as exc:
            return error_result(
                f"MCP server {self.name} answered tools/call with an invalid result: "
                f"{str(exc)[:300]}"
            )
        except RuntimeError as exc:  # e.g. an input-required result (elicitation)
            return error_result(f"MCP server {self.name}: {str(exc)[:300]}")
        return tool_result(result)


def _description(t: types.Tool) -> str:
    text = t.description or t.title or ""
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[: MAX_DESCRIPTION_CHARS - 1] + "…"
    return text


def _fingerprint(t: types.Tool) -> str:
    return json.dumps([t.name, _description(t), t.input_schema], sort_keys=True, default=str)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_connection_error(e) for e in exc.exceptions)
    return isinstance(exc, OSError | MCPError) or "Connect" in type(exc).__name__


def _first_error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {str(exc)[:200]}"


# -- the command -------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "%(prog)s [options] (--name NAME -- COMMAND [ARG ...] | --name NAME --url URL "
        "| --config FILE)"
    )
    parser.add_argument("--name", help="the server's name: its tools get source mcp:NAME")
    parser.add_argument("--url", help="a streamable HTTP MCP server on loopback")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help='a JSON file {"mcpServers": {NAME: {command, args, env} | {url}}}',
    )
    parser.add_argument(
        "--prefix", default="", help="put this before every tool name (to avoid clashes)"
    )
    parser.add_argument(
        "--registry",
        default=None,
        metavar="TARGET",
        help="registry address (default: $TOOLCALL_REGISTRY_ADDRESS or 127.0.0.1:48911)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=config.DEFAULT_TOOL_TIMEOUT_S,
        help="seconds a tool call may take (default %(default)g, at most 300)",
    )
    parser.add_argument(
        "--init-timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_INIT_TIMEOUT_S,
        help="seconds a server has to answer initialize and tools/list (default %(default)g)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        metavar="BYTES",
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest message taken from a server (default %(default)d)",
    )
    parser.add_argument(
        "server_command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="after --: the stdio server's command",
    )


def servers_from_args(args: argparse.Namespace) -> list[ServerSpec]:
    command = list(args.server_command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    given = [bool(command), bool(args.url), bool(args.config)]
    if sum(given) != 1:
        raise MountError("give exactly one of: -- COMMAND, --url URL, --config FILE")
    if args.config:
        if args.name:
            raise MountError("--name comes from the file's mcpServers keys with --config")
        return load_config(args.config)
    if not args.name:
        raise MountError("--name is required (the tools' source becomes mcp:NAME)")
    name = check_name(args.name)
    if args.url:
        return [ServerSpec(name=name, url=check_url(args.url))]
    return [ServerSpec(name=name, command=command[0], args=tuple(command[1:]))]


def settings_from_args(args: argparse.Namespace) -> MountSettings:
    if not 0 < args.timeout <= config.MAX_TOOL_TIMEOUT_S:
        raise MountError(f"--timeout must be > 0 and <= {config.MAX_TOOL_TIMEOUT_S:g}")
    if not 0 < args.init_timeout <= 300:
        raise MountError("--init-timeout must be > 0 and <= 300")
    if args.max_message_bytes < 1024:
        raise MountError("--max-message-bytes must be at least 1024")
    return MountSettings(
        registry_address=args.registry or config.registry_address(),
        token=config.token(),
        prefix=args.prefix,
        timeout_s=args.timeout,
        init_timeout_s=args.init_timeout,
        max_message_bytes=args.max_message_bytes,
        lease_ttl_s=config.env_float("PLUGIN_LEASE_TTL", 6.0),
    )


async def mount(servers: list[ServerSpec], settings: MountSettings, stop: asyncio.Event) -> None:
    """Runs every server's mount until ``stop`` is set, then stops them (tools cleared)."""
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        raise MountError("server names must be distinct")
    if settings.prefix and (err := name_error(settings.prefix + "x")):
        raise MountError(f"--prefix {settings.prefix[:80]!r}: a tool name {err}")
    await run_mounts([ServerMount(s, settings) for s in servers], stop)


async def run_mounts(mounts: list[ServerMount], stop: asyncio.Event) -> None:
    """Runs ``mounts`` side by side until ``stop`` is set; one failing never stops another."""
    async with anyio.create_task_group() as tg:
        for m in mounts:
            tg.start_soon(m.run, name=f"mcp-mount:{m.name}")
        await stop.wait()
        tg.cancel_scope.cancel()


async def main(args: argparse.Namespace) -> int:
    try:
        servers = servers_from_args(args)
        settings = settings_from_args(args)
    except (MountError, config.ConfigError) as exc:
        print(f"error: {exc}", flush=True, file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "mounting %d MCP server(s) at registry %s: %s",
        len(servers),
        settings.registry_address,
        ", ".join(s.name for s in servers),
    )
    try:
        await mount(servers, settings, stop)
    except MountError as exc:
        print(f"error: {exc}", flush=True, file=sys.stderr)
        return 2
    log.info("stopped; the mounted tools are cleared")
    return 0
