"""``/api/tools/...``: the HTTP/JSON tool registry API that existing HTTP plugins speak.

The field names, shapes and status codes of the HTTP tool registries this
mirrors, mapped onto ToolRegistry calls (so every rule of the registry
applies: names, schemas, the loopback callback gate, the token, its limits):

- ``POST /api/tools/register`` ``{name, description, parameters, callback_url,
  role, source, timeout_seconds}`` -> ``Register``; answers ``{ok, registered,
  affected_roles, failed_roles: [{role, error}]}``. ``role`` null (or absent)
  is every role. ``callback_url`` is ``http://127.0.0.1:PORT/path`` for an
  HTTP plugin (any callback address the registry accepts works).
- ``POST /api/tools/unregister`` ``{name, role}`` -> ``Unregister``; answers
  ``{ok, removed, affected_roles}``.
- ``POST /api/tools/clear`` ``{source, role}`` -> ``Clear`` (source required);
  answers ``{ok, removed}``.
- ``GET /api/tools[?role=]`` -> ``List`` (every page); answers ``{ok, tools,
  roles}``, one entry per (role, tool) with the registration's fields, and
  ``truncated: true`` past ``MAX_LIST_ENTRIES`` / ``MAX_LIST_BYTES``.

Status codes: 200; 422 for a request that breaks a rule, as ``{"detail":
[{"loc": ["body", field], "msg", "type"}]}`` naming the field (the
registry's own field violations are renamed to these fields); 415 for a
mutation not sent as JSON (a form post); 413 past ``MAX_BODY_BYTES``; 401
when the registry wants its token (``Authorization: Bearer``, passed on);
403 for a caller that is not local (the gateway's gate); 404 for an unknown
role in a listing; 503 when the registry is unreachable; other registry
failures by ``gateway.http_v1.HTTP_STATUS``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http_v1 import HTTP_STATUS, Backends, HttpRefusal, auth_of, read_json_body
from toolcall import config
from toolcall.errors import bad_request_violations
from toolcall.jsonvalue import to_struct
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

# A tool definition is at most a 64 KiB schema plus short fields.
MAX_BODY_BYTES = 1024 * 1024
# Each registry call; the registry answers these in milliseconds.
REGISTRY_DEADLINE_S = 10.0
# One listing holds at most this many entries and bytes of definitions (the
# registry may hold 25,000 entries and 128 MiB): past them it says
# "truncated" (paging: /v1/toolcall.v1.ToolRegistry/List).
MAX_LIST_ENTRIES = 5_000
MAX_LIST_BYTES = 16 * 1024 * 1024
# The registry's field names (BadRequest) -> the API's.
_FIELDS = {"tool.callback_address": "callback_url", "tool": "body", "name": "name"}


class Invalid(Exception):
    def __init__(self, field: str, msg: str, kind: str = "value_error") -> None:
        self.errors = [(field, msg, kind)]
        super().__init__(msg)


def unprocessable(errors: list[tuple[str, str, str]]) -> JSONResponse:
    detail = [
        {"loc": ["body"] if f == "body" else ["body", f], "msg": m, "type": t} for f, m, t in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _api_field(registry_field: str) -> str:
    if registry_field in _FIELDS:
        return _FIELDS[registry_field]
    return registry_field.removeprefix("tool.")


def _str(body: dict[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise Invalid(key, "field required", "missing")
        return default
    if not isinstance(value, str):
        raise Invalid(key, "must be a string", "string_type")
    if required and not value:
        raise Invalid(key, "must not be empty", "string_too_short")
    return value


def _role(body: dict[str, Any]) -> str | None:
    """null (or absent) is every role; an empty string is refused like the registry does."""
    role = body.get("role")
    if role is None:
        return None
    if not isinstance(role, str):
        raise Invalid("role", "must be a string or null", "string_type")
    if not role:
        raise Invalid("role", "must not be empty; use null for every role", "string_too_short")
    return role


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await read_json_body(request, MAX_BODY_BYTES)
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise Invalid("body", "JSON nested too deeply", "json_invalid") from None
    except ValueError as exc:
        raise Invalid("body", f"not valid JSON: {str(exc)[:200]}", "json_invalid") from None
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object", "dict_type")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def definition(body: dict[str, Any]) -> tools_pb2.ToolDefinition:
    """The registration fields as a ToolDefinition: types checked here, rules by the registry."""
    tool = tools_pb2.ToolDefinition(
        name=_str(body, "name", required=True),
        description=_str(body, "description"),
        callback_address=_str(body, "callback_url", required=True),
        source=_str(body, "source"),
    )
    parameters = body.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise Invalid("parameters", "must be a JSON Schema object", "dict_type")
        try:
            tool.parameters.CopyFrom(to_struct(parameters))
        except (ValueError, RecursionError):
            raise Invalid("parameters", "nests too deeply", "value_error") from None
    timeout = body.get("timeout_seconds")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise Invalid("timeout_seconds", "must be a number of seconds", "float_type")
        if not math.isfinite(float(timeout)):
            raise Invalid("timeout_seconds", "must be a finite number", "finite_number")
        tool.timeout_seconds = float(timeout)
    role = _role(body)
    if role is not None:
        tool.role = role
    return tool


def registered_json(entry: registry_pb2.RegisteredTool) -> dict[str, Any]:
    d = entry.tool
    item: dict[str, Any] = {
        "name": d.name,
        "description": d.description,
        "parameters": json_format.MessageToDict(d.parameters) if d.HasField("parameters") else {},
        "callback_url": d.callback_address,
        "role": entry.role,
        "source": d.source,
        "timeout_seconds": d.timeout_seconds or config.DEFAULT_TOOL_TIMEOUT_S,
        "mode": "async" if d.mode == tools_pb2.TOOL_MODE_ASYNC else "sync",
    }
    if entry.lease_id:
        item["lease_id"] = entry.lease_id
    if entry.HasField("registered_at"):
        item["registered_at"] = entry.registered_at.ToJsonString()
    item["stats"] = json_format.MessageToDict(entry.stats, preserving_proto_field_name=True)
    return item


class HttpApi:
    """The ``/api/tools`` routes over the registry's gRPC API."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    def routes(self) -> list[Route]:
        return [
            Route("/api/tools/register", self._endpoint(self._register), methods=["POST"]),
            Route("/api/tools/unregister", self._endpoint(self._unregister), methods=["POST"]),
            Route("/api/tools/clear", self._endpoint(self._clear), methods=["POST"]),
            Route("/api/tools", self._endpoint(self._list, body=False), methods=["GET"]),
        ]

    @property
    def registry(self) -> registry_pb2_grpc.ToolRegistryAsyncStub:
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(
            self.backends.channel("toolcall.v1.ToolRegistry")
        )
        return stub

    def _endpoint(self, handler: Any, *, body: bool = True) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                data = await _json_object(request) if body else {}
                return JSONResponse(await handler(request, data))
            except HttpRefusal as exc:
                return JSONResponse({"detail": str(exc)}, status_code=exc.status)
            except Invalid as exc:
                return unprocessable(exc.errors)
            except grpc.aio.AioRpcError as exc:
                return _registry_error(exc)

        return endpoint

    async def _register(self, request: Request, body: dict[str, Any]) -> Any:
        tool = definition(body)
        reply = await self.registry.Register(
            registry_pb2.RegisterRequest(tool=tool),
            timeout=REGISTRY_DEADLINE_S,
            metadata=auth_of(request),
        )
        return {
            "ok": reply.ok,
            "registered": reply.registered,
            "affected_roles": list(reply.affected_roles),
            "failed_roles": [{"role": f.role, "error": f.error} for f in reply.failed_roles],
        }

    async def _unregister(self, request: Request, body: dict[str, Any]) -> Any:
        message = registry_pb2.UnregisterRequest(name=_str(body, "name", required=True))
        if (role := _role(body)) is not None:
            message.role = role
        reply = await self.registry.Unregister(
            message, timeout=REGISTRY_DEADLINE_S, metadata=auth_of(request)
        )
        return {"ok": True, "removed": reply.removed, "affected_roles": list(reply.affected_roles)}

    async def _clear(self, request: Request, body: dict[str, Any]) -> Any:
        message = registry_pb2.ClearRequest(source=_str(body, "source", required=True))
        if (role := _role(body)) is not None:
            message.role = role
        reply = await self.registry.Clear(
            message, timeout=REGISTRY_DEADLINE_S, metadata=auth_of(request)
        )
        return {"ok": True, "removed": reply.removed}

    async def _list(self, request: Request, body: dict[str, Any]) -> Any:
        message = registry_pb2.ListRequest()
        role = request.query_params.get("role")
        if role:
            message.role = role
        tools: list[registry_pb2.RegisteredTool] = []
        size, truncated = 0, False
        while True:
            page = await self.registry.List(
                message, timeout=REGISTRY_DEADLINE_S, metadata=auth_of(request)
            )
            for entry in page.tools:
                size += entry.ByteSize()
                if len(tools) >= MAX_LIST_ENTRIES or size > MAX_LIST_BYTES:
                    truncated = True
                    break
                tools.append(entry)
            if truncated or not page.next_page_token:
                break
            message.page_token = page.next_page_token
        reply: dict[str, Any] = {"ok": True, "tools": [registered_json(t) for t in tools]}
        reply["roles"] = list(page.roles)
        if truncated:
            reply["truncated"] = True
        return reply


def _registry_error(exc: grpc.aio.AioRpcError) -> Response:
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        violations = bad_request_violations(exc)
        if violations:
            return unprocessable([(_api_field(f), r, "value_error") for f, r in violations])
        return unprocessable([("body", exc.details() or "invalid request", "value_error")])
    status = HTTP_STATUS.get(exc.code(), 500)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": exc.details() or exc.code().name}, status, headers=headers)
