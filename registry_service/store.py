"""Registry state: per-role tool tables, indexes, and change notification.

No gRPC here. Each role has its own table keyed by tool name (like the seed's
per-persona registries); a tool registered without a role is written into
every role's table. Indexes by source and by lease keep Clear and lease
expiry proportional to what they remove, not to the registry's size.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2

Key = tuple[str, str]  # (role, name)


@dataclass(slots=True)
class Entry:
    """One tool in one role's table. Replaced, never mutated."""

    spec: ToolSpec
    role: str
    lease_id: str = ""
    registered_at: float = field(default_factory=time.time)
    # The definition as this role sees it (role field set); built once here
    # so List and Watch only copy it.
    definition: tools_pb2.ToolDefinition = field(default_factory=tools_pb2.ToolDefinition)
    # Serialized size of ``definition``: what the registry's byte limit counts.
    size: int = 0

    @property
    def key(self) -> Key:
        return (self.role, self.spec.name)

    @classmethod
    def create(
        cls, spec: ToolSpec, role: str, lease_id: str = "", registered_at: float | None = None
    ) -> Entry:
        definition = tools_pb2.ToolDefinition()
        definition.CopyFrom(spec.definition)
        definition.role = role
        return cls(
            spec=spec,
            role=role,
            lease_id=lease_id,
            registered_at=time.time() if registered_at is None else registered_at,
            definition=definition,
            size=definition.ByteSize(),
        )


@dataclass(slots=True, frozen=True)
class Change:
    """One change of the registry; ``revision`` counts changes since start."""

    removed: bool
    entry: Entry
    reason: str
    revision: int


class UnknownRoleError(LookupError):
    pass


