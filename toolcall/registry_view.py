"""A live, cached view of the registry's tools, fed by one ``ToolRegistry.Watch`` stream.

The chat path reads tools from here and never pays a registry round trip.
The stream starts with a snapshot (UPSERTED events, then SYNCED); later
events keep the view current. When the stream breaks (the registry stopped or
restarted), the view keeps serving the last known tools while it reconnects
with backoff, then replaces them with the fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable

import grpc

from toolcall.address_policy import RemoteAllowList
from toolcall.channels import Backoff, open_channel
from toolcall.tls import ClientTLS
from toolcall.tools import DefinitionError, ToolSpec
from toolcall.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

Tools = dict[str, dict[str, ToolSpec]]  # role -> name -> spec
# Called with (tools gone, tools added) each time the served tools change.
ToolsChanged = Callable[[Iterable[ToolSpec], Iterable[ToolSpec]], None]


class RegistryView:
    def __init__(
        self,
        registry_address: str,
        on_change: ToolsChanged | None = None,
        *,
        tls: ClientTLS | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
        remote: RemoteAllowList | None = None,
    ) -> None:
        self.registry_address = registry_address
        # How the Watch authenticates (toolcall/tls.py, toolcall/auth.py).
        self._tls = tls
        self._metadata = metadata
        # Plugins on other hosts this service may dial (toolcall/address_policy.py).
        self._remote = remote
        # Change hooks: the owner's, and those of other readers sharing the view
        # (the gateway's MCP bridge and its web console read one view).
        self._hooks: list[ToolsChanged] = [on_change] if on_change is not None else []
        self._tools: Tools = {}
        # Roles the registry serves (from each Watch's SYNCED event); None until
        # the first sync. Never from List: a large registry's full List would
        # not fit in one message, and role checks would silently stop.
        self.roles: frozenset[str] | None = None
        self.instance_id = ""
        self.revision = 0
        self._synced = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # -- reads (the chat path) --------------------------------------------

    def tools_for(self, role: str) -> list[ToolSpec]:
        return sorted(self._tools.get(role, {}).values(), key=lambda t: t.name)

    def get(self, role: str, name: str) -> ToolSpec | None:
        return self._tools.get(role, {}).get(name)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """True once a snapshot has been received (False on timeout)."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_for(
        self, role: str, name: str, *, timeout_s: float, present: bool = True
    ) -> bool:
        """Waits until tool ``name`` is (or, with present=False, is no longer) visible."""

        def done() -> bool:
            return (self.get(role, name) is not None) == present

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(done), timeout_s)
            except TimeoutError:
                return False
        return True

    def add_change_hook(self, hook: ToolsChanged) -> None:
        """Also calls ``hook(gone, added)`` each time the served tools change."""
        self._hooks.append(hook)

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                async with open_channel(self.registry_address, tls=self._tls) as ch:
                    stub: registry_pb2_grpc.ToolRegistryAsyncStub = (
                        registry_pb2_grpc.ToolRegistryStub(ch)
                    )
                    async for _ in self._follow(stub):
                        backoff.reset()  # got a snapshot: the registry is healthy
                log.warning("registry watch stream ended; reconnecting")
            except grpc.aio.AioRpcError as exc:
                log.log(
                    logging.DEBUG if self.synced else logging.INFO,
                    "registry at %s: %s %s; retrying in %.1fs",
                    self.registry_address,
                    exc.code().name,
                    exc.details(),
                    backoff.peek(),
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("registry watch failed; reconnecting")
            await asyncio.sleep(backoff.delay())

    async def _follow(self, stub: registry_pb2_grpc.ToolRegistryAsyncStub) -> AsyncIterator[None]:
        """Applies one Watch stream; yields once each time a snapshot is complete."""
        snapshot: Tools | None = {}
        # wait_for_ready: a registry that is starting up is waited for, not failed.
        async for event in stub.Watch(
            registry_pb2.WatchRequest(), wait_for_ready=True, metadata=self._metadata
        ):
            target = snapshot if snapshot is not None else self._tools
            role, name = event.tool.role, event.tool.tool.name
            before = self.get(role, name) if snapshot is None else None
            if event.type == registry_pb2.EVENT_TYPE_UPSERTED:
                _upsert(target, event.tool, self._remote)
            elif event.type == registry_pb2.EVENT_TYPE_REMOVED:
                target.get(role, {}).pop(name, None)
            elif event.type == registry_pb2.EVENT_TYPE_SYNCED and snapshot is not None:
                gone, self._tools, snapshot = self._tools, snapshot, None
                self._changed_tools(_specs(gone), _specs(self._tools))
                if event.HasField("registry"):
                    self.roles = frozenset(event.registry.roles)
                else:  # a registry older than RegistryInfo: keep the last known roles
                    log.warning("the registry's SYNCED event carries no roles")
                if event.instance_id != self.instance_id:
                    log.info(
                        "registry view synced with instance %s: %d tools",
                        event.instance_id,
                        sum(len(t) for t in self._tools.values()),
                    )
                self.instance_id = event.instance_id
                self._synced.set()
                yield
            if snapshot is None and (after := self.get(role, name)) is not before:
                self._changed_tools([before] if before else [], [after] if after else [])
            self.revision = event.revision
            if snapshot is None:
                async with self._changed:
                    self._changed.notify_all()

    def _changed_tools(self, gone: Iterable[ToolSpec], added: Iterable[ToolSpec]) -> None:
        gone, added = list(gone), list(added)
        for hook in self._hooks:
            try:
                hook(gone, added)
            except Exception:
                log.exception("registry view change hook failed")


def _specs(tools: Tools) -> list[ToolSpec]:
    return [spec for by_name in tools.values() for spec in by_name.values()]


def _upsert(
    target: Tools, entry: registry_pb2.RegisteredTool, remote: RemoteAllowList | None
) -> None:
    try:
        spec = ToolSpec.from_definition(entry.tool, remote=remote)
    except DefinitionError as exc:
        log.warning("ignoring invalid tool %r from the registry: %s", entry.tool.name, exc)
        return
    target.setdefault(entry.role, {})[spec.name] = spec
