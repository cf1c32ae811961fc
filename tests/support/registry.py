"""Helpers for the registry tests: a registry on loopback and a tiny plugin.

The plugin side is a real grpc.aio ToolCallback server in the test process, so tests can
see exactly what reached it (arguments, deadline, cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from registry_service import RegistryHost, RegistrySettings, start_registry
from registry_service.etcd_storage import EtcdOptions
from tests.support.images import png
from toolcall.clients import list_all_tools
from toolcall.jsonvalue import from_struct, to_struct, to_value
from toolcall.v1 import (
    callback_pb2,
    callback_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    tools_pb2,
)

NUMBER_SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "number"}},
    "required": ["x"],
    "additionalProperties": False,
}


def tool(name: str, address: str = "127.0.0.1:1", **fields: Any) -> tools_pb2.ToolDefinition:
    """A valid ToolDefinition; ``parameters`` and ``output_schema`` may be plain dicts."""
    params = fields.pop("parameters", None)
    output_schema = fields.pop("output_schema", None)
    d = tools_pb2.ToolDefinition(name=name, callback_address=address, **fields)
    if params is not None:
        d.parameters.CopyFrom(to_struct(params))
    if output_schema is not None:
        d.output_schema.CopyFrom(to_struct(output_schema))
    return d


@dataclass
class Registry:
    host: RegistryHost
    stub: registry_pb2_grpc.ToolRegistryAsyncStub
    channel: grpc.aio.Channel

    @property
    def target(self) -> str:
        return self.host.target

    async def register(
        self, definition: tools_pb2.ToolDefinition, lease_id: str = ""
    ) -> registry_pb2.RegisterResponse:
        return await self.stub.Register(
            registry_pb2.RegisterRequest(tool=definition, lease_id=lease_id), timeout=5
        )

    async def names(self, role: str | None = None, source: str = "") -> list[tuple[str, str]]:
        request = registry_pb2.ListRequest(source=source)
        if role is not None:
            request.role = role
        tools, _ = await list_all_tools(self.stub, request, timeout_s=5)
        return [(t.role, t.tool.name) for t in tools]


# The registry suite's backend: "sqlite", or the etcd endpoints when pytest runs
# with --registry-store=etcd (tests/conftest.py sets them).
ETCD_ENDPOINTS: list[str] = []


def on_etcd() -> bool:
    """Whether the registries of this run keep their tools in etcd."""
    return bool(ETCD_ENDPOINTS)


def etcd_options(tmp_path: Path, endpoints: list[str]) -> EtcdOptions:
    """Options for a registry on ``endpoints`` with a key prefix of its own per test
    (the same for every registry of one test: a restart finds its tools again)."""
    digest = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    return EtcdOptions(endpoints=list(endpoints), prefix=f"/toolcall-test/{digest}/")


def settings(tmp_path: Path, **overrides: Any) -> RegistrySettings:
    base = RegistrySettings(
        address="127.0.0.1:0",
        data_path=tmp_path / "registry.sqlite3",
        lease_sweep_interval_s=0.05,
        grace_s=1.0,
    )
    if ETCD_ENDPOINTS and "store" not in overrides:
        base.store, base.etcd = "etcd", etcd_options(tmp_path, ETCD_ENDPOINTS)
    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_registry(tmp_path: Path, **overrides: Any) -> AsyncIterator[Registry]:
    host = await start_registry(settings(tmp_path, **overrides))
    channel = grpc.aio.insecure_channel(host.target)
    try:
        yield Registry(host, registry_pb2_grpc.ToolRegistryStub(channel), channel)
    finally:
        await channel.close()
        await host.stop()


async def read(call: Any, n: int, timeout_s: float = 5) -> list[registry_pb2.WatchResponse]:
    """The next ``n`` events of a Watch call (fails on end of stream or timeout)."""
    out = []
    for _ in range(n):
        event = await asyncio.wait_for(call.read(), timeout_s)
        assert event is not grpc.aio.EOF
        out.append(event)
    return out


@dataclass
class Seen:
    """What the plugin saw of one call."""

    request: callback_pb2.ToolCallbackInvokeRequest
    time_remaining: float | None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class Plugin(callback_pb2_grpc.ToolCallbackServicer):
    """Tools by name: ``echo`` returns its arguments, ``sleep`` waits ``seconds``,
    ``fail`` aborts with INTERNAL, ``report_error`` answers is_error=true; a
    name in ``replies`` answers that reply as it is (a test sets it).
    """

    def __init__(self) -> None:
        self.calls: list[Seen] = []
        self.started = asyncio.Event()
        self.replies: dict[str, callback_pb2.ToolCallbackInvokeResponse] = {}

    async def Invoke(
        self, request: callback_pb2.ToolCallbackInvokeRequest, context: grpc.aio.ServicerContext
    ) -> callback_pb2.ToolCallbackInvokeResponse:
        seen = Seen(request, context.time_remaining())
        self.calls.append(seen)
        self.started.set()
        args = from_struct(request.arguments)
        if request.name in self.replies:
            return self.replies[request.name]
        if request.name == "sleep":
            try:
                await asyncio.sleep(float(args.get("seconds", 30)))
            except asyncio.CancelledError:
                seen.cancelled.set()
                raise
            return callback_pb2.ToolCallbackInvokeResponse(output=to_value("slept"))
        if request.name == "fail":
            await context.abort(grpc.StatusCode.INTERNAL, "plugin blew up")
        if request.name == "report_error":
            return callback_pb2.ToolCallbackInvokeResponse(is_error=True, error="no such city")
        if request.name == "picture":
            reply = callback_pb2.ToolCallbackInvokeResponse(output=to_value({"width": 1}))
            reply.parts.add().image.CopyFrom(tools_pb2.ImagePart(mime_type="image/png", data=png()))
            reply.parts.add().resource.CopyFrom(
                tools_pb2.ResourcePart(uri="file:///tmp/report.pdf", name="report.pdf")
            )
            return reply
        return callback_pb2.ToolCallbackInvokeResponse(
            output=to_value({"args": args, "raw": request.raw_arguments, "role": request.role})
        )


@contextlib.asynccontextmanager
async def running_plugin() -> AsyncIterator[tuple[Plugin, str]]:
    plugin = Plugin()
    server = grpc.aio.server()
    callback_pb2_grpc.add_ToolCallbackServicer_to_server(plugin, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield plugin, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
