"""Two-level fair queuing: namespaces first (weighted deficit round-robin), then clients.

Each namespace with work waiting holds its own :class:`~adapters.fair_queue.FairQueue`
(start-time fair queuing across that namespace's clients, exactly as one queue did for
everyone before). Namespaces take turns in deficit round-robin (Shreedhar and Varghese,
1995): at the start of its turn a namespace's deficit grows by ``quantum * weight``; it is
served while the cost of its next item fits the deficit; then the next namespace's turn
begins. A namespace whose queue empties leaves the round and forgets its deficit. So when
namespaces compete, each gets work in proportion to its weight, whatever each one sends: a
namespace sending ten times its share only lengthens its own queue. With one namespace
waiting, the order is that namespace's fair queue alone (no deficits are kept).

Like :class:`FairQueue`, the order is a function of the pushes and pops alone (no clocks),
and :meth:`peek` returns what :meth:`pop` will.

>>> q = NamespaceQueue(quantum=2.0)
>>> for i in range(4): _ = q.push("a", "a-client", 1.0, f"a{i}")
>>> for i in range(2): _ = q.push("b", "b-client", 1.0, f"b{i}")
>>> [q.pop() for _ in range(len(q))]
['a0', 'a1', 'b0', 'b1', 'a2', 'a3']
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from adapters.fair_queue import FairQueue


class NamespaceQueue:
    """Not thread-safe: the batcher holds its lock around every call."""

    def __init__(self, quantum: float = 1.0):
        if quantum <= 0:
            raise ValueError(f"quantum {quantum} must be > 0")
        self.quantum = quantum
        self._queues: dict[str, FairQueue] = {}  # namespaces with work waiting
        self._weights: dict[str, float] = {}
        self._deficit: dict[str, float] = {}
        self._round: deque[str] = deque()  # namespaces with work, the one whose turn it is first
        self._fresh = True  # the namespace first in the round has not had its quantum yet
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, namespace: str, client: str, cost: float, item: Any, weight: float = 1.0) -> float:
        """Queue ``item`` of ``client`` in ``namespace`` (``weight``: its share, the latest
        given wins); returns its start tag within the namespace's fair queue."""
        if weight <= 0:
            raise ValueError(f"weight {weight} must be > 0")
        q = self._queues.get(namespace)
        if q is None:
            q = self._queues[namespace] = FairQueue()
            self._deficit[namespace] = 0.0
            self._round.append(namespace)
        self._weights[namespace] = weight
        self._len += 1
        return q.push(client, cost, (cost, item))

    def _turn(self) -> str:
        """The namespace whose item :meth:`pop` serves next (advances turns as needed)."""
        if not self._round:
            raise IndexError("pop from an empty queue")
        if len(self._round) == 1:
            self._fresh = True  # a second namespace arriving finds this one at a fresh turn
            return self._round[0]
        missed = 0
        while True:
            ns = self._round[0]
            if self._fresh:
                self._deficit[ns] += self.quantum * self._weights[ns]
                self._fresh = False
            if self._queues[ns].peek()[0] <= self._deficit[ns]:
                return ns
            self._round.rotate(-1)  # its turn ends; the deficit carries to its next turn
            self._fresh = True
            missed += 1
            if missed == len(self._round):  # a whole round served nobody: skip at once the
                self._skip_idle_rounds()   # rounds that would serve nobody either
                missed = 0

    def _skip_idle_rounds(self) -> None:
        """Add, to every namespace, the quanta of the rounds before the first in which one of
        them can afford its next item (the same order as turning them one by one, in O(1) turns)."""
        rounds = min(math.ceil((self._queues[ns].peek()[0] - self._deficit[ns]) / (self.quantum * self._weights[ns]))
                     for ns in self._round)
        for ns in self._round:
            self._deficit[ns] += (rounds - 1) * self.quantum * self._weights[ns]

    def peek(self) -> Any:
        """The item :meth:`pop` would return (IndexError when empty)."""
        return self._queues[self._turn()].peek()[1]

    def pop(self) -> Any:
        ns = self._turn()
        q = self._queues[ns]
        cost, item = q.pop()
        self._len -= 1
        if len(self._round) > 1:
            self._deficit[ns] -= cost
        if not len(q):  # idle: it leaves the round and forgets its deficit
            del self._queues[ns], self._deficit[ns], self._weights[ns]
            if self._round[0] == ns:
                self._round.popleft()
                self._fresh = True
            else:
                self._round.remove(ns)
        return item

    def waiting(self) -> dict[str, int]:
        """Items waiting per namespace."""
        return {ns: len(q) for ns, q in self._queues.items()}
