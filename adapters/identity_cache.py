"""A small thread-safe LRU keyed by the identities of objects (adapters, heads, models).

The runtime caches values derived from loaded adapters (stacked head weights, LoRA factor
stacks, merged weights) per exact set of adapter objects. Keying by ``id`` is cheap and
exact; each entry holds the objects it is keyed on, so those ids cannot be reused by other
objects while the entry lives (an evicted adapter stays alive until its entry ages out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

V = TypeVar("V")


class IdentityCache(Generic[V]):
    """At most ``size`` values, each built once per tuple of objects (least recently used out)."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple[int, ...], tuple[tuple, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, objects: tuple, build: Callable[[], V]) -> V:
        """The value for exactly these objects; ``build()`` (outside the lock) on a miss."""
        key = tuple(id(o) for o in objects)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
        value = build()
        with self._lock:
            self._entries[key] = (objects, value)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def forget(self, obj) -> int:
        """Drop every entry built from ``obj`` (so its tensors can be freed); returns how many."""
        with self._lock:
            gone = [k for k, (objects, _) in self._entries.items() if any(o is obj for o in objects)]
            for k in gone:
                del self._entries[k]
        return len(gone)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
