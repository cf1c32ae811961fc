"""A least-recently-used cache bounded in entries and in (estimated) bytes.

``functools.lru_cache`` bounds entries only: 4096 compiled validators of up
to 64 KB schemas each held hundreds of MB after tools were registered and
removed. Every cache of the core holds its values here, with both bounds
named where the cache is made, and a size function that estimates what one
entry keeps alive.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """``get_or_make(key, make)``: at most ``max_entries`` and ``max_bytes`` kept.

    An entry bigger than ``max_bytes`` on its own is made and returned but not
    kept. ``make`` runs outside the lock: two threads may both make a value.
    """

    def __init__(self, *, max_entries: int, max_bytes: int, size: Callable[[K, V], int]) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size = size
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        value = make()
        size = self._size(key, value)
        if size > self.max_bytes:
            return value
        with self._lock:
            if (old := self._items.pop(key, None)) is not None:
                self.bytes -= old[1]
            self._items[key] = (value, size)
            self.bytes += size
            while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.bytes -= evicted
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
