"""Keeping a plugin's tools registered: lease, register, keep alive, re-register.

One background task owns every registry call, so there is no race between
re-registration and run-time changes: it creates a lease, registers every
tool under it, renews the lease every ttl/3, and reconciles the registry with
the plugin's ToolTable whenever ``request_sync`` wakes it.

Failure handling:

* registry unreachable (UNAVAILABLE, DEADLINE_EXCEEDED): retry with
  exponential backoff (0.1 s doubling, capped at 2 s), keeping the lease;
* KeepAlive NOT_FOUND (the lease expired or the registry restarted): create a
  new lease and register everything again at once;
* KeepAlive reports fewer tools than were registered, in any role: register
  them again (per role, so a tool removed from one of its roles is noticed),
  naming them in the log; lost again at the next heartbeat, the log says why
  that usually happens (another plugin registers the same name);
* a tool the registry refuses (INVALID_ARGUMENT, unknown role) is logged
  and not retried until it changes.

``close`` clears the plugin's source and revokes the lease, each bounded by a
short deadline: best effort, since the lease expiry covers a failed goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import grpc

from plugin_stub.local_tools import ToolTable
from toolcall.channels import Backoff, open_channel
from toolcall.clients import auth_metadata, list_all_tools
from toolcall.errors import bad_request_violations
from toolcall.tls import ClientTLS
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

log = logging.getLogger(__name__)

_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


@dataclass(slots=True)
class _Registered:
    definition: tools_pb2.ToolDefinition
    ok: bool
    roles: tuple[str, ...] = ()


class Registrar:
    """Keeps ``tools`` registered at ``registry_address`` under a lease."""

    def __init__(
        self,
        *,
        registry_address: str,
        callback_address: str,
        source: str,
        tools: ToolTable,
        token: str = "",
        lease_ttl_s: float = 6.0,
        tls: ClientTLS | None = None,
    ) -> None:
        self._tls = tls
        self.registry_address = registry_address
        self.callback_address = callback_address
        self.source = source
        self.lease_ttl_s = lease_ttl_s
        self.lease_id: str | None = None
        self.instance_id = ""
        self._tools = tools
        self._metadata = auth_metadata(token)
        self._registered: dict[str, _Registered] = {}
        self._reconciled_version = -1
        self._interval_s = lease_ttl_s / 3
        self._rpc_timeout_s = max(1.0, lease_ttl_s / 3)
        self._next_keepalive = 0.0
        self._wake = asyncio.Event()
        self._synced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.ToolRegistryAsyncStub | None = None
        self._last_problem = ""
        self._losses = 0  # heartbeats in a row that found tools missing

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._channel = open_channel(self.registry_address, tls=self._tls)
        self._stub = registry_pb2_grpc.ToolRegistryStub(self._channel)
        self._task = asyncio.create_task(self._run(), name=f"registrar:{self.source}")

    def request_sync(self) -> None:
        """Asks the loop to push ToolTable changes now (callable from any thread)."""
        if self._loop is None or self._loop.is_closed():
            return
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._mark_dirty()  # at once, so a following wait_synced() waits
        else:
            self._loop.call_soon_threadsafe(self._mark_dirty)

    def _mark_dirty(self) -> None:
        self._synced.clear()
        self._wake.set()

    async def wait_synced(self, timeout_s: float | None = None) -> None:
        """Returns once every tool is registered under a live lease (TimeoutError if not)."""
        async with asyncio.timeout(timeout_s):
            await self._synced.wait()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def close(self, timeout_s: float = 1.0) -> None:
        """Stops the loop, then clears the source and revokes the lease (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._stub is not None and self.lease_id is not None:
            stub, meta = self._stub, self._metadata
            try:
                reply = await stub.Clear(
                    registry_pb2.ClearRequest(source=self.source), metadata=meta, timeout=timeout_s
                )
                await stub.RevokeLease(
                    registry_pb2.RevokeLeaseRequest(lease_id=self.lease_id),
                    metadata=meta,
                    timeout=timeout_s,
                )
                log.info("cleared %d tools of %s and revoked the lease", reply.removed, self.source)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "could not clear %s: %s: %s", self.source, exc.code().name, exc.details()
                )
        self.lease_id = None
        self._synced.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _run(self) -> None:
        backoff = Backoff()
        delay = 0.0
        while True:
            await self._sleep(delay)
            try:
                if self.lease_id is None:
                    await self._new_lease()
                elif time.monotonic() >= self._next_keepalive:
                    await self._keep_alive()
                await self._reconcile()
            except grpc.aio.AioRpcError as exc:
                delay = self._on_error(exc, backoff)
                continue
            except Exception:
                # A bug must not silently end registration: log it and try again.
                log.exception("registration of %s failed", self.source)
                delay = backoff.delay()
                continue
            backoff.reset()
            if self._last_problem:
                log.info("registry at %s is reachable again", self.registry_address)
                self._last_problem = ""
            delay = max(0.0, self._next_keepalive - time.monotonic())

    async def _sleep(self, delay: float) -> None:
        if delay > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        self._wake.clear()

    def _on_error(self, exc: grpc.aio.AioRpcError, backoff: Backoff) -> float:
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            log.warning(
                "lease of %s is gone (expired or the registry restarted); registering again",
                self.source,
            )
            self._forget_lease()
            return 0.0
        problem = f"{code.name}: {exc.details()}"
        if problem != self._last_problem:
            level = logging.WARNING if code in _TRANSIENT else logging.ERROR
            log.log(level, "registry at %s: %s; retrying", self.registry_address, problem)
            self._last_problem = problem
        return backoff.delay()

    def _forget_lease(self) -> None:
        self.lease_id = None
        self._registered.clear()
        self._reconciled_version = -1
        self._synced.clear()

    async def _new_lease(self) -> None:
        assert self._stub is not None
        reply = await self._stub.CreateLease(
            registry_pb2.CreateLeaseRequest(ttl_seconds=self.lease_ttl_s, holder=self.source),
            metadata=self._metadata,
            timeout=self._rpc_timeout_s,
        )
        self._forget_lease()
        self.lease_id, self.instance_id = reply.lease_id, reply.instance_id
        granted = reply.ttl_seconds or self.lease_ttl_s
        self._interval_s = granted / 3
        self._next_keepalive = time.monotonic() + self._interval_s
        log.info(
            "lease %s (ttl %gs) from registry %s at %s",
            reply.lease_id,
            granted,
            reply.instance_id,
            self.registry_address,
        )

    async def _keep_alive(self) -> None:
        assert self._stub is not None and self.lease_id is not None
        reply = await self._stub.KeepAlive(
            registry_pb2.KeepAliveRequest(lease_id=self.lease_id),
            metadata=self._metadata,
            timeout=self._rpc_timeout_s,
        )
        self._next_keepalive = time.monotonic() + (reply.ttl_seconds or self.lease_ttl_s) / 3
        missing = self._missing(reply)
        if not missing:
            self._losses = 0
            return
        self._losses += 1
        names = await self._names_gone()
        self._registered.clear()
        self._reconciled_version = -1
        if names:
            missing += f": {', '.join(names)}"
        hint = ""
        if self._losses > 1:
            # Lost again right after registering: typically a second plugin serving
            # the same name; each registration replaces the other's, every heartbeat.
            hint = (
                "; they keep disappearing right after registering: most likely another "
                "plugin registers the same tool name and the two replace each other "
                "(give the tool another name, or stop the other plugin)"
            )
        log.warning(
            "registry lost tools of %s (%s); registering again%s", self.source, missing, hint
        )

    async def _names_gone(self) -> list[str]:
        """Our tools the registry no longer holds under our source (best effort: [] on error)."""
        assert self._stub is not None
        wanted = {(role, r.definition.name) for r in self._registered.values() for role in r.roles}
        try:
            held, _ = await list_all_tools(
                self._stub,
                registry_pb2.ListRequest(source=self.source),
                timeout_s=self._rpc_timeout_s,
                max_tools=max(1000, 2 * len(wanted)),
                metadata=self._metadata,
            )
        except (grpc.aio.AioRpcError, RuntimeError):
            return []
        gone = wanted - {(t.role, t.tool.name) for t in held}
        return sorted({name for _, name in gone})[:10]

    def _missing(self, reply: registry_pb2.KeepAliveResponse) -> str:
        """Where the registry holds fewer of our tools than we registered ('' if nowhere)."""
        registered = [r for r in self._registered.values() if r.ok]
        if reply.tools < len(registered):
            return f"{reply.tools} of {len(registered)} tools"
        if not reply.tools_per_role:
            return ""  # a registry that does not count per role
        expected: dict[str, int] = {}
        for r in registered:
            for role in r.roles:
                expected[role] = expected.get(role, 0) + 1
        short = [
            f"{reply.tools_per_role.get(role, 0)} of {n} in role {role!r}"
            for role, n in sorted(expected.items())
            if reply.tools_per_role.get(role, 0) < n
        ]
        return "; ".join(short)

    async def _reconcile(self) -> None:
        version = self._tools.version
        if version == self._reconciled_version:
            self._synced.set()
            return
        wanted = {t.name: t.definition(self.callback_address, self.source) for t in self._tools}
        for name, definition in wanted.items():
            current = self._registered.get(name)
            if current is None or current.definition != definition:
                await self._register(definition)
        for name in [n for n in self._registered if n not in wanted]:
            await self._unregister(self._registered.pop(name).definition)
        self._reconciled_version = version
        if self._tools.version == version:
            self._synced.set()

    async def _register(self, definition: tools_pb2.ToolDefinition) -> None:
        assert self._stub is not None
        try:
            reply = await self._stub.Register(
                registry_pb2.RegisterRequest(tool=definition, lease_id=self.lease_id or ""),
                metadata=self._metadata,
                timeout=self._rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
            ):
                raise
            violations = bad_request_violations(exc) or [("", exc.details() or "")]
            log.error(
                "registry refused tool %s: %s",
                definition.name,
                "; ".join(f"{f}: {r}" for f, r in violations),
            )
            self._registered[definition.name] = _Registered(definition, ok=False)
            return
        if reply.failed_roles:
            log.warning(
                "tool %s not registered for: %s",
                definition.name,
                "; ".join(f"{f.role}: {f.error}" for f in reply.failed_roles),
            )
        self._registered[definition.name] = _Registered(
            definition, ok=reply.ok, roles=tuple(reply.affected_roles)
        )

    async def _unregister(self, definition: tools_pb2.ToolDefinition) -> None:
        assert self._stub is not None
        request = registry_pb2.UnregisterRequest(name=definition.name)
        if definition.HasField("role"):
            request.role = definition.role
        await self._stub.Unregister(request, metadata=self._metadata, timeout=self._rpc_timeout_s)
