"""The web console at ``/`` of the HTTP gateway: chat, async results and tools in a browser.

The page is plain HTML, CSS and JavaScript shipped in ``gateway/console_static``
(no build step, no CDN). What it talks to, all under ``/console/``:

- ``POST /console/api/chat``: one turn of ``LLMService.ChatStream``, answered as
  newline-delimited JSON (one line per stream event, protobuf's JSON names),
  so text and tool calls appear as they happen.
- ``POST /console/api/invoke``: ``ToolRegistry.Invoke`` for the tools panel's
  form; the result, or the registry's exact validation error, comes back.
- ``GET /console/api/history``, ``GET /console/api/tool``: ``GetHistory``, and
  one tool's registration and call statistics (``List``).
- ``/console/ws``: a WebSocket per open page. It pushes the session's async
  results from ``LLMService.Subscribe`` (the page acknowledges each one once it
  is on screen, and the gateway calls ``AckTasks``: a result not yet shown
  comes again after a reload), running long jobs' progress (``Subscribe``
  with ``progress``: where each job stands first, so a reloaded page shows
  its bars again, then each report) and the role's tool list, live from the
  registry's ``Watch`` (the gateway's shared ``RegistryView``).

Security, on top of ``LocalOnly`` (loopback peer, loopback Host against DNS
rebinding): the API routes and the WebSocket refuse cross-origin requests (an
Origin header must be the gateway's own origin, and Sec-Fetch-Site must not
say cross-site), mutations take JSON bodies only (no form posts) up to
``MAX_BODY_BYTES``, and when a token is configured every API route needs
``Authorization: Bearer <token>`` and the WebSocket's first message must carry
it (a browser cannot set headers on a WebSocket). The page asks for the token
once and keeps it in ``sessionStorage`` (gone when the tab closes). Every
per-connection buffer is bounded (``Outbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from toolcall import config
from toolcall.channels import Backoff
from toolcall.clients import auth_metadata, channel, list_all_tools
from toolcall.jsonvalue import shape_error, to_struct
from toolcall.registry_view import RegistryView
from toolcall.tools import ToolSpec
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("console_static")

# Largest request body of the console's API routes: a chat message, or a
# tool's arguments typed into the form.
MAX_BODY_BYTES = 1024 * 1024
# Deepest JSON the routes accept (protobuf's Struct decoding stops at 100).
MAX_JSON_DEPTH = 64
# Open console WebSockets per gateway; past it a page is told to come back later.
MAX_SOCKETS = 64
# Per WebSocket: messages waiting to be sent, in entries and bytes (Outbox).
# A result pushed by Subscribe is at most one gRPC message (4 MiB, a third
# more as base64 JSON), so one always fits.
OUTBOX_ENTRIES = 64
OUTBOX_BYTES = 16 * 1024 * 1024
# Largest message a page may send on the WebSocket (hello, ack, session switch);
# uvicorn refuses larger frames before they are read (ws_max_size in gateway.main).
MAX_WS_MESSAGE_BYTES = 64 * 1024
# Time a new WebSocket has to send its hello (with the token, when one is set).
HELLO_TIMEOUT_S = 5.0
# Task ids acknowledged in one message.
MAX_ACK_IDS = 256
# Tools of one role sent to a page; the rest are counted, not listed.
MAX_TOOLS_SENT = 1000
# Registry entries read to find one tool's statistics (those of its source).
MAX_LISTED = 5000
# Deadlines of the gRPC calls behind the routes: a chat turn (several model
# and tool rounds), one Invoke (a tool's timeout is at most 300 s), the rest.
CHAT_TIMEOUT_S = 600.0
INVOKE_TIMEOUT_S = 310.0
CALL_TIMEOUT_S = 10.0
# The providers an LLMService knows; empty is the service's default.
PROVIDERS = ("offline", "openai", "gemini")
# Longest user message from the page (characters).
MAX_PROMPT_CHARS = 64 * 1024

# Extra protection of the page itself: no inline script, no framing, images
# from the page's own data only (tool results' images are data: URLs).
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

# gRPC status -> HTTP status of the console's API answers.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
}


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    llm_address: str = field(default_factory=config.llm_address)
    registry_address: str = field(default_factory=config.registry_address)
    # The registry's shared token: the page must present it, and the gateway
    # passes it on to the registry's Invoke.
    token: str = ""
    default_role: str = config.DEFAULT_ROLE
    version: str = ""


# -- bounded buffers -------------------------------------------------------------


class Outbox:
    """What waits to be sent to one page: at most ``max_entries`` messages and
    ``max_bytes`` of them (a larger message passes alone, once the box is empty).
    A producer waits for room, which holds the ``Subscribe`` stream behind it
    (gRPC flow control then holds the LLMService). The tool list is state, not
    an event: however many changes happened, one refresh is due.
    """

    def __init__(self, max_entries: int = OUTBOX_ENTRIES, max_bytes: int = OUTBOX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: deque[tuple[str, int]] = deque()
        self.bytes = 0
        self._tools_due = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def _full_for(self, size: int) -> bool:
        return bool(self._items) and (
            len(self._items) >= self.max_entries or self.bytes + size > self.max_bytes
        )

    async def put(self, text: str) -> None:
        size = len(text.encode())
        while self._full_for(size):
            self._room.clear()
            await self._room.wait()
        self._items.append((text, size))
        self.bytes += size
        self._wake.set()

    def refresh_tools(self) -> None:
        self._tools_due = True
        self._wake.set()

    async def get(self) -> str | None:
        """The next message; None when the tool list is due (built at send time)."""
        while True:
            if self._items:
                text, size = self._items.popleft()
                self.bytes -= size
                self._room.set()
                return text
            if self._tools_due:
                self._tools_due = False
                return None
            self._wake.clear()
            await self._wake.wait()


# -- request checks ----------------------------------------------------------------


def cross_origin(conn: HTTPConnection) -> str | None:
    """Why a request does not come from the console's own page, or None.

    A browser names the page's origin in Origin (always on a WebSocket and on
    a cross-origin POST) and, in modern browsers, the relation in
    Sec-Fetch-Site. Programs that send neither are not a browser being abused.
    """
    own = f"http://{conn.headers.get('host', '')}"
    origin = conn.headers.get("origin")
    if origin is not None and origin != own:
        return f"cross-origin request from {origin[:100]!r} refused (the console is {own})"
    site = conn.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request (Sec-Fetch-Site: {site[:20]}) refused"
    return None


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def grpc_error(exc: grpc.aio.AioRpcError) -> JSONResponse:
    status = HTTP_STATUS.get(exc.code(), 502)
    return error(status, exc.details() or exc.code().name, code=exc.code().name)


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any] | Response:
    """The request's JSON object, or the refusal to send instead."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return error(415, "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return error(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return error(413, f"the body is larger than {limit} bytes")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return error(400, "the body is not valid JSON")
    if not isinstance(value, dict):
        return error(422, "the body must be a JSON object")
    if reason := shape_error(value, MAX_JSON_DEPTH):
        return error(422, f"the body must not{reason}")
    return value


