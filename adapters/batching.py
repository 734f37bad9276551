"""A micro-batcher: requests from many threads, whatever their task, run together, fairly.

A request may come with its estimated cost (:mod:`adapters.cost`); it is then cut into
slices of at most ``slice_cost`` (:mod:`adapters.slices`: runs of whole inputs, and an input
costlier than that in parts of its windows where every row reads every window, else a slice
of its own), and every slice is queued under the request's client key
in a fair queue (:mod:`adapters.fair_queue`: start-time fair queuing weighted by cost)
within the request's namespace, and namespaces take turns by weight
(:mod:`adapters.namespace_queue`: deficit round-robin). One
worker thread takes the slice first in fair order, gathers more in that order until
``max_batch_rows`` trunk rows or ``slice_cost`` of estimated work (or ``max_wait_ms`` have
passed), and runs them as one batch. So a batch is bounded in work and memory, and a light
request arriving behind a heavy one waits for at most the batch in progress: the heavy
request's latency grows with its own size, not the others'. Its slices' answers are kept
(outputs, not activations; a part's features until its input's last part ran, then its
answers) until the last one is done, then merged into one answer.

While namespaces compete (more than one submitted work within the last
``competing_window_s``), batches shrink to ``slice_cost / slice_split`` of work and a
namespace's turn to one such batch, which holds that namespace's slices only: what a light
namespace's request waits for is the batch in flight plus its own, both are then that small,
and its own holds no other namespace's work. Slices are cut at that finer grain always
(``slice_split`` of them make one full batch again when a single namespace is active, so a
lone namespace's batches are as large as before).

With ``preempt``, the batch in flight is not waited for either: between two trunk blocks it
asks whether the slice next in fair order is another namespace's (a newcomer, or a namespace
whose turn came); if so it is *parked* (its hidden states and mask stay as they are, its
kinds' changes to the shared model are let go: :mod:`adapters.kinds.pausing`), that
namespace's batch is gathered without waiting and run to the end, and the parked batch
resumes where it stopped, with the same answers. At most ``max_parked`` batches are parked
at once (a batch run while the limit is reached is not preemptible), so memory stays bounded
by that many batches' activations. Chunks of a backbone without a block layout pause between
chunks only (:mod:`adapters.kinds.stepwise`).

The wait is only for a worker that was idle: slices that queued while the previous batch
ran are taken at once (they had that whole batch's time to gather; waiting longer would
leave the trunk idle for ``max_wait_ms`` between every two batches under steady load). The
queue is bounded in rows: past ``max_queue_rows`` a submit fails at once with
:class:`CapacityError` (HTTP 429 + Retry-After) instead of queueing without bound.

A failed batch never fails a request for another request's input: the batch is split in
halves and each half retried, down to single slices, so only the request whose input
breaks the forward gets the error (its slices still queued are dropped unrun).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from adapters.cost import Cost
from adapters.errors import CapacityError, TaskswapError
from adapters.namespace_queue import NamespaceQueue
from adapters.namespaces import DEFAULT_NAMESPACE
from adapters.runtime import PreparedRequest, Runtime
from adapters.slices import cut, merge, settle, slice_with_costs

log = logging.getLogger("taskswap.batching")



@dataclass
class _Job:
    """One submitted request: its future and its slices' answers so far."""

    future: Future
    parts: list = field(default_factory=list)  # per slice: its result, once run
    left: int = 0


@dataclass
class _Slice:
    job: _Job
    index: int
    req: PreparedRequest  # or any item with ``rows``
    cost: float
    namespace: str = DEFAULT_NAMESPACE

    @property
    def rows(self) -> int:
        return self.req.rows


