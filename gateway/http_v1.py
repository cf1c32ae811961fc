"""``/v1/...``: every ToolRegistry and LLMService RPC as JSON over HTTP, for curl users.

One uniform mapping, no per-method routes: ``POST /v1/<package.Service>/<Method>``
(the gRPC method path under ``/v1``, e.g. ``/v1/toolcall.v1.ToolRegistry/List``)
with the request message as JSON in the body (an empty body is the empty
message). JSON follows protobuf's JSON mapping (``google.protobuf.json_format``):
the reply uses the proto field names (``page_size``, not ``pageSize``; both
are accepted in requests), enums by name, 64-bit integers as strings, fields
at their default value left out.

- Unary RPCs answer ``200`` with the reply message.
- Server-streaming RPCs (``Watch``, ``ChatStream``, ``Subscribe``) answer
  ``text/event-stream``: one ``data:`` event per message; a failure after the
  stream has started is a final ``event: error`` whose data is the status
  below. A failure within ``FIRST_EVENT_WINDOW_S`` (an unknown role, a bad
  request) is a plain HTTP error instead. Closing the connection cancels
  the call.
- A gRPC status other than OK is the HTTP status of google.api's mapping
  (``HTTP_STATUS``) with a ``google.rpc.Status`` as JSON: ``{"code": 5,
  "message": "...", "details": [...]}`` (details such as ``BadRequest``
  field violations kept, with their ``@type``).

The caller's ``Authorization`` header goes to the service as gRPC metadata:
the services decide (the registry's token rules apply unchanged).

``ToolRegistry/Invoke`` is always the registry's own: its token and
principal rules (privileges, roles, calls per minute), its lookup, and the
call statistics it keeps are exactly those of a gRPC caller. The common
Invoke (JSON, the request's usual fields) is transcoded by ``InvokeLane``,
below the router, without ``json_format`` (measured: a gateway that called
plugins itself from its Watch-fed view saved one hop, but bypassed the
registry's statistics, rate limits and token rules; docs/http.md).

Bounds: request bodies of at most ``MAX_BODY_BYTES`` (413), JSON only
(415), unary calls under ``UNARY_DEADLINE_S``; open streams are bounded by
the server's connection limit and by each service's own limits
(Subscribe's places).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from toolcall.clients import channel
from toolcall.jsonvalue import from_value, shape_error
from toolcall.v1 import llm_pb2, registry_pb2

# Largest request body: a chat's messages or a tool's definition.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Longest unary call (a chat turn may run several tool rounds of up to 300 s each).
UNARY_DEADLINE_S = 900.0
# How long a stream's first message is awaited before the 200 and the
# event-stream headers go out: errors found at once keep their HTTP status.
FIRST_EVENT_WINDOW_S = 0.25
# SSE comment lines that keep idle streams (Subscribe, Watch) alive through proxies.
SSE_PING_S = 15

# google.api's mapping of gRPC codes to HTTP (google/rpc/code.proto).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

SERVICES = (
    registry_pb2.DESCRIPTOR.services_by_name["ToolRegistry"],
    llm_pb2.DESCRIPTOR.services_by_name["LLMService"],
)


class HttpRefusal(Exception):
    """A request refused before any RPC: its HTTP status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


def status_json(code: grpc.StatusCode, message: str, details: list[Any] | None = None) -> Any:
    body: dict[str, Any] = {"code": code.value[0], "message": message}
    if details:
        body["details"] = details
    return body


def rpc_error_response(exc: grpc.aio.AioRpcError) -> JSONResponse:
    return JSONResponse(rpc_error_json(exc), status_code=HTTP_STATUS.get(exc.code(), 500))


def rpc_error_json(exc: grpc.aio.AioRpcError) -> Any:
    """The call's ``google.rpc.Status`` (with its details) as JSON."""
    status = None
    with contextlib.suppress(Exception):  # a malformed status detail is not our failure
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        return json_format.MessageToDict(status, preserving_proto_field_name=True)
    return status_json(exc.code(), exc.details() or exc.code().name)


def refusal_response(status: int, reason: str) -> JSONResponse:
    code = {
        401: grpc.StatusCode.UNAUTHENTICATED,
        403: grpc.StatusCode.PERMISSION_DENIED,
        404: grpc.StatusCode.NOT_FOUND,
        405: grpc.StatusCode.UNIMPLEMENTED,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }.get(status, grpc.StatusCode.INVALID_ARGUMENT)
    return JSONResponse(status_json(code, reason), status_code=status)


