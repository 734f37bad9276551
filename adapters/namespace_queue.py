"""Two-level fair queuing: namespaces first (weighted deficit round-robin), then clients.

Each namespace with work waiting holds its own :class:`~adapters.fair_queue.FairQueue`
(start-time fair queuing across that namespace's clients, exactly as one queue did for
everyone before). Namespaces take turns in deficit round-robin (Shreedhar and Varghese,
1995): at the start of its turn a namespace's deficit grows by ``quantum * weight``; it is
served while the cost of its next item fits the deficit; then the next namespace's turn
begins. So when namespaces compete, each gets work in proportion to its weight, whatever
each one sends: a namespace sending ten times its share only lengthens its own queue. With
one namespace waiting, the order is that namespace's fair queue alone (no deficits are kept).

A namespace arriving with nothing waiting is served **before** the namespaces already
backlogged (its first turn comes next, not after a whole round): the lists of new and old
flows of FQ-CoDel (RFC 8290, section 4.1). Without it a light namespace's request, arriving
while a flood's turn was about to start, waited for that whole turn after the batch in
progress. A namespace whose queue empties stays at the end of the old list, empty, until its
next turn comes round (with one namespace served alone: until it has been served one more
quantum); a request it sends meanwhile waits there for that turn, so sending one small
request at a time never buys a namespace more than its quantum per round. When its empty
turn comes, it leaves and forgets its deficit.

Like :class:`FairQueue`, the order is a function of the pushes and pops alone (no clocks),
and :meth:`peek` returns what :meth:`pop` will.

>>> q = NamespaceQueue(quantum=2.0)
>>> for i in range(4): _ = q.push("a", "a-client", 1.0, f"a{i}")
>>> for i in range(2): _ = q.push("b", "b-client", 1.0, f"b{i}")
>>> [q.pop() for _ in range(len(q))]
['a0', 'a1', 'b0', 'b1', 'a2', 'a3']
>>> for i in range(4): _ = q.push("a", "a-client", 1.0, f"a{i}")
>>> first = q.pop(); _ = q.push("b", "b-client", 1.0, "b0")
>>> first, q.pop()
('a0', 'b0')
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
        self._queues: dict[str, FairQueue] = {}  # namespaces in a list (an old one may be empty)
        self._weights: dict[str, float] = {}
        self._deficit: dict[str, float] = {}
        self._new: deque[str] = deque()  # arrived with nothing waiting: served first
        self._old: deque[str] = deque()  # had a turn already, in round-robin order
        # per list ("new", "old"): the namespace at its head that has had this turn's quantum; a
        # new arrival interrupts an old one's turn, which then goes on without a second quantum
        self._granted: dict[str, str | None] = {"new": None, "old": None}
        self._busy = 0  # namespaces with work waiting
        self._served = 0.0  # the cost of every item popped so far
        self._emptied_at: dict[str, float] = {}  # an empty namespace in the old list: _served when it emptied
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, namespace: str, client: str, cost: float, item: Any, weight: float = 1.0) -> float:
        """Queue ``item`` of ``client`` in ``namespace`` (``weight``: its share, the latest
        given wins); returns its start tag within the namespace's fair queue."""
        if weight <= 0:
            raise ValueError(f"weight {weight} must be > 0")
        q = self._queues.get(namespace)
        if q is None:  # not in a list: it arrives as a new flow
            q = self._queues[namespace] = FairQueue()
            self._deficit[namespace] = 0.0
            self._new.append(namespace)
        if not len(q):
            self._busy += 1
        self._weights[namespace] = weight
        self._len += 1
        return q.push(client, cost, (cost, item))

    def _head(self) -> deque[str]:
        """The list whose first namespace has the turn."""
        return self._new if self._new else self._old

    def _turn(self) -> str:
        """The namespace whose item :meth:`pop` serves next (advances turns as needed)."""
        if not self._len:
            raise IndexError("pop from an empty queue")
        missed = 0
        while True:
            head = self._head()
            ns, side = head[0], "new" if head is self._new else "old"
            if not len(self._queues[ns]):  # it emptied, and its turn came round empty: it leaves
                self._forget(head.popleft())
                continue
            if self._busy == 1:
                if len(self._queues) > 1:  # alone, a quantum served is a round gone by: the empty ones leave
                    self._drop_empty()
                if head is self._new:  # served alone it has had its first turn: one arriving now goes first
                    self._old.append(self._new.popleft())
                self._granted = {"new": None, "old": None}  # a second namespace arriving finds it at a fresh turn
                return ns
            if self._granted[side] != ns:
                self._deficit[ns] += self.quantum * self._weights[ns]
                self._granted[side] = ns
            if self._queues[ns].peek()[0] <= self._deficit[ns]:
                return ns
            head.popleft()  # its turn ends; the deficit carries to its next turn
            self._old.append(ns)
            self._granted[side] = None
            missed += 1
            if missed >= self._busy and not self._new:  # a whole round served nobody: skip at
                self._skip_idle_rounds()                # once the rounds that would serve nobody
                missed = 0

    def _skip_idle_rounds(self) -> None:
        """Add, to every waiting namespace, the quanta of the rounds before the first in which
        one of them can afford its next item (the same order as turning them one by one)."""
        busy = [ns for ns in self._old if len(self._queues[ns])]
        rounds = min(math.ceil((self._queues[ns].peek()[0] - self._deficit[ns]) / (self.quantum * self._weights[ns]))
                     for ns in busy)
        for ns in busy:
            self._deficit[ns] += (rounds - 1) * self.quantum * self._weights[ns]

    def _drop_empty(self) -> None:
        """Forget the empty namespaces that emptied at least one quantum of work ago."""
        for ns in [n for n in self._old if not len(self._queues[n])
                   and self._served - self._emptied_at[n] >= self.quantum]:
            self._old.remove(ns)
            self._forget(ns)

    def _forget(self, ns: str) -> None:
        del self._queues[ns], self._deficit[ns], self._weights[ns]
        self._emptied_at.pop(ns, None)
        self._granted = {k: (None if v == ns else v) for k, v in self._granted.items()}

    def peek(self) -> Any:
        """The item :meth:`pop` would return (IndexError when empty)."""
        return self._queues[self._turn()].peek()[1]

    def pop(self) -> Any:
        ns = self._turn()
        q = self._queues[ns]
        cost, item = q.pop()
        self._len -= 1
        if self._busy > 1:
            self._deficit[ns] -= cost
        self._served += cost
        if not len(q):  # it waits, empty, for its next turn (then leaves and forgets its deficit)
            self._busy -= 1
            head = self._head()
            self._granted["new" if head is self._new else "old"] = None
            self._old.append(head.popleft())
            self._emptied_at[ns] = self._served
        return item

    def waiting(self) -> dict[str, int]:
        """Items waiting per namespace."""
        return {ns: len(q) for ns, q in self._queues.items() if len(q)}