class ToolStore:
    def __init__(self, roles: list[str]) -> None:
        self.roles = sorted(set(roles))
        self._tables: dict[str, dict[str, Entry]] = {r: {} for r in self.roles}
        # Sorted names per role, rebuilt lazily after a change (List is sorted).
        self._sorted: dict[str, list[str] | None] = dict.fromkeys(self.roles)
        self._by_source: dict[str, set[Key]] = defaultdict(set)
        self._by_lease: dict[str, set[Key]] = defaultdict(set)
        self.revision = 0
        self._listeners: list[Callable[[Change], None]] = []
        # Running totals, for the registry's limits (len() and definition_bytes).
        self._count = 0
        self.definition_bytes = 0

    def __len__(self) -> int:
        """(role, tool) entries held."""
        return self._count

    def count(self, role: str) -> int:
        """Tools of ``role`` (0 for a role not served)."""
        return len(self._tables.get(role, ()))

    def subscribe(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """Calls ``listener`` on every change; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, removed: bool, entry: Entry, reason: str) -> None:
        self.revision += 1
        self._sorted[entry.role] = None
        change = Change(removed, entry, reason, self.revision)
        for listener in list(self._listeners):
            listener(change)

    def _index(self, entry: Entry) -> None:
        self._by_source[entry.spec.source].add(entry.key)
        if entry.lease_id:
            self._by_lease[entry.lease_id].add(entry.key)

    def _unindex(self, entry: Entry) -> None:
        for index, tag in ((self._by_source, entry.spec.source), (self._by_lease, entry.lease_id)):
            keys = index.get(tag)
            if keys is not None:
                keys.discard(entry.key)
                if not keys:
                    del index[tag]

    def has_role(self, role: str) -> bool:
        return role in self._tables

    def role_error(self, role: str) -> str | None:
        """Why ``role`` cannot be used, or None when this registry serves it."""
        if role in self._tables:
            return None
        return f"unknown role {role[:80]!r}; this registry serves: {', '.join(self.roles)}"

    def put(self, entry: Entry, reason: str = "registered") -> Entry | None:
        """Adds or replaces ``entry`` in its role's table; returns the replaced entry."""
        table = self._tables.get(entry.role)
        if table is None:
            raise UnknownRoleError(self.role_error(entry.role))
        old = table.get(entry.spec.name)
        if old is not None:
            self._unindex(old)
            self._count -= 1
            self.definition_bytes -= old.size
        table[entry.spec.name] = entry
        self._count += 1
        self.definition_bytes += entry.size
        self._index(entry)
        self._emit(False, entry, reason)
        return old

    def _remove(self, key: Key, reason: str) -> Entry | None:
        role, name = key
        entry = self._tables.get(role, {}).pop(name, None)
        if entry is not None:
            self._count -= 1
            self.definition_bytes -= entry.size
            self._unindex(entry)
            self._emit(True, entry, reason)
        return entry

    def _remove_all(self, keys: list[Key], reason: str) -> list[Entry]:
        return [e for k in keys if (e := self._remove(k, reason)) is not None]

    def unregister_keys(self, name: str, role: str | None) -> list[Key]:
        """Keys ``unregister(name, role)`` would remove."""
        roles = self.roles if role is None else [role]
        return [(r, name) for r in roles if name in self._tables.get(r, {})]

    def clear_keys(self, source: str, role: str | None) -> list[Key]:
        """Keys ``clear(source, role)`` would remove, sorted."""
        return sorted(k for k in self._by_source.get(source, ()) if role is None or k[0] == role)

    def remove(self, keys: list[Key], reason: str) -> list[Entry]:
        """Removes the entries of ``keys`` that exist; returns them."""
        return self._remove_all(keys, reason)

    def unregister(self, name: str, role: str | None) -> list[Entry]:
        return self._remove_all(self.unregister_keys(name, role), "unregistered")

    def clear(self, source: str, role: str | None) -> list[Entry]:
        return self._remove_all(self.clear_keys(source, role), "cleared")

    def remove_lease(self, lease_id: str, reason: str) -> list[Entry]:
        return self._remove_all(sorted(self._by_lease.get(lease_id, ())), reason)

    def lease_tool_count(self, lease_id: str) -> int:
        """Distinct tool names bound to ``lease_id`` (a tool in two roles counts once)."""
        return len({name for _, name in self._by_lease.get(lease_id, ())})

    def lease_tools_per_role(self, lease_id: str) -> dict[str, int]:
        """Tools bound to ``lease_id`` in each role that has any."""
        counts: dict[str, int] = {}
        for role, _ in self._by_lease.get(lease_id, ()):
            counts[role] = counts.get(role, 0) + 1
        return counts

    def find(self, name: str, role: str | None) -> Entry | None:
        """The entry of ``name`` in ``role``; with no role, the first role that has it."""
        if role is not None:
            return self._tables.get(role, {}).get(name)
        for table in self._tables.values():
            entry = table.get(name)
            if entry is not None:
                return entry
        return None

    def _sorted_names(self, role: str) -> list[str]:
        names = self._sorted.get(role)
        if names is None:
            names = self._sorted[role] = sorted(self._tables[role])
        return names

    def iter_entries(
        self, role: str | None = None, source: str = "", after: Key | None = None
    ) -> Iterator[Entry]:
        """Matching entries sorted by role, then name, starting after key ``after``.

        For one List page: the cost is the page, not the registry (a source
        filter costs its tools). Consume it without awaiting: a change in
        between would rebuild the sorted names it walks.
        """
        if source:
            keys = sorted(k for k in self._by_source.get(source, ()) if role in (None, k[0]))
            start = bisect_right(keys, after) if after is not None else 0
            for r, n in keys[start:]:
                yield self._tables[r][n]
            return
        for r in self.roles if role is None else [role]:
            if after is not None and r < after[0]:
                continue
            names = self._sorted_names(r)
            start = bisect_right(names, after[1]) if after is not None and r == after[0] else 0
            table = self._tables[r]
            for i in range(start, len(names)):
                yield table[names[i]]

    def entries(self, role: str | None = None, source: str = "") -> list[Entry]:
        """Matching entries sorted by role, then name. Roles must be known."""
        if source:
            keys = self._by_source.get(source, set())
            if role is not None:
                keys = {k for k in keys if k[0] == role}
            return [self._tables[r][n] for r, n in sorted(keys)]
        out: list[Entry] = []
        for r in self.roles if role is None else [role]:
            table = self._tables[r]
            out.extend(table[n] for n in self._sorted_names(r))
        return out