async def read_json_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body of a JSON request, read up to ``limit`` bytes; HttpRefusal otherwise.

    JSON only: a form post (what a cross-site page can send without a CORS
    preflight) is 415 before its body is read.
    """
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise HttpRefusal(415, "send the request as JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpRefusal(413, f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpRefusal(413, f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def auth_of(request: Request) -> tuple[tuple[str, str], ...]:
    """The caller's Authorization header, passed on as gRPC metadata."""
    return forwarded_auth(request.headers.get("authorization"))


def forwarded_auth(given: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", given),) if given else ()


class Backends:
    """Channels to the registry and the LLMService, opened on first use inside the loop."""

    def __init__(self, registry_address: str, llm_address: str) -> None:
        self.addresses = {"toolcall.v1.ToolRegistry": registry_address}
        self.addresses["toolcall.v1.LLMService"] = llm_address
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        ch = self._channels.get(service)
        if ch is None:
            ch = self._channels[service] = channel(self.addresses[service])
        return ch

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()


@dataclass(frozen=True, slots=True)
class Method:
    path: str
    service: str
    streaming: bool
    request: type[Message]
    response: type[Message]


def _methods() -> dict[str, Method]:
    found = {}
    for service in SERVICES:
        for m in service.methods:
            assert isinstance(m, MethodDescriptor)
            path = f"{service.full_name}/{m.name}"
            found[path] = Method(
                path=f"/{path}",
                service=service.full_name,
                streaming=m.server_streaming,
                request=message_factory.GetMessageClass(m.input_type),
                response=message_factory.GetMessageClass(m.output_type),
            )
    return found


METHODS = _methods()


def parse_request(method: Method, body: bytes) -> Message:
    message = method.request()
    if not body.strip():
        return message
    try:
        json_format.Parse(body, message)
    except json_format.ParseError as exc:
        raise HttpRefusal(
            400, f"the body is not a valid {message.DESCRIPTOR.name}: {exc}"
        ) from None
    except (RecursionError, ValueError, UnicodeDecodeError) as exc:
        reason = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise HttpRefusal(
            400, f"the body is not a valid {message.DESCRIPTOR.name}: {reason}"
        ) from None
    return message


def to_json(message: Message) -> Any:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


INVOKE = "toolcall.v1.ToolRegistry/Invoke"
INVOKE_PATH = f"/v1/{INVOKE}"
# InvokeRequest's JSON names (proto and lowerCamelCase) -> field.
_INVOKE_FIELDS = {
    "name": "name",
    "arguments": "arguments",
    "raw_arguments": "raw_arguments",
    "rawArguments": "raw_arguments",
    "call_id": "call_id",
    "callId": "call_id",
    "role": "role",
    "session_id": "session_id",
    "sessionId": "session_id",
}


# Below the nesting protobuf decodes (Struct/Value count two messages a level).
_PLAIN_DEPTH = 40


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def plain_invoke(body: bytes) -> registry_pb2.InvokeRequest | None:
    """The common Invoke body read without json_format (a fifth of the gateway's CPU per
    call). None for anything unusual (unknown or duplicate-prone names, wrong types,
    NaN), which then takes json_format's path and its exact error."""
    try:
        d = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(d, dict) or not d.keys() <= _INVOKE_FIELDS.keys():
        return None
    fields: dict[str, Any] = {}
    for key, value in d.items():
        field = _INVOKE_FIELDS[key]
        if value is None or field in fields:
            return None
        if field == "arguments":
            # Surrogates, NaN, huge integers, deep nesting: json_format's path refuses
            # (or converts) them with its own words.
            if not isinstance(value, dict) or shape_error(value, _PLAIN_DEPTH):
                return None
        elif not isinstance(value, str):
            return None
        fields[field] = value
    arguments = fields.pop("arguments", None)
    try:
        request = registry_pb2.InvokeRequest(**fields)
    except ValueError:  # a string protobuf will not hold (lone surrogates)
        return None
    if arguments is not None:
        request.arguments.SetInParent()  # {} is present, as json_format reads it
        request.arguments.update(arguments)
    return request


def invoke_json(reply: registry_pb2.InvokeResponse) -> Any:
    """``to_json(reply)`` for a reply without content parts, built directly."""
    result = reply.result
    if result.parts:
        return to_json(reply)
    out: dict[str, Any] = {}
    if result.HasField("output"):
        out["output"] = from_value(result.output)
    if result.is_error:
        out["is_error"] = True
    if result.error:
        out["error"] = result.error
    return {"result": out, "call_id": reply.call_id, "latency_ms": reply.latency_ms}


_JSON_HEADERS = [(b"content-type", b"application/json")]


class InvokeLane:
    """ASGI middleware: the common ``/v1`` Invoke (a JSON body of InvokeRequest's usual
    fields) sent to the registry without Starlette's router, request and response
    objects or ``json_format`` (profiled: most of the gateway's own time per call).
    The registry answers it as any gRPC caller's Invoke. Everything else, including
    every refusal but an oversized body, goes on to the app unchanged (the body
    replayed)."""

    def __init__(self, app: ASGIApp, transcoder: Transcoder | None) -> None:
        self.app = app
        self.transcoder = transcoder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transcoder = self.transcoder
        if (
            transcoder is None
            or scope["type"] != "http"
            or scope["path"] != INVOKE_PATH
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != b"application/json":
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _too_big(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _too_big(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        request = plain_invoke(body)
        if request is None:
            await self.app(scope, _replay(body, receive), send)
            return
        auth = headers.get(b"authorization")
        # Starlette's headers are latin-1 too: the same metadata as the router's path.
        metadata = forwarded_auth(auth.decode("latin-1") if auth else None)
        call = transcoder.callable(METHODS[INVOKE])
        try:
            reply = await call(request, timeout=UNARY_DEADLINE_S, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            await rpc_error_response(exc)(scope, receive, send)
            return
        data = json.dumps(
            invoke_json(reply), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})


async def _too_big(scope: Scope, receive: Receive, send: Send) -> None:
    reason = f"the request body is larger than {MAX_BODY_BYTES} bytes"
    await refusal_response(413, reason)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Transcoder:
    """The ``/v1`` routes over ``Backends``."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self._callables: dict[str, Callable[..., Any]] = {}

    def routes(self) -> list[Route]:
        return [Route("/v1/{service}/{method}", self.handle, methods=["POST"])]

    def callable(self, method: Method) -> Callable[..., Any]:
        fn = self._callables.get(method.path)
        if fn is None:
            ch = self.backends.channel(method.service)
            make = ch.unary_stream if method.streaming else ch.unary_unary
            fn = self._callables[method.path] = make(
                method.path,
                request_serializer=method.request.SerializeToString,
                response_deserializer=method.response.FromString,
            )
        return fn

    async def handle(self, request: Request) -> Response:
        key = f"{request.path_params['service']}/{request.path_params['method']}"
        method = METHODS.get(key)
        if method is None:
            return refusal_response(
                404,
                f"no RPC {key[:200]!r}; POST /v1/<service>/<method>, for example "
                "/v1/toolcall.v1.ToolRegistry/List",
            )
        try:
            message = parse_request(method, await read_json_body(request))
        except HttpRefusal as exc:
            return refusal_response(exc.status, str(exc))
        call = self.callable(method)
        metadata = auth_of(request)
        if not method.streaming:
            try:
                reply = await call(message, timeout=UNARY_DEADLINE_S, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                return rpc_error_response(exc)
            return JSONResponse(to_json(reply))
        return await self._stream(call(message, metadata=metadata))

    async def _stream(self, call: Any) -> Response:
        first = asyncio.ensure_future(call.read())
        done, _ = await asyncio.wait({first}, timeout=FIRST_EVENT_WINDOW_S)
        if done:
            try:
                head = first.result()
            except grpc.aio.AioRpcError as exc:
                return rpc_error_response(exc)
            if head is grpc.aio.EOF:
                code, details = await call.code(), await call.details()
                if code != grpc.StatusCode.OK:
                    return JSONResponse(
                        status_json(code, details), status_code=HTTP_STATUS.get(code, 500)
                    )
        # The background task also runs when the client left before the first
        # event (the generator never started, so its finally never runs).
        return EventSourceResponse(
            _events(call, first),
            ping=SSE_PING_S,
            headers={"cache-control": "no-store"},
            background=BackgroundTask(call.cancel),
        )


async def _events(call: Any, first: asyncio.Future[Any]) -> AsyncIterator[dict[str, str]]:
    try:
        message = await first
        while message is not grpc.aio.EOF:
            yield {"data": json.dumps(to_json(message), separators=(",", ":"))}
            message = await call.read()
        code = await call.code()
        if code != grpc.StatusCode.OK:
            yield {"event": "error", "data": json.dumps(status_json(code, await call.details()))}
    except grpc.aio.AioRpcError as exc:
        yield {"event": "error", "data": json.dumps(rpc_error_json(exc))}
    finally:
        call.cancel()
