"""ToolRegistry over gRPC: validate, translate, delegate to ``Registry``.

Access control (local peers, token) is not here: the ``MutationGate``
interceptor applies it before these methods run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from registry_service import paging, wire
from registry_service.archive import ArchiveError
from registry_service.leases import UnknownLeaseError, ttl_error
from registry_service.registry import Registry, RegistryFullError, ToolNotFoundError
from registry_service.store import Entry, UnknownRoleError
from registry_service.watch import Closed, Overflowed, WatchLimitError
from toolcall.errors import abort_invalid
from toolcall.jsonvalue import from_struct
from toolcall.tools import DefinitionError, ToolSpec, control_error
from toolcall.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)


RoleScoped = (
    registry_pb2.UnregisterRequest
    | registry_pb2.ClearRequest
    | registry_pb2.ListRequest
    | registry_pb2.InvokeRequest
    | registry_pb2.WatchRequest
)


async def _optional_role(request: RoleScoped, context: grpc.aio.ServicerContext) -> str | None:
    """The request's role, or None when unset; a set but empty role is INVALID_ARGUMENT."""
    if not request.HasField("role"):
        return None
    if not request.role:
        await abort_invalid(
            context, [("role", "must not be empty when set; leave it unset for all roles")]
        )
    await _printable(context, role=request.role)
    return request.role


async def _printable(context: grpc.aio.ServicerContext, **fields: str) -> None:
    """INVALID_ARGUMENT naming each field that holds control characters (they would
    reach logs and terminals, e.g. through ``toolcall tools list``)."""
    bad = [(f, err) for f, value in fields.items() if (err := control_error(value))]
    if bad:
        await abort_invalid(context, bad)


