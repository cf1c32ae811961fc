"""Where the registry's tools and leases live: the storage interface and its SQLite backend.

``Registry`` keeps every tool in memory (``store.ToolStore``, the view that
List, Invoke and Watch read) and hands each change to a ``Storage``, which
makes it durable and applies it to that view. Two backends:

- ``SqliteStorage`` (the embedded default, one process): leases in memory,
  tools registered without a lease in the SQLite archive, written before the
  view changes. Revisions count changes since start.
- ``EtcdStorage`` (``registry_service.etcd_storage``, several replicas): every
  tool is an etcd key, leases are etcd leases, and the view is fed by an etcd
  watch, so a change made through any replica reaches every replica's view.
  Revisions are etcd's.

Either way, a change call returns once the view holds it (read your writes),
and raises ``StorageError`` when it cannot be stored.
"""

from __future__ import annotations

import logging
from typing import Protocol

from registry_service.archive import StoredTool, ToolArchive
from registry_service.leases import Lease, LeaseTable, UnknownLeaseError
from registry_service.store import Entry, Key, StorageError, ToolStore
from toolcall.address_policy import RemoteAllowList
from toolcall.tools import DefinitionError, ToolSpec

log = logging.getLogger(__name__)

LEASE_EXPIRED = "lease expired"
LEASE_REVOKED = "lease revoked"


class Storage(Protocol):
    """What the registry needs from a backend; every method may raise StorageError."""

    #: "sqlite" or "etcd" (logs, RegistryInfo).
    kind: str

    async def open(self, store: ToolStore, remote: RemoteAllowList | None = None) -> None:
        """Fills ``store`` with what is stored and keeps it up to date until ``close``.

        ``remote``: the operator's allow-list of plugins on other hosts, which
        stored definitions are checked against as at Register."""

    async def close(self) -> None: ...

    def describe(self) -> str:
        """Where the state lives, for the startup log line."""

    def instance_id(self, local: str) -> str:
        """The id watchers compare to notice a registry that lost its state.

        ``local`` is this run's own id."""

    async def put(self, entries: list[Entry], lease_id: str) -> None:
        """Adds or replaces ``entries`` (all bound to ``lease_id``, or none).

        Raises UnknownLeaseError when the lease is gone (nothing changed).
        """

    async def remove(self, keys: list[Key], reason: str) -> list[Entry]:
        """Removes the entries of ``keys`` that exist; returns them."""

    async def create_lease(self, ttl_s: float, holder: str) -> Lease: ...

    async def renew_lease(self, lease_id: str) -> Lease:
        """Raises UnknownLeaseError."""

    async def revoke_lease(self, lease_id: str) -> list[Entry]:
        """Ends the lease and removes its tools; raises UnknownLeaseError."""

    def sweep(self) -> list[Entry]:
        """Removes the tools of leases that expired here (etcd expires its leases itself)."""


def restore(
    store: ToolStore, stored: list[StoredTool], remote: RemoteAllowList | None = None
) -> int:
    """Puts stored tools into ``store``; skips (with a warning) what cannot be served."""
    loaded = 0
    for tool in stored:
        if not store.has_role(tool.role):
            log.warning(
                "stored tool %r of role %r not loaded: role not served (roles: %s)",
                tool.definition.name,
                tool.role,
                ", ".join(store.roles),
            )
            continue
        try:
            spec = ToolSpec.from_definition(tool.definition, remote=remote)
        except DefinitionError as exc:
            log.warning("stored tool %r not loaded: %s", tool.definition.name, exc)
            continue
        store.put(Entry.create(spec, tool.role, registered_at=tool.registered_at))
        loaded += 1
    if stored:
        log.info("restored %d stored tools", loaded)
    return loaded


class SqliteStorage:
    """One process: leases in memory, leaseless tools in SQLite (``archive=None``: memory only)."""

    kind = "sqlite"

    def __init__(self, archive: ToolArchive | None) -> None:
        self.archive = archive
        self.leases = LeaseTable()
        self._store: ToolStore | None = None

    @property
    def store(self) -> ToolStore:
        assert self._store is not None, "storage not opened"
        return self._store

    async def open(self, store: ToolStore, remote: RemoteAllowList | None = None) -> None:
        self._store = store
        if self.archive is not None:
            restore(store, await self.archive.open(), remote)

    async def close(self) -> None:
        if self.archive is not None:
            await self.archive.close()

    def describe(self) -> str:
        return str(self.archive.path) if self.archive is not None else "memory"

    def instance_id(self, local: str) -> str:
        return local

    async def put(self, entries: list[Entry], lease_id: str) -> None:
        if lease_id:
            self.leases.get(lease_id)
        deleted = await self._persist(entries, [])
        if lease_id and lease_id not in self.leases:
            # The lease ended during the write: the rows it replaced are
            # gone from the file, so their tools go from memory too.
            self.store.remove(deleted, LEASE_EXPIRED)
            raise UnknownLeaseError(lease_id)
        for entry in entries:
            self.store.put(entry)

    async def remove(self, keys: list[Key], reason: str) -> list[Entry]:
        await self._persist([], keys)
        return self.store.remove(keys, reason)

    async def _persist(self, put: list[Entry], removed: list[Key]) -> list[Key]:
        """Writes what the archive needs for this change, before memory changes: an
        ArchiveError leaves both as they were. Returns the keys whose rows were deleted."""
        if self.archive is None:
            return []
        puts, deletes = self.archive.changes_for(put, removed)
        await self.archive.write(puts, deletes)
        return deletes

    async def create_lease(self, ttl_s: float, holder: str) -> Lease:
        return self.leases.create(ttl_s, holder)

    async def renew_lease(self, lease_id: str) -> Lease:
        return self.leases.renew(lease_id)

    async def revoke_lease(self, lease_id: str) -> list[Entry]:
        self.leases.revoke(lease_id)
        return self.store.remove_lease(lease_id, LEASE_REVOKED)

    def sweep(self) -> list[Entry]:
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


__all__ = [
    "LEASE_EXPIRED",
    "LEASE_REVOKED",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "restore",
]
