"""Admission per namespace before any preprocessing: at most ``max_inflight`` requests of a
namespace are past this gate at once (decoding, ``prepare`` with its tokenising, the cost
estimate, the batcher's queue, the trunk); the next ``max_waiting`` wait here in arrival
order, on an asyncio future (no thread, no CPU); beyond those a request is refused at once
with :class:`~adapters.errors.CapacityError` (429 + ``Retry-After``) naming the setting.

Why: the batcher's fair queue orders trunk work, but everything before it runs for every
request that arrived, in threads that share the cores and the GIL with the batch worker. A
namespace flooding with many concurrent requests had all of them tokenising at once, and a
light namespace's request then waited behind that work before it even reached the fair
queue. With the gate, a flood keeps its ``max_inflight`` requests going (enough to keep the
trunk busy) and its other requests wait cheaply; another namespace's request finds its own
slots free.

One gate per worker process, used from its event loop only (no locks).

>>> import asyncio
>>> async def demo():
...     gate = NamespaceGate(max_inflight=1, max_waiting=1)
...     async with gate.slot("a"):
...         waiter = asyncio.ensure_future(gate.slot("a").__aenter__())
...         await asyncio.sleep(0)
...         busy = gate.in_flight("a"), gate.waiting("a")
...         try:
...             await gate.slot("a").__aenter__()
...         except Exception as exc:
...             refused = type(exc).__name__
...         async with gate.slot("b"):
...             other = gate.in_flight("b")
...     await waiter
...     return busy, refused, other, gate.in_flight("a")
>>> asyncio.run(demo())
((1, 1), 'CapacityError', 1, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from adapters.errors import CapacityError


class NamespaceGate:
    def __init__(self, max_inflight: int, max_waiting: int):
        if max_inflight < 1 or max_waiting < 0:
            raise ValueError(f"max_inflight {max_inflight} must be >= 1 and max_waiting {max_waiting} >= 0")
        self.max_inflight, self.max_waiting = max_inflight, max_waiting
        self._inflight: dict[str, int] = {}
        self._queues: dict[str, deque[asyncio.Future]] = {}

    def in_flight(self, namespace: str) -> int:
        return self._inflight.get(namespace, 0)

    def waiting(self, namespace: str) -> int:
        return len(self._queues.get(namespace, ()))

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str):
        """Hold one of ``namespace``'s in-flight slots for the block."""
        await self._acquire(namespace)
        try:
            yield
        finally:
            self._release(namespace)

    async def _acquire(self, namespace: str) -> None:
        if self._inflight.get(namespace, 0) < self.max_inflight and not self._queues.get(namespace):
            self._inflight[namespace] = self._inflight.get(namespace, 0) + 1
            return
        queue = self._queues.setdefault(namespace, deque())
        if len(queue) >= self.max_waiting:
            raise CapacityError(
                f"namespace {namespace!r} has {self._inflight.get(namespace, 0)} requests in flight and "
                f"{len(queue)} waiting, the most this server takes per namespace "
                "(TASKSWAP_NAMESPACE_MAX_INFLIGHT, TASKSWAP_NAMESPACE_MAX_WAITING); retry shortly",
                retry_after_s=1)
        turn = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn  # the slot is handed over by _release (the count already includes us)
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._release(namespace)  # handed a slot while being cancelled: pass it on
            else:
                waiting = self._queues.get(namespace)
                if waiting is not None and turn in waiting:  # _release may have dropped it already
                    waiting.remove(turn)
                    if not waiting:
                        del self._queues[namespace]
            raise

    def _release(self, namespace: str) -> None:
        queue = self._queues.get(namespace)
        while queue:
            turn = queue.popleft()
            if not queue:
                del self._queues[namespace]
            if not turn.done():
                turn.set_result(None)  # the slot passes to the next waiter, count unchanged
                return
            queue = self._queues.get(namespace)
        left = self._inflight.get(namespace, 0) - 1
        if left > 0:
            self._inflight[namespace] = left
        else:
            self._inflight.pop(namespace, None)
