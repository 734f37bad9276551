"""Admission per namespace before any preprocessing: at most ``max_inflight`` requests of a
namespace (its ``max_inflight`` quota, else the server's default) are past this gate at once
(decoding of images and audio, ``prepare`` with its tokenising, the cost
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
from typing import Callable

from adapters.errors import CapacityError


class NamespaceGate:
    """``limit_of(namespace)``: that namespace's own in-flight limit (its ``max_inflight``
    quota), None for the default ``max_inflight`` (itself None: no limit, the requests are
    still counted). A limit is read at each arrival and each release, so a quota changed
    while requests wait applies from the next release on."""

    def __init__(self, max_inflight: int | None, max_waiting: int,
                 limit_of: Callable[[str], int | None] = lambda namespace: None):
        if (max_inflight is not None and max_inflight < 1) or max_waiting < 0:
            raise ValueError(f"max_inflight {max_inflight} must be >= 1 (or None) and max_waiting {max_waiting} >= 0")
        self.max_inflight, self.max_waiting, self.limit_of = max_inflight, max_waiting, limit_of
        self._inflight: dict[str, int] = {}
        self._queues: dict[str, deque[asyncio.Future]] = {}

    def in_flight(self, namespace: str) -> int:
        return self._inflight.get(namespace, 0)

    def waiting(self, namespace: str) -> int:
        return len(self._queues.get(namespace, ()))

    def limit(self, namespace: str) -> int | None:
        """``namespace``'s in-flight limit: its own, else the default (None: none)."""
        own = self.limit_of(namespace)
        return own if own is not None else self.max_inflight

    def _has_room(self, namespace: str) -> bool:
        limit = self.limit(namespace)
        return limit is None or self._inflight.get(namespace, 0) < limit

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str):
        """Hold one of ``namespace``'s in-flight slots for the block."""
        await self._acquire(namespace)
        try:
            yield
        finally:
            self._release(namespace)

    async def _acquire(self, namespace: str) -> None:
        if self._has_room(namespace) and not self._queues.get(namespace):
            self._inflight[namespace] = self._inflight.get(namespace, 0) + 1
            return
        queue = self._queues.setdefault(namespace, deque())
        if len(queue) >= self.max_waiting:
            own = self.limit_of(namespace) is not None
            raise CapacityError(
                f"namespace {namespace!r} has {self._inflight.get(namespace, 0)} requests in flight "
                f"(its limit {self.limit(namespace)}, "
                + ("its max_inflight quota" if own else "TASKSWAP_NAMESPACE_MAX_INFLIGHT or a max_inflight quota")
                + f") and {len(queue)} waiting, the most this server takes (TASKSWAP_NAMESPACE_MAX_WAITING); "
                "retry shortly", retry_after_s=1)
        turn = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn  # the slot is handed over by _wake (the count already includes us)
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._release(namespace)  # handed a slot while being cancelled: pass it on
            else:
                waiting = self._queues.get(namespace)
                if waiting is not None and turn in waiting:  # _wake may have dropped it already
                    waiting.remove(turn)
                    if not waiting:
                        del self._queues[namespace]
            raise

    def _release(self, namespace: str) -> None:
        left = self._inflight.get(namespace, 0) - 1
        if left > 0:
            self._inflight[namespace] = left
        else:
            self._inflight.pop(namespace, None)
        self._wake(namespace)

    def _wake(self, namespace: str) -> None:
        """Hand free slots to the waiters, first come first served, while the limit (read
        now: a raised quota admits several at once) leaves room."""
        queue = self._queues.get(namespace)
        while queue and self._has_room(namespace):
            turn = queue.popleft()
            if not queue:
                del self._queues[namespace]
            if not turn.done():
                self._inflight[namespace] = self._inflight.get(namespace, 0) + 1
                turn.set_result(None)
            queue = self._queues.get(namespace)
