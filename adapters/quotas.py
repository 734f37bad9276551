"""Quotas per namespace: what a namespace may hold and how fast it may ask.

A namespace's quota is one store document, ``quotas/<namespace>`` (``meta/quotas/<ns>.json``,
:meth:`AdapterStore.update_document`), so every replica reads the same limits. A missing
document, or a missing field, means no limit; ``weight`` is the namespace's share of the
batch worker when namespaces compete (:mod:`adapters.namespace_queue`).

:class:`QuotaBook` keeps every namespace's quota in memory: the request path, the
registration check and the eviction budget read it without any store I/O (the budget reads
it under the task table's lock). :meth:`QuotaBook.refresh` re-reads the documents once
they are older than ``ttl_s``; the server calls it from its store watcher, so a change made
through another replica is seen here within ``ttl_s`` plus one watcher interval. A change
made through this process is seen at once. A store that cannot be read keeps the last
limits known (logged), and a process that never read them has none.

>>> Quota(max_tasks=3).limits()
{'max_tasks': 3}
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.errors import InvalidInput
from adapters.namespaces import DEFAULT_NAMESPACE
from adapters.store.base import AdapterStore, check_name

log = logging.getLogger("taskswap.quotas")

PREFIX = "quotas"


class Quota(BaseModel):
    """One namespace's limits (None: no limit) and its fair-sharing weight. Strict: a
    ``false`` is no number of jobs (an int is still a float)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    max_tasks: int | None = Field(None, ge=0, le=10**9, description="Tasks the namespace may hold.")
    max_stored_bytes: int | None = Field(None, ge=0, le=1 << 60, description=(
        "Bytes of every stored version of the namespace's tasks (each version's files; "
        "versions stored before sizes were recorded count 0)."))
    max_resident_bytes: int | None = Field(None, ge=0, le=1 << 60, description=(
        "The namespace's share of the evictable adapters' budget on each worker (LoRA, top "
        "layers): past it, its own least recently used adapters are evicted first."))
    max_jobs: int | None = Field(None, ge=0, le=10_000, description=(
        "Fit/adapt jobs queued or running at once, over every replica (counted through the store)."))
    max_inflight: int | None = Field(None, ge=1, le=4096, description=(
        "Requests of the namespace past admission at once on each worker (decoding, prepare, "
        "the queue, the trunk); the next ones wait at no CPU cost, up to "
        "TASKSWAP_NAMESPACE_MAX_WAITING, then 429. Null: the server's "
        "TASKSWAP_NAMESPACE_MAX_INFLIGHT."))
    requests_per_s: float | None = Field(None, ge=0.001, le=1e6, description=(
        "Inference requests per second, per worker (token bucket)."))
    rows_per_s: float | None = Field(None, ge=0.001, le=1e9, description=(
        "Trunk rows per second, per worker (token bucket)."))
    burst_s: float = Field(1.0, ge=0.1, le=3600, description=(
        "Bucket size in seconds of rate: a namespace idle that long may send that burst at once."))
    weight: float = Field(1.0, ge=0.01, le=100, description=(
        "Share of the batch worker when namespaces compete (deficit round-robin)."))

    def limits(self) -> dict:
        """The fields set to a limit (not None), for messages and listings."""
        return {k: v for k, v in self.model_dump().items()
                if v is not None and k not in ("burst_s", "weight")}


UNLIMITED = Quota()


def check_namespace(namespace: str) -> str:
    """A namespace is named like a bare task.

    >>> check_namespace("team-a")
    'team-a'
    """
    try:
        return check_name(namespace)
    except InvalidInput:
        raise InvalidInput(f"namespace {str(namespace)[:80]!r} is invalid: use 1-64 characters "
                           "a-z 0-9 _ . - starting with a letter or digit") from None


def document_key(namespace: str) -> str:
    return f"{PREFIX}/{check_namespace(namespace)}"


class QuotaBook:
    """Every namespace's quota, in memory, refreshed from the store every ``ttl_s``."""

    def __init__(self, store: AdapterStore, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.ttl_s = ttl_s
        self._clock = clock
        self._quotas: dict[str, Quota] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers take none

    # ---- reads (no I/O) ---------------------------------------------------------------
    def get(self, namespace: str) -> Quota:
        return self._quotas.get(namespace, UNLIMITED)

    def weight(self, namespace: str) -> float:
        return self.get(namespace).weight

    def all(self) -> dict[str, Quota]:
        return dict(self._quotas)

    # ---- the store -----------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Re-read every quota document if the copy is older than ``ttl_s``; True if read."""
        now = self._clock()
        if not force and self._read_at is not None and now - self._read_at < self.ttl_s:
            return False
        if not self._lock.acquire(blocking=force):
            return False
        try:
            quotas = {}
            for key in self.store.list_documents(PREFIX):
                namespace = key.split("/", 1)[1]
                quota = self._parse(namespace, self.store.get_document(key))
                if quota is not None:
                    quotas[namespace] = quota
            self._quotas, self._read_at = quotas, now
            return True
        except Exception as exc:  # noqa: BLE001 - keep serving on the last limits known
            log.warning("quotas not refreshed (%s: %s); the last limits read stay in force",
                        type(exc).__name__, exc)
            self._read_at = now  # retry after another ttl, not on every call
            return False
        finally:
            self._lock.release()

    @staticmethod
    def _parse(namespace: str, doc: dict | None) -> Quota | None:
        if doc is None:
            return None
        try:
            return Quota.model_validate(doc.get("quota", {}))
        except ValidationError as exc:
            log.warning("quota document of namespace %r is invalid, ignored: %s", namespace, exc)
            return None

    def read(self, namespace: str) -> Quota | None:
        """The stored quota of ``namespace`` (a store read, for the admin API), None if none."""
        return self._parse(namespace, self.store.get_document(document_key(namespace)))

    def set(self, namespace: str, quota: Quota) -> Quota:
        """Store ``quota`` for ``namespace`` (whole-document replace); in force here at once."""
        self.store.update_document(document_key(namespace),
                                   lambda _old: {"namespace": namespace, "quota": quota.model_dump()})
        self._quotas = {**self._quotas, namespace: quota}
        return quota

    def clear(self, namespace: str) -> bool:
        """Remove ``namespace``'s quota (no limits, weight 1); False if it had none."""
        had = self.store.get_document(document_key(namespace)) is not None
        self.store.update_document(document_key(namespace), lambda _old: None)
        self._quotas = {k: v for k, v in self._quotas.items() if k != namespace}
        return had


__all__ = ["DEFAULT_NAMESPACE", "Quota", "QuotaBook", "UNLIMITED", "check_namespace", "document_key"]
