"""Leases: a plugin's tools live as long as it keeps renewing its lease.

Plain bookkeeping with a monotonic clock; the registry's sweeper calls
``expired()`` a few times a second and removes the tools of what it returns.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from toolcall import config

MIN_TTL_S = 1.0
MAX_TTL_S = 300.0


class UnknownLeaseError(LookupError):
    """The lease expired, was revoked, or belongs to an earlier registry run."""

    def __init__(self, lease_id: str) -> None:
        self.lease_id = lease_id
        super().__init__(
            f"lease {lease_id[:80]!r} is unknown (expired, revoked, or the registry restarted); "
            "create a new lease and register again"
        )


def ttl_error(ttl_s: float) -> str | None:
    """Why ``ttl_s`` is not an acceptable lease TTL (0 means the default)."""
    if ttl_s == 0:
        return None
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:  # also refuses NaN
        default = config.DEFAULT_LEASE_TTL_S
        return f"must be 0 (default {default:g}) or from {MIN_TTL_S:g} to {MAX_TTL_S:g} seconds"
    return None


@dataclass(slots=True)
class Lease:
    lease_id: str
    ttl_s: float
    holder: str
    expires_at: float


class LeaseTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._leases: dict[str, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def create(self, ttl_s: float, holder: str) -> Lease:
        """A new lease; ``ttl_s`` must have passed ``ttl_error`` (0: the default TTL)."""
        ttl = ttl_s or config.DEFAULT_LEASE_TTL_S
        lease = Lease("lease_" + secrets.token_hex(12), ttl, holder, self._clock() + ttl)
        self._leases[lease.lease_id] = lease
        return lease

    def get(self, lease_id: str) -> Lease:
        lease = self._leases.get(lease_id)
        if lease is None or lease.expires_at <= self._clock():
            raise UnknownLeaseError(lease_id)
        return lease

    def renew(self, lease_id: str) -> Lease:
        lease = self.get(lease_id)
        lease.expires_at = self._clock() + lease.ttl_s
        return lease

    def revoke(self, lease_id: str) -> Lease:
        lease = self.get(lease_id)
        del self._leases[lease_id]
        return lease

    def expired(self) -> list[Lease]:
        """Removes and returns the leases whose time is up."""
        now = self._clock()
        # O(leases) per sweep: leases are per plugin process, so there are few.
        gone = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in gone:
            del self._leases[lease.lease_id]
        return gone
