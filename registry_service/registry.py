"""The registry's behaviour, without gRPC: register, remove, look up, call, lease.

``Registry`` ties together the role tables (``store``), leases and their
sweeper, the SQLite archive of leaseless tools, Watch fan-out and the shared
``Dispatcher`` that calls plugins. The servicer only translates messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from registry_service.archive import ArchiveError, StoredTool, ToolArchive
from registry_service.leases import Lease, LeaseTable, UnknownLeaseError
from registry_service.stats import ToolStats
from registry_service.store import Change, Entry, Key, ToolStore, UnknownRoleError
from registry_service.watch import DEFAULT_QUEUE_SIZE, Watcher, WatchHub
from toolcall.address_policy import canonical_address
from toolcall.dispatch import Dispatcher
from toolcall.ids import new_call_id
from toolcall.tools import DefinitionError, ToolSpec
from toolcall.v1 import tools_pb2

log = logging.getLogger(__name__)

M = TypeVar("M")

LEASE_EXPIRED = "lease expired"
LEASE_REVOKED = "lease revoked"


# Limits of one registry (RegistrySettings): every entry is held in memory,
# in each watcher's view (the LLMService's), and in a full listing.
DEFAULT_MAX_TOOLS = 25_000
DEFAULT_MAX_DEFINITION_BYTES = 128 * 1024 * 1024


class ToolNotFoundError(LookupError):
    pass


class RegistryFullError(Exception):
    """A registration would take the registry past ``max_tools`` or ``max_definition_bytes``."""


@dataclass(slots=True)
class Registration:
    """Outcome of ``Registry.register``."""

    name: str
    affected_roles: list[str] = field(default_factory=list)
    failed_roles: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Call:
    """Outcome of ``Registry.invoke``."""

    result: tools_pb2.ToolResult
    call_id: str
    latency_ms: float


class Registry(Generic[M]):
    """The registry. ``to_message(change, stats, instance_id)`` builds a Watch event.

    It runs once per change; every watcher gets the same message.
    """

    def __init__(
        self,
        roles: list[str],
        *,
        to_message: Callable[[Change, ToolStats | None, str], M],
        archive: ToolArchive | None = None,
        dispatcher: Dispatcher | None = None,
        sweep_interval_s: float = 0.25,
        watch_queue_size: int = DEFAULT_QUEUE_SIZE,
        max_tools: int = DEFAULT_MAX_TOOLS,
        max_definition_bytes: int = DEFAULT_MAX_DEFINITION_BYTES,
    ) -> None:
        self.instance_id = secrets.token_hex(8)
        self.max_tools = max_tools
        self.max_definition_bytes = max_definition_bytes
        self.store = ToolStore(roles)
        self.leases = LeaseTable()
        self.archive = archive
        self.dispatcher = dispatcher or Dispatcher()
        self._stats: dict[str, ToolStats] = {}
        # Callback address of each entry and how many entries use it, so the
        # dispatcher's channel to an address closes with its last tool.
        self._addresses: dict[Key, str] = {}
        self._address_users: dict[str, int] = {}
        self.store.subscribe(self._track_address)
        self.hub: WatchHub[M] = WatchHub(
            lambda c: to_message(c, self.stats(c.entry.spec.name), self.instance_id),
            queue_size=watch_queue_size,
        )
        self.sweep_interval_s = sweep_interval_s
        self._sweeper: asyncio.Task[None] | None = None
        # Register, Unregister and Clear one at a time: each checks, writes the
        # archive, then applies, and no other change may come in between.
        self._changing = asyncio.Lock()

    @property
    def roles(self) -> list[str]:
        return self.store.roles

    def stats(self, name: str) -> ToolStats | None:
        """Calls made through ``invoke`` (the LLMService's direct calls are not seen here)."""
        return self._stats.get(name)

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        """Loads the archived tools, then starts following changes and sweeping leases."""
        if self.archive is not None:
            self._restore(await self.archive.open())
        self.store.subscribe(self.hub.publish)
        self.store.subscribe(self._forget_stats)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="registry-lease-sweeper")

    def _restore(self, stored: list[StoredTool]) -> None:
        loaded = 0
        for tool in stored:
            if not self.store.has_role(tool.role):
                log.warning(
                    "stored tool %r of role %r not loaded: role not served (roles: %s)",
                    tool.definition.name,
                    tool.role,
                    ", ".join(self.roles),
                )
                continue
            try:
                spec = ToolSpec.from_definition(tool.definition, remote=self.dispatcher.remote)
            except DefinitionError as exc:
                log.warning("stored tool %r not loaded: %s", tool.definition.name, exc)
                continue
            self.store.put(Entry.create(spec, tool.role, registered_at=tool.registered_at))
            loaded += 1
        if stored:
            log.info("restored %d stored tools", loaded)
        # Stored tools were acknowledged: all are loaded even past lowered
        # limits; new registrations are refused until the registry is back under.
        store = self.store
        if len(store) > self.max_tools or store.definition_bytes > self.max_definition_bytes:
            log.warning(
                "the stored tools exceed the limits (%d entries of at most %d, %d definition "
                "bytes of at most %d): registrations are refused until tools are removed",
                len(self.store),
                self.max_tools,
                self.store.definition_bytes,
                self.max_definition_bytes,
            )

    def _forget_stats(self, change: Change) -> None:
        # Stats are per tool name; drop them once no role has the tool, so
        # churn of short-lived tools does not grow memory.
        name = change.entry.spec.name
        if change.removed and self.store.find(name, None) is None:
            self._stats.pop(name, None)

    def _track_address(self, change: Change) -> None:
        key = change.entry.key
        old = self._addresses.pop(key, None)
        new = None if change.removed else canonical_address(change.entry.spec.callback_address)
        if old == new:
            if new is not None:
                self._addresses[key] = new
            return
        if new is not None:
            self._addresses[key] = new
            self._address_users[new] = self._address_users.get(new, 0) + 1
        if old is not None:
            left = self._address_users[old] - 1
            if left:
                self._address_users[old] = left
            else:
                del self._address_users[old]
                self.dispatcher.release(old)

    def end_watches(self) -> None:
        """Ends every Watch stream (shutdown); watchers reconnect elsewhere or later."""
        self.hub.close_all()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self.hub.close_all()
        await self.dispatcher.close()
        if self.archive is not None:
            await self.archive.close()

    # -- changes ---------------------------------------------------------

    async def register(self, spec: ToolSpec, lease_id: str = "") -> Registration:
        """Adds or replaces ``spec`` in its role (unset: every role).

        Raises UnknownLeaseError, RegistryFullError, or ArchiveError (the change
        cannot be stored; nothing changed); an unknown role is reported in the
        outcome.
        """
        if lease_id:
            self.leases.get(lease_id)
        outcome = Registration(spec.name)
        if spec.role is not None:
            if err := self.store.role_error(spec.role):
                outcome.failed_roles.append((spec.role, err))
                return outcome
            roles = [spec.role]
        else:
            roles = self.roles
        now = time.time()
        entries = [Entry.create(spec, role, lease_id, now) for role in roles]
        async with self._changing:
            self._check_room(entries)
            deleted = await self._persist(entries, [])
            if lease_id and lease_id not in self.leases:
                # The lease ended during the write: the rows it replaced are
                # gone from the file, so their tools go from memory too.
                self.store.remove(deleted, LEASE_EXPIRED)
                raise UnknownLeaseError(lease_id)
            for entry in entries:
                old = self.store.put(entry)
                outcome.affected_roles.append(entry.role)
                log.debug(
                    "%s %r in role %r", "replaced" if old else "registered", spec.name, entry.role
                )
        return outcome

    def _check_room(self, entries: list[Entry]) -> None:
        """Raises RegistryFullError when adding ``entries`` (replacing same keys) breaks a limit."""
        count, size = len(self.store), self.store.definition_bytes
        for entry in entries:
            old = self.store.find(entry.spec.name, entry.role)
            count += old is None
            size += entry.size - (old.size if old is not None else 0)
        name = entries[0].spec.name
        if count > self.max_tools and count > len(self.store):
            raise RegistryFullError(
                f"registering {name!r} in {len(entries)} role(s) would make {count} (role, tool) "
                f"entries; this registry holds at most {self.max_tools} (TOOLCALL_MAX_TOOLS). "
                "Unregister or clear tools first"
            )
        if size > self.max_definition_bytes and size > self.store.definition_bytes:
            raise RegistryFullError(
                f"registering {name!r} would make {size} bytes of tool definitions; this registry "
                f"holds at most {self.max_definition_bytes} (TOOLCALL_MAX_DEFINITION_BYTES). "
                "Unregister or clear tools first"
            )

    async def unregister(self, name: str, role: str | None) -> list[Entry]:
        """Raises ArchiveError (nothing removed) when the removal cannot be stored."""
        async with self._changing:
            keys = self.store.unregister_keys(name, role)
            await self._persist([], keys)
            return self.store.remove(keys, "unregistered")

    async def clear(self, source: str, role: str | None) -> list[Entry]:
        """Raises ArchiveError (nothing removed) when the removal cannot be stored."""
        async with self._changing:
            keys = self.store.clear_keys(source, role)
            await self._persist([], keys)
            return self.store.remove(keys, "cleared")

    async def _persist(self, put: list[Entry], removed: list[Key]) -> list[Key]:
        """Writes what the archive needs for this change, before memory changes: an
        ArchiveError leaves both as they were. Returns the keys whose rows were deleted."""
        if self.archive is None:
            return []
        puts, deletes = self.archive.changes_for(put, removed)
        await self.archive.write(puts, deletes)
        return deletes

    # -- reading ---------------------------------------------------------

    def check_role(self, role: str | None) -> None:
        if role is not None and (err := self.store.role_error(role)):
            raise UnknownRoleError(err)

    def lookup(self, name: str, role: str | None) -> Entry:
        """Raises UnknownRoleError or ToolNotFoundError."""
        self.check_role(role)
        entry = self.store.find(name, role)
        if entry is None:
            where = f"role {role[:80]!r}" if role is not None else "any role"
            raise ToolNotFoundError(f"tool {name[:80]!r} is not registered in {where}")
        return entry

    def watch(self, role: str | None) -> tuple[list[Entry], Watcher[M]]:
        """The current entries and a watcher for every later change (atomically).

        Raises UnknownRoleError, or WatchLimitError when too many streams are open.
        """
        self.check_role(role)
        watcher = self.hub.watch(role)
        return self.store.entries(role), watcher

    async def invoke(
        self,
        entry: Entry,
        *,
        arguments: dict[str, Any] | None,
        raw_arguments: str,
        call_id: str,
        session_id: str,
        timeout_s: float | None,
    ) -> Call:
        """Runs the tool now, even an ASYNC one (background handling is the LLMService's)."""
        call_id = call_id or new_call_id()
        started = time.perf_counter()
        result = await self.dispatcher.invoke(
            entry.spec,
            arguments=arguments,
            raw_arguments=raw_arguments,
            call_id=call_id,
            session_id=session_id,
            role=entry.role,
            timeout_s=timeout_s,
        )
        latency_ms = (time.perf_counter() - started) * 1000.0
        name = entry.spec.name
        stats = self._stats.get(name)
        # A tool removed during the call gets no stats back (they were dropped).
        if stats is None and self.store.find(name, None) is not None:
            stats = self._stats[name] = ToolStats()
        if stats is not None:
            stats.record(latency_ms, result.error if result.is_error else None)
        return Call(result, call_id, latency_ms)

    # -- leases ----------------------------------------------------------

    def create_lease(self, ttl_s: float, holder: str) -> Lease:
        lease = self.leases.create(ttl_s, holder)
        log.info("lease %s for %s (ttl %gs)", lease.lease_id, holder or "?", lease.ttl_s)
        return lease

    def keep_alive(self, lease_id: str) -> tuple[Lease, int, dict[str, int]]:
        """Renews the lease; returns it, how many tools it holds, and how many per role."""
        lease = self.leases.renew(lease_id)
        store = self.store
        return lease, store.lease_tool_count(lease_id), store.lease_tools_per_role(lease_id)

    def revoke_lease(self, lease_id: str) -> list[Entry]:
        lease = self.leases.revoke(lease_id)
        removed = self.store.remove_lease(lease_id, LEASE_REVOKED)
        log.info("lease %s of %s revoked: %d tools removed", lease_id, lease.holder, len(removed))
        return removed

    def sweep(self) -> list[Entry]:
        """Removes the tools of expired leases."""
        removed: list[Entry] = []
        for lease in self.leases.expired():
            gone = self.store.remove_lease(lease.lease_id, LEASE_EXPIRED)
            log.warning(
                "lease %s of %s expired: %d tools removed",
                lease.lease_id,
                lease.holder or "?",
                len(gone),
            )
            removed.extend(gone)
        return removed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                self.sweep()
            except Exception:
                log.exception("lease sweep failed")


__all__ = [
    "LEASE_EXPIRED",
    "LEASE_REVOKED",
    "ArchiveError",
    "Call",
    "Registration",
    "Registry",
    "RegistryFullError",
    "ToolNotFoundError",
    "UnknownLeaseError",
    "UnknownRoleError",
]