class FieldError(ValueError):
    """A request field is unusable; the message starts with the field's name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} {reason}")
        self.name = name


def string_field(body: dict[str, Any], name: str, *, limit: int = 256) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(name, "must be a string")
    if len(value) > limit:
        raise FieldError(name, f"must be at most {limit} characters")
    return value


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def progress_wire(task: llm_pb2.Task) -> dict[str, Any]:
    """A running long job for the page's progress bar: its progress, not its arguments
    (a job may report many times a second; each report is one small message)."""
    wire: dict[str, Any] = {"task_id": task.task_id, "tool_name": task.tool_name}
    wire["job_id"] = task.job_id
    if task.HasField("progress"):
        wire["progress"] = to_dict(task.progress)
    return wire


def tool_wire(spec: ToolSpec) -> dict[str, Any]:
    wire = to_dict(spec.definition)
    wire.pop("callback_address", None)  # where the plugin listens is no business of a page
    wire["mode"] = "async" if spec.is_async else "sync"
    wire["parameters"] = spec.parameters
    return wire


# -- the console -------------------------------------------------------------------


class Console:
    """The console's routes and the gRPC channels behind them."""

    def __init__(self, settings: ConsoleSettings, view: RegistryView) -> None:
        self.settings = settings
        self.view = view
        self._expected = f"Bearer {settings.token}".encode() if settings.token else b""
        self._sockets: set[ConsoleSocket] = set()
        self._open = 0  # accepted WebSockets, MAX_SOCKETS at most
        # The JSON text of each role's tool list, until the registry changes.
        self._tools_text: dict[str, str] = {}
        self._llm_channel: grpc.aio.Channel | None = None
        self._registry_channel: grpc.aio.Channel | None = None
        view.add_change_hook(self._tools_changed)

    # -- lifecycle (the gateway's lifespan) ---------------------------------

    async def start(self) -> None:
        # TLS from TOOLCALL_TLS_*, as every other client of the services.
        self._llm_channel = channel(self.settings.llm_address)
        self._registry_channel = channel(self.settings.registry_address)

    async def close(self) -> None:
        for sock in list(self._sockets):
            sock.cancel()
        for ch in (self._llm_channel, self._registry_channel):
            if ch is not None:
                await ch.close()

    @property
    def llm(self) -> llm_pb2_grpc.LLMServiceAsyncStub:
        assert self._llm_channel is not None, "the console is not started"
        return llm_pb2_grpc.LLMServiceStub(self._llm_channel)

    @property
    def registry(self) -> registry_pb2_grpc.ToolRegistryAsyncStub:
        assert self._registry_channel is not None, "the console is not started"
        return registry_pb2_grpc.ToolRegistryStub(self._registry_channel)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page),
            Route("/console/api/info", self.info),
            Route("/console/api/history", self.history),
            Route("/console/api/tool", self.tool),
            Route("/console/api/chat", self.chat, methods=["POST"]),
            Route("/console/api/invoke", self.invoke, methods=["POST"]),
            WebSocketRoute("/console/ws", self.socket),
            Mount("/console/static", app=_Static(directory=STATIC_DIR), name="console-static"),
        ]

    # -- checks ---------------------------------------------------------------

    @property
    def service_auth(self) -> tuple[tuple[str, str], ...]:
        """The gateway's token on its calls to the services (a principal's, under principals)."""
        return auth_metadata(self.settings.token)

    def token_ok(self, authorization: str) -> bool:
        if not self._expected:
            return True
        if not isinstance(authorization, str):
            return False
        # surrogatepass: a lone surrogate from a page is a wrong token, not a crash.
        return hmac.compare_digest(authorization.encode("utf-8", "surrogatepass"), self._expected)

    def refusal(self, request: Request) -> Response | None:
        if reason := cross_origin(request):
            return error(403, reason)
        if not self.token_ok(request.headers.get("authorization", "")):
            return error(
                401,
                "this gateway requires the toolcall token (Authorization: Bearer <token>)",
                token_required=True,
            )
        return None

    # -- pages and reads --------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    async def info(self, request: Request) -> Response:
        if reason := cross_origin(request):
            return error(403, reason)
        return JSONResponse(
            {"token_required": bool(self._expected), "version": self.settings.version}
        )

    async def history(self, request: Request) -> Response:
        if refusal := self.refusal(request):
            return refusal
        session = request.query_params.get("session", "")
        limit = request.query_params.get("limit", "200")
        if not limit.isdigit():
            return error(422, "limit must be a whole number", field="limit")
        try:
            reply = await self.llm.GetHistory(
                llm_pb2.GetHistoryRequest(session_id=session, limit=int(limit)),
                metadata=self.service_auth,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            return grpc_error(exc)
        return JSONResponse(to_dict(reply))

    async def tool(self, request: Request) -> Response:
        """One tool's entry: definition, registration time, lease and call statistics."""
        if refusal := self.refusal(request):
            return refusal
        role = request.query_params.get("role") or self.settings.default_role
        name = request.query_params.get("name", "")
        spec = self.view.get(role, name)
        if spec is None:
            return error(404, f"no tool {name[:100]!r} in role {role[:100]!r}")
        try:
            # The tool's source narrows the pages to its plugin's tools.
            entries, _ = await list_all_tools(
                self.registry,
                registry_pb2.ListRequest(role=role, source=spec.source),
                timeout_s=CALL_TIMEOUT_S,
                max_tools=MAX_LISTED,
            )
        except grpc.aio.AioRpcError as exc:
            return grpc_error(exc)
        except RuntimeError as exc:  # more than MAX_LISTED tools share the source
            return error(502, str(exc))
        for entry in entries:
            if entry.tool.name == name:
                wire = to_dict(entry)
                wire["tool"] = tool_wire(spec)
                wire.setdefault("stats", {})
                return JSONResponse(wire)
        return error(404, f"no tool {name[:100]!r} in role {role[:100]!r}")

    # -- mutations ----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        if refusal := self.refusal(request):
            return refusal
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        try:
            text = string_field(body, "text", limit=MAX_PROMPT_CHARS)
            chat = llm_pb2.ChatRequest(
                session_id=string_field(body, "session"),
                role=string_field(body, "role"),
                provider=string_field(body, "provider"),
                model=string_field(body, "model"),
                messages=[llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content=text)],
            )
        except FieldError as exc:
            return error(422, str(exc), field=exc.name)
        call = self.llm.ChatStream(
            llm_pb2.ChatStreamRequest(request=chat),
            timeout=CHAT_TIMEOUT_S,
            metadata=self.service_auth,
        )
        events = aiter(call)
        try:
            # The first event before the answer's status: a refused turn
            # (bad session id, unknown role, missing API key) is an HTTP error.
            first = await anext(events)
        except StopAsyncIteration:
            return error(502, "the LLMService ended the stream without an answer")
        except grpc.aio.AioRpcError as exc:
            return grpc_error(exc)

        async def lines() -> AsyncIterator[bytes]:
            try:
                yield _line(to_dict(first))
                async for event in events:
                    yield _line(to_dict(event))
            except grpc.aio.AioRpcError as exc:
                yield _line({"error": {"code": exc.code().name, "message": exc.details()}})
            finally:
                call.cancel()  # the page went away: so does the turn's stream

        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"cache-control": "no-store", "x-content-type-options": "nosniff"},
        )

    async def invoke(self, request: Request) -> Response:
        if refusal := self.refusal(request):
            return refusal
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        try:
            call = registry_pb2.InvokeRequest(
                name=string_field(body, "name"),
                session_id=string_field(body, "session"),
                raw_arguments=string_field(body, "raw_arguments", limit=MAX_BODY_BYTES),
            )
            if role := string_field(body, "role"):
                call.role = role
            arguments = body.get("arguments")
            if arguments is not None and not call.raw_arguments:
                if not isinstance(arguments, dict):
                    raise FieldError("arguments", "must be a JSON object")
                call.arguments.CopyFrom(to_struct(arguments))
        except FieldError as exc:
            return error(422, str(exc), field=exc.name)
        try:
            reply = await self.registry.Invoke(
                call, timeout=INVOKE_TIMEOUT_S, metadata=auth_metadata(self.settings.token)
            )
        except grpc.aio.AioRpcError as exc:
            return grpc_error(exc)
        return JSONResponse(to_dict(reply))

    # -- the WebSocket -------------------------------------------------------------

    async def socket(self, ws: WebSocket) -> None:
        if reason := cross_origin(ws):
            # Before accept: the browser gets an HTTP 403 instead of a socket.
            await ws.close(code=4403, reason=reason[:120])
            return
        await ws.accept()
        if self._open >= MAX_SOCKETS:
            await ws.close(code=1013, reason=f"more than {MAX_SOCKETS} consoles are open")
            return
        self._open += 1  # counted from accept: sockets still owing their hello too
        try:
            await self._serve(ws)
        finally:
            self._open -= 1

    async def _serve(self, ws: WebSocket) -> None:
        try:
            hello = await asyncio.wait_for(_receive(ws), HELLO_TIMEOUT_S)
        except TimeoutError:
            await ws.close(code=4408, reason="send the hello message first")
            return
        except (WebSocketDisconnect, ValueError):
            return
        if hello.get("type") != "hello":
            await ws.close(code=4400, reason="the first message must be the hello")
            return
        if not self.token_ok(f"Bearer {hello.get('token') or ''}"):
            await ws.close(code=4401, reason="the toolcall token is required")
            return
        sock = ConsoleSocket(self, ws)
        self._sockets.add(sock)
        try:
            await sock.run(hello)
        finally:
            self._sockets.discard(sock)

    def _tools_changed(self, gone: Any, added: Any) -> None:
        self._tools_text.clear()
        for sock in self._sockets:
            sock.outbox.refresh_tools()

    def tools_text(self, role: str) -> str:
        text = self._tools_text.get(role)
        if text is None:
            specs = self.view.tools_for(role)
            roles = sorted(self.view.roles or ())
            text = json.dumps(
                {
                    "type": "tools",
                    "role": role,
                    "roles": roles,
                    "synced": self.view.synced,
                    "total": len(specs),
                    "tools": [tool_wire(s) for s in specs[:MAX_TOOLS_SENT]],
                }
            )
            if len(self._tools_text) < 16:  # bounded; emptied on every change
                self._tools_text[role] = text
        return text