async def _not_found(context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    raise AssertionError("unreachable")  # abort always raises


async def _unstored(context: grpc.aio.ServicerContext, exc: ArchiveError) -> NoReturn:
    # Nothing changed (the write comes first); retrying is safe once the disk is fixed.
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; nothing was changed")
    raise AssertionError("unreachable")


class RegistryServicer(registry_pb2_grpc.ToolRegistryServicer):
    def __init__(self, registry: Registry[registry_pb2.WatchResponse]) -> None:
        self.registry = registry

    async def Register(
        self, request: registry_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisterResponse:
        if not request.HasField("tool"):
            await abort_invalid(context, [("tool", "is required")])
        try:
            spec = ToolSpec.from_definition(request.tool, remote=self.registry.dispatcher.remote)
        except DefinitionError as exc:
            await abort_invalid(context, exc.violations)
        try:
            outcome = await self.registry.register(spec, request.lease_id)
        except UnknownLeaseError as exc:
            await _not_found(context, exc)
        except RegistryFullError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ArchiveError as exc:
            await _unstored(context, exc)
        return registry_pb2.RegisterResponse(
            ok=bool(outcome.affected_roles),
            registered=outcome.name,
            affected_roles=outcome.affected_roles,
            failed_roles=[
                registry_pb2.RoleFailure(role=r, error=e) for r, e in outcome.failed_roles
            ],
        )

    async def Unregister(
        self, request: registry_pb2.UnregisterRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.UnregisterResponse:
        if not request.name:
            await abort_invalid(context, [("name", "is required")])
        await _printable(context, name=request.name)
        role = await _optional_role(request, context)
        try:
            removed = await self.registry.unregister(request.name, role)
        except ArchiveError as exc:
            await _unstored(context, exc)
        return registry_pb2.UnregisterResponse(
            removed=len(removed), affected_roles=[e.role for e in removed]
        )

    async def Clear(
        self, request: registry_pb2.ClearRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ClearResponse:
        if not request.source:
            await abort_invalid(
                context, [("source", "is required (the source tag whose tools to remove)")]
            )
        await _printable(context, source=request.source)
        role = await _optional_role(request, context)
        try:
            removed = await self.registry.clear(request.source, role)
        except ArchiveError as exc:
            await _unstored(context, exc)
        return registry_pb2.ClearResponse(removed=len(removed))

    async def List(
        self, request: registry_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListResponse:
        await _printable(context, source=request.source)
        role = await _optional_role(request, context)
        if err := paging.page_size_error(request.page_size):
            await abort_invalid(context, [("page_size", err)])
        after = None
        if request.page_token:
            try:
                after = paging.decode_token(request.page_token, role, request.source)
            except paging.PageTokenError as exc:
                await abort_invalid(context, [("page_token", str(exc))])
        try:
            self.registry.check_role(role)
        except UnknownRoleError as exc:
            await _not_found(context, exc)
        reply = registry_pb2.ListResponse(roles=self.registry.roles)
        limit = paging.effective_page_size(request.page_size)
        budget = paging.MAX_PAGE_BYTES
        stats = self.registry.stats
        last: Entry | None = None
        # Synchronous to the end: no change can happen while the page is built.
        for entry in self.registry.store.iter_entries(role, request.source, after):
            if len(reply.tools) == limit:
                break
            out = reply.tools.add()
            wire.fill_registered_tool(out, entry, stats(entry.spec.name))
            budget -= out.ByteSize()
            if budget < 0 and len(reply.tools) > 1:
                del reply.tools[-1]  # over the page's byte budget: it starts the next page
                break
            last = entry
        else:
            return reply  # the matches ran out: last page
        if last is not None:
            reply.next_page_token = paging.encode_token(last.key, role, request.source)
        return reply

    async def Invoke(
        self, request: registry_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.InvokeResponse:
        if not request.name:
            await abort_invalid(context, [("name", "is required")])
        await _printable(context, name=request.name)
        role = await _optional_role(request, context)
        try:
            entry = self.registry.lookup(request.name, role)
        except (UnknownRoleError, ToolNotFoundError) as exc:
            await _not_found(context, exc)
        use_struct = not request.raw_arguments and request.HasField("arguments")
        # A cancelled caller cancels this task, and with it the call to the plugin.
        call = await self.registry.invoke(
            entry,
            arguments=from_struct(request.arguments) if use_struct else None,
            raw_arguments=request.raw_arguments,
            call_id=request.call_id,
            session_id=request.session_id,
            timeout_s=context.time_remaining(),
        )
        return registry_pb2.InvokeResponse(
            result=call.result, call_id=call.call_id, latency_ms=call.latency_ms
        )

    async def Watch(
        self, request: registry_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.WatchResponse]:
        role = await _optional_role(request, context)
        try:
            entries, watcher = self.registry.watch(role)
        except UnknownRoleError as exc:
            await _not_found(context, exc)
        except WatchLimitError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        revision = self.registry.store.revision
        instance_id = self.registry.instance_id
        stats = self.registry.stats
        try:
            for entry in entries:
                event = registry_pb2.WatchResponse(
                    type=registry_pb2.EVENT_TYPE_UPSERTED,
                    reason="snapshot",
                    revision=revision,
                    instance_id=instance_id,
                )
                wire.fill_registered_tool(event.tool, entry, stats(entry.spec.name))
                yield event
            # Roles and limits ride on SYNCED: a watcher never needs a List.
            yield registry_pb2.WatchResponse(
                type=registry_pb2.EVENT_TYPE_SYNCED,
                revision=revision,
                instance_id=instance_id,
                registry=registry_pb2.RegistryInfo(
                    roles=self.registry.roles,
                    max_tools=self.registry.max_tools,
                    max_definition_bytes=self.registry.max_definition_bytes,
                ),
            )
            while True:
                try:
                    event = await watcher.next()
                except Overflowed as exc:
                    log.warning("dropping a slow watcher from %s: %s", context.peer(), exc)
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"watcher fell behind ({exc}); watch again to resync",
                    )
                except Closed:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE, "the registry is shutting down"
                    )
                yield event
        finally:
            watcher.close()

    async def CreateLease(
        self, request: registry_pb2.CreateLeaseRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.CreateLeaseResponse:
        if err := ttl_error(request.ttl_seconds):
            await abort_invalid(context, [("ttl_seconds", err)])
        lease = self.registry.create_lease(request.ttl_seconds, request.holder)
        return registry_pb2.CreateLeaseResponse(
            lease_id=lease.lease_id,
            ttl_seconds=lease.ttl_s,
            instance_id=self.registry.instance_id,
        )

    async def KeepAlive(
        self, request: registry_pb2.KeepAliveRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.KeepAliveResponse:
        if not request.lease_id:
            await abort_invalid(context, [("lease_id", "is required")])
        try:
            lease, tools, per_role = self.registry.keep_alive(request.lease_id)
        except UnknownLeaseError as exc:
            await _not_found(context, exc)
        return registry_pb2.KeepAliveResponse(
            ttl_seconds=lease.ttl_s, tools=tools, tools_per_role=per_role
        )

    async def RevokeLease(
        self, request: registry_pb2.RevokeLeaseRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RevokeLeaseResponse:
        if not request.lease_id:
            await abort_invalid(context, [("lease_id", "is required")])
        try:
            removed = self.registry.revoke_lease(request.lease_id)
        except UnknownLeaseError as exc:
            await _not_found(context, exc)
        return registry_pb2.RevokeLeaseResponse(removed=len(removed))
