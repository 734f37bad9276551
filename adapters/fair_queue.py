"""Start-time fair queuing of work items across clients, weighted by each item's cost.

Each client's items get virtual start tags: an item starts where the client's previous item
finished, or at the queue's virtual time if the client was idle, and finishes ``cost`` later.
Items are served in order of start tag (ties: the order they were pushed), and the virtual
time is the start tag of the item last served (Goyal et al., "Start-time Fair Queueing",
1996). So clients that keep items waiting share the worker in proportion to cost, whatever
each one sends: a client that queues 100 slices of a heavy request gets tags 0, c, 2c, ...,
and a light request arriving meanwhile starts at the current virtual time, ahead of all the
heavy slices not yet started. Nothing depends on clocks: the order is a function of the
pushes and pops alone (the unit tests replay it exactly).

>>> q = FairQueue()
>>> [q.push("heavy", 10.0, f"h{i}") for i in range(3)]  # start tags
[0.0, 10.0, 20.0]
>>> q.pop()
'h0'
>>> q.push("light", 1.0, "l0")
0.0
>>> [q.pop() for _ in range(len(q))]
['l0', 'h1', 'h2']
"""

from __future__ import annotations

import heapq
from typing import Any

# Forget the finish tags of clients that have fallen behind the virtual time every this many
# pops (they would start at the virtual time anyway), so the table does not grow with every
# client ever seen.
_PRUNE_EVERY = 1024


class FairQueue:
    """Not thread-safe: the batcher holds its lock around every call."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []  # (start tag, push order, item)
        self._finish: dict[str, float] = {}  # client -> finish tag of its last pushed item
        self._vtime = 0.0
        self._seq = 0
        self._pops = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, client: str, cost: float, item: Any) -> float:
        """Queue ``item`` for ``client``; returns its start tag."""
        if cost < 0:
            raise ValueError(f"cost {cost} must be >= 0")
        start = max(self._vtime, self._finish.get(client, 0.0))
        self._finish[client] = start + cost
        heapq.heappush(self._heap, (start, self._seq, item))
        self._seq += 1
        return start

    def peek(self) -> Any:
        """The item :meth:`pop` would return (IndexError when empty)."""
        return self._heap[0][2]

    def pop(self) -> Any:
        """The item with the smallest start tag (IndexError when empty)."""
        start, _, item = heapq.heappop(self._heap)
        self._vtime = max(self._vtime, start)
        self._pops += 1
        if not self._heap:  # idle: every client starts afresh
            self._finish.clear()
            self._vtime = 0.0
        elif self._pops % _PRUNE_EVERY == 0:
            self._finish = {c: f for c, f in self._finish.items() if f > self._vtime}
        return item