class ConsoleSocket:
    """One page's WebSocket: pushes its session's async results and its role's tools."""

    def __init__(self, console: Console, ws: WebSocket) -> None:
        self.console = console
        self.ws = ws
        self.outbox = Outbox()
        self.session = ""
        self.role = console.settings.default_role
        self._subscriber: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def run(self, hello: dict[str, Any]) -> None:
        self._tasks = [
            asyncio.create_task(self._write(), name="console-write"),
            asyncio.create_task(self._read(hello), name="console-read"),
        ]
        try:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*self._tasks, self._subscriber]:
                if task is not None:
                    task.cancel()
            for task in [*self._tasks, self._subscriber]:
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _write(self) -> None:
        while True:
            text = await self.outbox.get()
            if text is None:
                text = self.console.tools_text(self.role)
            await self.ws.send_text(text)

    async def _read(self, hello: dict[str, Any]) -> None:
        await self._apply(hello)
        while True:
            try:
                message = await _receive(self.ws)
            except WebSocketDisconnect:
                return
            except ValueError as exc:
                await self.outbox.put(json.dumps({"type": "error", "message": str(exc)}))
                continue
            await self._apply(message)

    async def _apply(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("hello", "select"):
            role = message.get("role")
            if isinstance(role, str) and role and len(role) <= 256 and role != self.role:
                self.role = role
            session = message.get("session")
            if isinstance(session, str) and len(session) <= 256 and session != self.session:
                self._follow(session)
            if kind == "hello":
                await self.outbox.put(
                    json.dumps(
                        {
                            "type": "ready",
                            "providers": PROVIDERS,
                            "default_role": self.console.settings.default_role,
                            "version": self.console.settings.version,
                        }
                    )
                )
            self.outbox.refresh_tools()
        elif kind == "ack":
            ids = message.get("task_ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                reason = "ack needs task_ids, a list of strings"
                await self.outbox.put(json.dumps({"type": "error", "message": reason}))
                return
            await self._ack(ids[:MAX_ACK_IDS])
        else:
            await self.outbox.put(
                json.dumps({"type": "error", "message": f"unknown message type {kind!r:.60}"})
            )

    async def _ack(self, task_ids: list[str]) -> None:
        if not self.session or not task_ids:
            return
        try:
            await self.console.llm.AckTasks(
                llm_pb2.AckTasksRequest(session_id=self.session, task_ids=task_ids),
                metadata=self.console.service_auth,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            # Not acknowledged: the result comes again on the next Subscribe.
            await self.outbox.put(
                json.dumps({"type": "error", "message": f"ack failed: {exc.details()}"})
            )
            return
        await self.outbox.put(json.dumps({"type": "acked", "task_ids": task_ids}))

    def _follow(self, session: str) -> None:
        """Subscribes to ``session``'s async results (instead of the previous session's)."""
        if self._subscriber is not None:
            self._subscriber.cancel()
        self.session = session
        self._subscriber = (
            asyncio.create_task(self._subscribe(session), name="console-subscribe")
            if session
            else None
        )

    async def _subscribe(self, session: str) -> None:
        backoff = Backoff(max_s=5.0)
        while True:
            call = self.console.llm.Subscribe(
                llm_pb2.SubscribeRequest(session_id=session, progress=True),
                metadata=self.console.service_auth,
            )
            try:
                await call.wait_for_connection()
                if backoff.peek() > backoff.initial_s:  # it had failed: say it is back
                    await self.outbox.put(json.dumps({"type": "status", "llm": "OK"}))
                    backoff.reset()
                async for item in call:
                    backoff.reset()
                    if item.HasField("progress"):
                        message = {"type": "progress", "task": progress_wire(item.progress)}
                    else:
                        message = {"type": "task", "task": to_dict(item.task)}
                    await self.outbox.put(json.dumps(message))
            except grpc.aio.AioRpcError as exc:
                status = {"type": "status", "llm": exc.code().name, "message": exc.details()}
                await self.outbox.put(json.dumps(status))
                if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    return
            finally:
                call.cancel()
            await asyncio.sleep(backoff.delay())


async def _receive(ws: WebSocket) -> dict[str, Any]:
    """The page's next message, a JSON object; ValueError when it is not one."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise ValueError("messages must be text frames holding JSON objects")
    if len(text) > MAX_WS_MESSAGE_BYTES:
        raise ValueError(f"messages are at most {MAX_WS_MESSAGE_BYTES} bytes")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("messages must be JSON objects") from None
    if not isinstance(value, dict):
        raise ValueError("messages must be JSON objects")
    return value


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()


class _Static(StaticFiles):
    """The console's assets, with the page's security headers."""

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response
