"""Registrations off the serving path: one bounded, low-priority worker thread.

``POST /adapters`` hands its work (archive extraction, file and manifest checks,
safetensors headers, loading the tensors, content hashing and the store's fsynced
copy) to this queue instead of running it in the server's request threads:

- **one** worker thread does them one at a time, so however many admins upload at
  once, registrations take at most one thread's worth of CPU and GIL from serving;
- the thread runs at a lower CPU priority (Linux: ``nice`` is per thread), so when the
  cores are busy the kernel prefers the batch worker and the request threads;
- at most ``max_waiting`` more wait; beyond that a registration gets **429 with
  Retry-After** at once, instead of piling up uploads in memory;
- the new version's dry run needs no forward for a pooled head (scored on cached probe
  features, :mod:`adapters.dryrun`); any other forward it needs is submitted to the
  batcher as an ordinary request (:meth:`Engine._run_probe`), so no forward pass runs
  beside the batch worker's;
- only the last step touches serving state: the registry's one-assignment install,
  after the store's compare-and-swap (both under the registry's writer lock, which no
  request and not the batch worker takes).

Why a thread and not a child process: measured (docs/performance.md, "Registrations off
the serving path"), what is left here is a few milliseconds of CPU for adapters of a few
MB, and a child would need its own copy of every backbone for the plan and the dry run.
Its limit: a large archive's extraction and hashing still take the process's GIL in part
(a 48 MB archive slowed a pure-Python thread to 0.58-0.73x for ~2 s on a loaded 2-core
machine), which a lower priority does not prevent; extracting in a child is the next step.

``stats()`` says what waits and which thread (name, native id, niceness) ran the last
registration; ``/metrics`` has ``taskswap_registrations_waiting`` and
``taskswap_registrations_refused``.

>>> q = RegistrationQueue(max_waiting=1, niceness=0)
>>> q.submit(lambda: 41 + 1).result(timeout=5)
42
>>> q.close()
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

from adapters.errors import CapacityError

log = logging.getLogger("taskswap.registrations")


class RegistrationQueue:
    """``submit(fn, *args) -> Future``; one worker thread; 429 past ``max_waiting``."""

    def __init__(self, max_waiting: int = 8, niceness: int = 10, name: str = "taskswap-register"):
        self.max_waiting = max_waiting
        self.niceness = niceness
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0  # submitted, not yet started
        self._running = False
        self._closed = False
        self.done = 0
        self.refused = 0
        self.last_thread: dict | None = None  # {"name", "native_id", "pid", "niceness"} of the last run
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.native_id: int | None = None
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(5)

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        """Queue ``fn(*args, **kwargs)``; raises :class:`CapacityError` (429) when full."""
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise CapacityError("server is shutting down", retry_after_s=5)
            if self._waiting >= self.max_waiting:
                self.refused += 1
                busy = self._waiting + int(self._running)
                raise CapacityError(
                    f"{busy} registrations are already in progress or waiting on this worker "
                    f"(limit {self.max_waiting} waiting, TASKSWAP_REGISTER_MAX_QUEUED); retry shortly",
                    retry_after_s=max(1, busy))
            self._waiting += 1
        self._q.put((fut, fn, args, kwargs))
        return fut

    @property
    def in_progress(self) -> int:
        """Registrations waiting or running (the ``taskswap_registrations_waiting`` gauge)."""
        return self._waiting + int(self._running)

    def stats(self) -> dict:
        with self._lock:
            return {"waiting": self._waiting, "running": self._running, "done": self.done,
                    "refused": self.refused, "max_waiting": self.max_waiting,
                    "thread": self.last_thread}

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._q.put(None)
        self._thread.join(timeout=10)

    def _lower_priority(self) -> int | None:
        """Raise this thread's niceness (Linux: per thread); None where that is not possible."""
        self.native_id = threading.get_native_id()
        try:
            if self.niceness:
                os.setpriority(os.PRIO_PROCESS, self.native_id, os.getpriority(
                    os.PRIO_PROCESS, self.native_id) + self.niceness)
            return os.getpriority(os.PRIO_PROCESS, self.native_id)
        except (AttributeError, OSError) as exc:  # not Linux, or not permitted: still correct
            log.info("registration thread keeps the process priority (%s)", exc)
            return None

    def _loop(self) -> None:
        nice = self._lower_priority()
        self._started.set()
        while True:
            item = self._q.get()
            if item is None:
                return
            fut, fn, args, kwargs = item
            with self._lock:
                self._waiting -= 1
                self._running = True
            result, error = None, None
            if fut.set_running_or_notify_cancel():
                start = time.perf_counter()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # the caller's future carries it; the loop lives on
                    error = exc
                log.debug("registration ran in %.1f ms", 1000 * (time.perf_counter() - start))
            with self._lock:  # before the future completes: its callbacks see the queue as it is
                self._running = False
                self.done += 1
                self.last_thread = {"name": threading.current_thread().name,
                                    "native_id": self.native_id, "pid": os.getpid(), "niceness": nice}
            if fut.running():
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result)
            result = error = None  # no reference kept to the adapter or the traceback