class Batcher:
    """``Batcher(runtime).submit(prepared, client, cost).result()`` — thread-safe.

    An item needs only ``rows`` (its trunk rows) for the batcher; ``runtime.run(items)``
    answers a list of results in order. An item with a ``timings`` dict (a
    :class:`PreparedRequest`) gets its ``submitted`` stamp there. Without a ``cost`` an item
    is one slice costing its rows.

    >>> import tempfile
    >>> from adapters.store import open_store
    >>> from adapters.registry import Registry
    >>> b = Batcher(Runtime(Registry(open_store(tempfile.mkdtemp()), {})))
    >>> b.close()
    """

    def __init__(self, runtime: Runtime, max_batch_rows: int = 64, max_wait_ms: float = 5.0,
                 max_queue_rows: int = 4096, on_batch=None, slice_cost: float | None = None,
                 on_usage=None, slice_split: int = 1, competing_window_s: float = 10.0,
                 preempt: bool = False, max_parked: int = 1, on_park=None):
        self.runtime = runtime
        # A running batch may pause between trunk blocks while another namespace's owed work
        # runs (``runtime.run(items, pause=...)``); at most ``max_parked`` batches wait parked.
        if max_parked < 1:
            raise ValueError(f"max_parked {max_parked} must be >= 1")
        self.preempt = preempt
        self.max_parked = max_parked
        self.preemptions = 0  # batches run while another was parked, since start
        self.on_park = on_park  # callback() each time a running batch is parked
        self._parked = 0  # batches parked below the one running (batch worker thread only)
        self._nested_s = 0.0  # seconds spent running batches while another was parked
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.slice_cost = slice_cost  # None: a request is one slice, a batch bounded in rows only
        if slice_split < 1:
            raise ValueError(f"slice_split {slice_split} must be >= 1")
        # slices are cut at this grain; while namespaces compete a batch holds at most this much
        self.grain = slice_cost / slice_split if slice_cost else None
        self._last_submit: dict[str, float] = {}  # namespace -> monotonic time of its last submit
        # namespaces that submitted within this long compete for the worker: longer than a light
        # namespace's pause between requests, or its next request finds a full batch in flight
        self.competing_window_s = competing_window_s
        self.on_batch = on_batch  # callback(n_slices, n_rows, seconds)
        # callback({namespace: (rows, seconds)}) per batch: its time shared by the slices' cost
        self.on_usage = on_usage
        # a namespace's turn is one (competing) batch's work at weight 1
        self._fq = NamespaceQueue(quantum=float(self.grain or max_batch_rows))
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="taskswap-batcher", daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def submit(self, req: PreparedRequest, client: str = "", cost: Cost | None = None,
               namespace: str = DEFAULT_NAMESPACE, weight: float = 1.0) -> Future:
        """Queue ``req`` for ``client`` (its fair-queuing key) in ``namespace`` (whose share
        is ``weight``); ``cost``: its estimate, which cuts it into slices of at most
        ``slice_cost``."""
        fut: Future = Future()
        if cost is not None and self.slice_cost:
            parts = cut(list(cost.per_input), self.grain, cost.units)
            slices, costs = zip(*slice_with_costs(req, parts, cost.per_input))
        else:
            slices, costs = [req], [float(cost.total if cost is not None else req.rows)]
        # parts of one input each run its rows: the queue counts the slices' rows
        rows = sum(s.rows for s in slices)
        job = _Job(fut, [None] * len(slices), len(slices))
        stamps = getattr(req, "timings", None)  # a PreparedRequest's; an item needs only ``rows``
        with self._lock:
            if self._closed:
                raise CapacityError("server is shutting down", retry_after_s=5)
            if self._queued_rows + rows > self.max_queue_rows and self._queued_rows > 0:
                raise CapacityError(f"server is at capacity ({self._queued_rows} rows queued, "
                                    f"limit {self.max_queue_rows}); retry shortly", retry_after_s=1)
            self._queued_rows += rows
            self._last_submit[namespace] = time.monotonic()
            if stamps is not None:
                stamps["submitted"] = time.time_ns()  # queue wait = runtime's "started" - this
            for i, (s, c) in enumerate(zip(slices, costs)):
                self._fq.push(namespace, client, c, _Slice(job, i, s, c, namespace), weight)
            self._ready.notify()
        return fut

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=10)

    def _next(self) -> _Slice | None:
        """The next live slice in fair order (under the lock); slices of a request that
        already failed are dropped here, their rows released."""
        while len(self._fq):
            s = self._fq.peek()
            if not s.job.future.done():
                return s
            self._fq.pop()
            self._queued_rows -= s.rows
        return None

    def _budget(self) -> float | None:
        """A batch's work limit (under the lock): ``slice_cost``, or one grain while
        namespaces compete (submitted within ``competing_window_s``)."""
        if not self.slice_cost:
            return None
        now = time.monotonic()
        for ns in [n for n, t in self._last_submit.items() if now - t > self.competing_window_s]:
            del self._last_submit[ns]
        return self.grain if len(self._last_submit) > 1 else self.slice_cost

    def _take(self) -> list[_Slice] | None:
        with self._lock:
            wait_s = 0.0  # a backlog (slices queued during the last batch): take it without waiting
            while self._next() is None:
                if self._closed:
                    return None
                self._ready.wait()
                wait_s = self.max_wait_s  # idle: the first slice waits max_wait_s for company
            return self._gather(self._fq.pop(), wait_s)

    def _gather(self, first: _Slice, wait_s: float, own_only: bool = False) -> list[_Slice]:
        """``first`` and the slices that join its batch in fair order (under the lock):
        waiting up to ``wait_s`` for company, within the batch's rows and work; ``own_only``:
        ``first``'s namespace's slices only (as always while namespaces compete)."""
        items, rows, cost = [first], first.rows, first.cost
        budget = self._budget()
        competing = own_only or (budget is not None and budget < self.slice_cost)
        deadline = time.monotonic() + wait_s
        while rows < self.max_batch_rows:
            nxt = self._next()
            if nxt is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._ready.wait(left)
                continue
            if budget and cost + nxt.cost > budget:
                break  # the batch's work stays within its budget
            if competing and nxt.namespace != first.namespace:
                break  # a namespace's turn is its own batch: no one waits on another's work in it
            items.append(self._fq.pop())
            rows += nxt.rows
            cost += nxt.cost
        return items

    def _loop(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            self._run_batch(items)

    def _run_batch(self, items: list[_Slice]) -> None:
        """Run one batch, answer its slices, report it."""
        rows = sum(s.rows for s in items)
        start = time.perf_counter()
        nested_before = self._nested_s
        outcomes: list[tuple[_Slice, object, BaseException | None]] = []
        try:
            self._run_isolated(items, outcomes)
        except Exception as exc:  # a safety net: the loop must never die
            log.exception("batch worker error")
            answered = {id(s) for s, _, _ in outcomes}
            outcomes += [(s, None, exc) for s in items if id(s) not in answered]
        finally:
            # The rows leave the queue before any caller hears back, so a client's next
            # request never finds its own finished rows still counted (a spurious 429).
            with self._lock:
                self._queued_rows -= rows
        for s, result, exc in outcomes:
            self._complete(s, result, exc)
        # its own time: not the batches that ran while it was parked
        seconds = time.perf_counter() - start - (self._nested_s - nested_before)
        if self.on_batch:
            self.on_batch(len(items), rows, seconds)
        if self.on_usage:
            self.on_usage(_usage(items, seconds))

    # ---- preemption between trunk blocks (the batch worker's thread only) ------------------
    def _pause_for(self, items: list[_Slice]) -> "_OwedWork | None":
        if not self.preempt or self._parked >= self.max_parked:
            return None
        return _OwedWork(self, frozenset(s.namespace for s in items))

    def _owed(self, running: frozenset[str]) -> bool:
        """Whether the slice next in fair order belongs to a namespace not in the running
        batch (it is owed the worker now: a newcomer, or its turn came), and a batch may park."""
        if self._parked >= self.max_parked or not len(self._fq):
            return False
        with self._lock:
            nxt = self._next()
            return nxt is not None and nxt.namespace not in running

    def _run_owed(self, running: frozenset[str]) -> None:
        """Take the owed namespace's batch (no wait for company) and run it to the end while
        the calling batch is parked."""
        with self._lock:
            nxt = self._next()
            if nxt is None or nxt.namespace in running:
                return
            items = self._gather(self._fq.pop(), 0.0, own_only=True)
        self._parked += 1
        self.preemptions += 1
        if self.on_park:
            self.on_park()
        mark, start = self._nested_s, time.perf_counter()
        try:
            self._run_batch(items)
        finally:
            self._parked -= 1
            self._nested_s = mark + (time.perf_counter() - start)

    def waiting(self) -> dict[str, int]:
        """Slices waiting per namespace."""
        with self._lock:
            return self._fq.waiting()

    def _complete(self, s: _Slice, result, exc: BaseException | None) -> None:
        """Record one slice's outcome; the request's future is set by its first failure or
        its last slice."""
        job = s.job
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
            return
        job.parts[s.index] = result
        job.left -= 1
        # a runtime without parts of inputs (a plain item runtime) needs no ``answer``
        answer = getattr(self.runtime, "answer", None)
        try:  # an input whose parts all ran is answered now: its features are not kept
            settle(job.parts, s.index, answer)
        except Exception as exc:  # noqa: BLE001 - never leave a caller hanging
            log.exception("answering an input's parts failed")
            job.future.set_exception(exc)
            return
        if job.left == 0:
            try:
                job.future.set_result(merge(job.parts, answer) if len(job.parts) > 1 else job.parts[0])
            except Exception as merge_exc:  # noqa: BLE001 - never leave a caller hanging
                log.exception("merging a request's slices failed")
                job.future.set_exception(merge_exc)

    def _run_isolated(self, items: list[_Slice], outcomes: list) -> None:
        """Run ``items`` as one batch; if it fails, bisect until the failing slices are
        alone, so every other request still gets its own (correct) answer. Appends
        ``(slice, result, exception)`` per item to ``outcomes`` (the caller completes them)."""
        try:
            pause = self._pause_for(items)
            reqs = [s.req for s in items]
            results = self.runtime.run(reqs) if pause is None else self.runtime.run(reqs, pause=pause)
        except Exception as exc:  # one failed batch fails its own requests, never the loop
            if len(items) > 1:
                log.warning("batch of %d slices failed (%s: %s); retrying in halves",
                            len(items), type(exc).__name__, exc)
                half = len(items) // 2
                self._run_isolated(items[:half], outcomes)
                self._run_isolated(items[half:], outcomes)
                return
            if not isinstance(exc, TaskswapError):
                log.exception("a request failed in the batch worker")
            outcomes.append((items[0], None, exc))
            return
        outcomes.extend((s, res, None) for s, res in zip(items, results))


class _OwedWork:
    """The :class:`~adapters.kinds.base.Pause` a running batch offers between trunk blocks:
    due when another namespace's slice is next in fair order; running it runs that
    namespace's batch while this one is parked."""

    def __init__(self, batcher: Batcher, running: frozenset[str]):
        self.batcher = batcher
        self.running = running

    def due(self) -> bool:
        return self.batcher._owed(self.running)

    def run(self) -> None:
        try:
            self.batcher._run_owed(self.running)
        except Exception:  # noqa: BLE001 - the parked batch must resume whatever happened
            log.exception("a preempting batch failed in the batch worker")


def _usage(items: list[_Slice], seconds: float) -> dict[str, tuple[int, float]]:
    """Rows and a share of the batch's ``seconds`` (by estimated cost) per namespace."""
    total = sum(s.cost for s in items)
    out: dict[str, list] = {}
    for s in items:
        acc = out.setdefault(s.namespace, [0, 0.0])
        acc[0] += s.rows
        acc[1] += seconds * (s.cost / total if total > 0 else 1.0 / len(items))
    return {ns: (rows, sec) for ns, (rows, sec) in out.items()}
