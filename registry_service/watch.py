"""Fan-out of registry changes to Watch streams, one bounded queue per watcher.

A change is turned into a message once and shared by every watcher. A watcher
that falls ``queue_size`` events behind is dropped (its stream ends with
RESOURCE_EXHAUSTED, and it resyncs from a fresh snapshot) instead of letting
its backlog grow without bound. At most ``MAX_WATCHERS`` streams are open at
once (each may hold ``queue_size`` events); the next is WatchLimitError.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from registry_service.store import Change

DEFAULT_QUEUE_SIZE = 1024
MAX_WATCHERS = 1024

T = TypeVar("T")


class Overflowed(Exception):
    """The watcher fell too far behind; it must start over."""


class Closed(Exception):
    """The registry is shutting down."""


class WatchLimitError(Exception):
    """``MAX_WATCHERS`` Watch streams are open already."""


class Watcher(Generic[T]):
    def __init__(self, hub: WatchHub[T], role: str | None, queue_size: int) -> None:
        self._hub = hub
        self.role = role
        self._limit = queue_size
        self._pending: deque[T] = deque()
        self._ended: Exception | None = None
        self._wake = asyncio.Event()

    def offer(self, change: Change, message: T) -> None:
        if self._ended is not None:
            return
        if self.role is not None and change.entry.role != self.role:
            return
        if len(self._pending) >= self._limit:
            self.end(Overflowed(f"more than {self._limit} events behind"))
            return
        self._pending.append(message)
        self._wake.set()

    def end(self, reason: Exception) -> None:
        if self._ended is None:
            self._ended = reason
            self._hub.remove(self)
            self._wake.set()

    async def next(self) -> T:
        """The next change; raises Overflowed or Closed once the watcher has ended.

        Pending events are delivered before Closed, but not before Overflowed
        (the watcher resyncs anyway).
        """
        while True:
            if isinstance(self._ended, Overflowed):
                raise self._ended
            if self._pending:
                return self._pending.popleft()
            if self._ended is not None:
                raise self._ended
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        """Unsubscribes (the stream ended or was cancelled)."""
        self.end(Closed("watch ended"))


class WatchHub(Generic[T]):
    def __init__(
        self, to_message: Callable[[Change], T], *, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        self._to_message = to_message
        self._queue_size = queue_size
        self._watchers: set[Watcher[T]] = set()

    def __len__(self) -> int:
        return len(self._watchers)

    def watch(self, role: str | None) -> Watcher[T]:
        """A new watcher; it sees every change made after this call."""
        if len(self._watchers) >= MAX_WATCHERS:
            raise WatchLimitError(
                f"the registry already serves {MAX_WATCHERS} Watch streams; retry later"
            )
        watcher = Watcher(self, role, self._queue_size)
        self._watchers.add(watcher)
        return watcher

    def remove(self, watcher: Watcher[T]) -> None:
        self._watchers.discard(watcher)

    def publish(self, change: Change) -> None:
        """Store listener: one message per change, offered to every watcher."""
        if not self._watchers:
            return
        message = self._to_message(change)
        for watcher in list(self._watchers):
            watcher.offer(change, message)

    def close_all(self) -> None:
        for watcher in list(self._watchers):
            watcher.end(Closed("the registry is shutting down"))
