"""TEMPORARY: a minimal ToolRegistry (Register, List, Watch) until registry_service lands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc

from toolcall.serving import ServiceHost
from toolcall.v1 import registry_pb2, registry_pb2_grpc


class FakeRegistry(registry_pb2_grpc.ToolRegistryServicer):
    def __init__(self, roles: list[str]) -> None:
        self.roles = roles
        self.tools: dict[tuple[str, str], registry_pb2.RegisteredTool] = {}
        self.revision = 0
        self.instance_id = uuid.uuid4().hex
        self.queues: set[asyncio.Queue[registry_pb2.WatchResponse]] = set()

    def _emit(self, ev: registry_pb2.WatchResponse) -> None:
        self.revision += 1
        ev.revision = self.revision
        ev.instance_id = self.instance_id
        for q in self.queues:
            q.put_nowait(ev)

    async def Register(self, request, context):  # type: ignore[no-untyped-def]
        roles = [request.tool.role] if request.tool.HasField("role") else self.roles
        for role in roles:
            t = registry_pb2.RegisteredTool(tool=request.tool, role=role)
            t.tool.role = role
            self.tools[(role, request.tool.name)] = t
            self._emit(registry_pb2.WatchResponse(type=registry_pb2.EVENT_TYPE_UPSERTED, tool=t))
        return registry_pb2.RegisterResponse(
            ok=True, registered=request.tool.name, affected_roles=roles
        )

    async def Unregister(self, request, context):  # type: ignore[no-untyped-def]
        n = 0
        for key in [k for k in self.tools if k[1] == request.name]:
            t = self.tools.pop(key)
            n += 1
            self._emit(registry_pb2.WatchResponse(type=registry_pb2.EVENT_TYPE_REMOVED, tool=t))
        return registry_pb2.UnregisterResponse(removed=n)

    async def List(self, request, context):  # type: ignore[no-untyped-def]
        return registry_pb2.ListResponse(tools=list(self.tools.values()), roles=self.roles)

    async def Watch(self, request, context) -> AsyncIterator[registry_pb2.WatchResponse]:  # type: ignore[no-untyped-def]
        q: asyncio.Queue[registry_pb2.WatchResponse] = asyncio.Queue()
        self.queues.add(q)
        try:
            for t in list(self.tools.values()):
                yield registry_pb2.WatchResponse(
                    type=registry_pb2.EVENT_TYPE_UPSERTED, tool=t, instance_id=self.instance_id
                )
            yield registry_pb2.WatchResponse(
                type=registry_pb2.EVENT_TYPE_SYNCED, instance_id=self.instance_id
            )
            while True:
                yield await q.get()
        finally:
            self.queues.discard(q)


async def start_fake_registry(
    address: str = "127.0.0.1:0", roles: list[str] | None = None
) -> ServiceHost:
    servicer = FakeRegistry(roles or ["default"])

    def add(server: grpc.aio.Server) -> None:
        registry_pb2_grpc.add_ToolRegistryServicer_to_server(servicer, server)

    host = ServiceHost(address, ["toolcall.v1.ToolRegistry"], add, grace_s=0.2)
    await host.start()
    return host
