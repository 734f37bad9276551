"""Request-rate and rows-per-second limits per namespace: token buckets, per worker process.

Each namespace with a rate in its quota (:class:`adapters.quotas.Quota`) has one bucket per
rate in each worker process, holding up to ``rate * burst_s`` tokens and refilled at
``rate`` per second. A request takes one request token and its trunk rows in row tokens.
A request larger than a whole bucket is let through once the bucket is full, leaving it in
debt (so a big request waits its turn instead of being refused for ever). Limits are per
worker: N replicas (or workers) together admit up to N times the rate.

>>> t = [0.0]
>>> b = TokenBucket(rate=2.0, capacity=2.0, clock=lambda: t[0])
>>> b.take(2), b.take(1)
(0.0, 0.5)
>>> t[0] = 0.5; b.take(1)
0.0
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from adapters.errors import RateLimited
from adapters.quotas import Quota


class TokenBucket:
    """``take(n)`` -> 0.0 if taken, else the seconds until it could be (nothing taken)."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.capacity = rate, capacity
        self._clock = clock
        self._tokens = capacity
        self._at = clock()

    def take(self, n: float) -> float:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        need = min(n, self.capacity)  # a request bigger than the bucket needs a full one
        if self._tokens >= need:
            self._tokens -= n
            return 0.0
        return (need - self._tokens) / self.rate


class RateLimits:
    """``admit(namespace, quota, rows)``: raise :class:`RateLimited` (429) when either of the
    namespace's buckets has no room; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[tuple[float, float], TokenBucket]] = {}
        self._lock = threading.Lock()

    def _bucket(self, namespace: str, which: str, rate: float | None, burst_s: float) -> TokenBucket | None:
        key = (namespace, which)
        if rate is None:
            self._buckets.pop(key, None)
            return None
        shape = (rate, max(rate * burst_s, 1.0))
        held = self._buckets.get(key)
        if held is None or held[0] != shape:  # new or changed quota: a full bucket of the new shape
            held = (shape, TokenBucket(shape[0], shape[1], self._clock))
            self._buckets[key] = held
        return held[1]

    def admit_request(self, namespace: str, quota: Quota) -> None:
        """Take one request token (before any work is done for the request)."""
        self._take(namespace, quota, "requests", quota.requests_per_s, 1, lambda wait: (
            f"namespace {namespace!r} is over its request rate quota (requests_per_s "
            f"{quota.requests_per_s:g}, burst {quota.burst_s:g}s on this worker); retry in {wait:.2f}s"))

    def admit_rows(self, namespace: str, quota: Quota, rows: int) -> None:
        """Take ``rows`` row tokens (once the request's trunk rows are known). A request refused
        here keeps its request token spent: it was a request."""
        self._take(namespace, quota, "rows", quota.rows_per_s, rows, lambda wait: (
            f"namespace {namespace!r} is over its rows quota (rows_per_s {quota.rows_per_s:g}, burst "
            f"{quota.burst_s:g}s on this worker; this request is {rows} rows); retry in {wait:.2f}s"))

    def admit(self, namespace: str, quota: Quota, rows: int) -> None:
        """:meth:`admit_request` then :meth:`admit_rows`."""
        self.admit_request(namespace, quota)
        self.admit_rows(namespace, quota, rows)

    def _take(self, namespace: str, quota: Quota, which: str, rate: float | None, n: float, message) -> None:
        if rate is None and not self._buckets:
            return
        with self._lock:
            bucket = self._bucket(namespace, which, rate, quota.burst_s)
            wait = bucket.take(n) if bucket is not None else 0.0
        if wait > 0:
            raise RateLimited(message(wait), retry_after_s=wait)
