"""A micro-batcher: requests from many threads, whatever their task, run together.

One worker thread takes the first waiting request, gathers more until
``max_batch_rows`` trunk rows or ``max_wait_ms`` have passed, and runs them as one
batch. The wait is only for a worker that was idle: requests that queued while the previous
batch ran are taken at once (they had that whole batch's time to gather; waiting longer
would leave the trunk idle for ``max_wait_ms`` between every two batches under steady load). The queue is bounded in rows: past ``max_queue_rows`` a submit fails at once
with :class:`CapacityError` (HTTP 429 + Retry-After) instead of queueing without bound.

A failed batch never fails a request for another request's input: the batch is split in
halves and each half retried, down to single requests, so only the request whose input
breaks the forward gets the error (a few extra passes, only on the failure path).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

from adapters.errors import CapacityError, TaskswapError
from adapters.runtime import PreparedRequest, Runtime

log = logging.getLogger("taskswap.batching")


class Batcher:
    """``Batcher(runtime).submit(prepared).result()`` — thread-safe.

    An item needs only ``rows`` (its trunk rows) for the batcher; ``runtime.run(items)``
    answers a list of results in order. An item with a ``timings`` dict (a
    :class:`PreparedRequest`) gets its ``submitted`` stamp there.

    >>> import tempfile
    >>> from adapters.store import open_store
    >>> from adapters.registry import Registry
    >>> b = Batcher(Runtime(Registry(open_store(tempfile.mkdtemp()), {})))
    >>> b.close()
    """

    def __init__(self, runtime: Runtime, max_batch_rows: int = 64, max_wait_ms: float = 5.0,
                 max_queue_rows: int = 4096, on_batch=None):
        self.runtime = runtime
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.on_batch = on_batch  # callback(n_requests, n_rows, seconds)
        self._q: queue.Queue = queue.Queue()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="taskswap-batcher", daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def submit(self, req: PreparedRequest) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise CapacityError("server is shutting down", retry_after_s=5)
            if self._queued_rows + req.rows > self.max_queue_rows and self._queued_rows > 0:
                raise CapacityError(f"server is at capacity ({self._queued_rows} rows queued, "
                                    f"limit {self.max_queue_rows}); retry shortly", retry_after_s=1)
            self._queued_rows += req.rows
        stamps = getattr(req, "timings", None)  # a PreparedRequest's; an item needs only ``rows``
        if stamps is not None:
            stamps["submitted"] = time.time_ns()  # queue wait = runtime's "started" - this
        self._q.put((req, fut))
        return fut

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._q.put(None)
        self._thread.join(timeout=10)

    def _take(self) -> list[tuple[PreparedRequest, Future]] | None:
        try:  # a backlog (requests queued during the last batch): take it without waiting
            first, wait_s = self._q.get_nowait(), 0.0
        except queue.Empty:  # idle: the first request waits max_wait_s for company
            first, wait_s = self._q.get(), self.max_wait_s
        if first is None:
            return None
        items, rows = [first], first[0].rows
        deadline = time.monotonic() + wait_s
        while rows < self.max_batch_rows:
            left = deadline - time.monotonic()
            try:
                nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._q.put(None)
                break
            items.append(nxt)
            rows += nxt[0].rows
        return items

    def _loop(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            rows = sum(r.rows for r, _ in items)
            start = time.perf_counter()
            outcomes: list[tuple[Future, object, BaseException | None]] = []
            try:
                self._run_isolated(items, outcomes)
            except Exception as exc:  # a safety net: the loop must never die
                log.exception("batch worker error")
                answered = {id(f) for f, _, _ in outcomes}
                outcomes += [(fut, None, exc) for _, fut in items if id(fut) not in answered]
            finally:
                # The rows leave the queue before any caller hears back, so a client's next
                # request never finds its own finished rows still counted (a spurious 429).
                with self._lock:
                    self._queued_rows -= rows
            for fut, result, exc in outcomes:
                if not fut.done():
                    fut.set_exception(exc) if exc is not None else fut.set_result(result)
            if self.on_batch:
                self.on_batch(len(items), rows, time.perf_counter() - start)

    def _run_isolated(self, items: list[tuple[PreparedRequest, Future]], outcomes: list) -> None:
        """Run ``items`` as one batch; if it fails, bisect until the failing requests are
        alone, so every other request still gets its own (correct) answer. Appends
        ``(future, result, exception)`` per item to ``outcomes`` (the caller completes them)."""
        try:
            results = self.runtime.run([r for r, _ in items])
        except Exception as exc:  # one failed batch fails its own requests, never the loop
            if len(items) > 1:
                log.warning("batch of %d requests failed (%s: %s); retrying in halves",
                            len(items), type(exc).__name__, exc)
                half = len(items) // 2
                self._run_isolated(items[:half], outcomes)
                self._run_isolated(items[half:], outcomes)
                return
            if not isinstance(exc, TaskswapError):
                log.exception("a request failed in the batch worker")
            outcomes.append((items[0][1], None, exc))
            return
        outcomes.extend((fut, res, None) for (_, fut), res in zip(items, results))
