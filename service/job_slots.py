"""A namespace's fit/adapt jobs at once, counted across replicas and workers through the store.

Each namespace has one document, ``job-slots/<namespace>`` (``{"jobs": [{"id", "at"}]}``),
changed by the store's compare-and-swap (:meth:`AdapterStore.update_document`), so two
replicas claiming the last slot at once never both get it. A claim first drops the entries
that no longer hold a slot: a job whose record in the store is final (succeeded, failed) or
whose worker stopped renewing its lease (its heartbeat older than ``lease_s``), and an entry
whose record was never written within ``lease_s`` of its claim (a worker that died in
between). Then, if ``limit`` jobs still hold slots, the claim is refused with
:class:`~adapters.errors.QuotaExceeded` (403 naming ``max_jobs``) and nothing is written.

A job that ends (succeeded, failed, or found lost) releases its slot at once
(:meth:`JobSlots.release`, one more compare-and-swap that drops its entry and any other
entry no longer holding a slot), so the document holds only live jobs. The pruning at the
next claim stays as the fallback for a worker that died before it could release: its
entry goes once its record is final or its lease has expired.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from adapters.errors import QuotaExceeded


def slots_key(namespace: str) -> str:
    return f"job-slots/{namespace}"


class JobSlots:
    """``JobSlots(store, lease_s, record_of).claim(namespace, job_id, limit)``; ``record_of(id)``:
    the job's freshest record (this worker's copy, else the store's, judged by its lease)."""

    def __init__(self, store, lease_s: float, record_of: Callable[[str], dict | None],
                 live: Callable[[dict], bool]):
        self.store, self.lease_s = store, lease_s
        self.record_of, self.live = record_of, live

    def holds(self, entry: dict, now: datetime) -> bool:
        """Does the job of ``entry`` still hold its slot?"""
        record = self.record_of(entry["id"])
        if record is None:  # claimed, record not written yet (or its worker died in between)
            try:
                claimed = datetime.fromisoformat(entry["at"])
            except (KeyError, TypeError, ValueError):
                return False
            return (now - claimed).total_seconds() <= self.lease_s
        return self.live(record)

    def claim(self, namespace: str, job_id: str, limit: int | None) -> int:
        """Take a slot for ``job_id`` (refused past ``limit``; None: no limit, the job is
        still counted); returns the jobs holding slots before this one."""
        held: list[int] = []

        def change(doc: dict | None) -> dict:
            now = datetime.now(timezone.utc)
            jobs = [e for e in (doc or {}).get("jobs", []) if self.holds(e, now)]
            held[:] = [len(jobs)]
            if limit is not None and len(jobs) >= limit:
                raise QuotaExceeded(
                    f"namespace {namespace!r} is at its max_jobs quota: {len(jobs)} fit/adapt jobs "
                    f"queued or running (on every replica) of {limit}; wait for one to finish "
                    "(GET /jobs/{id}) or ask an admin to raise the quota", quota="max_jobs")
            return {"jobs": [*jobs, {"id": job_id, "at": now.isoformat()}]}

        self.store.update_document(slots_key(namespace), change)
        return held[0]

    def release(self, namespace: str, job_id: str) -> bool:
        """Drop ``job_id``'s entry (its job has ended) and every entry no longer holding a
        slot; True if its entry was there. Writes nothing when there is nothing to drop."""
        found: list[bool] = []

        def change(doc: dict | None) -> dict | None:
            entries = (doc or {}).get("jobs", [])
            now = datetime.now(timezone.utc)
            kept = [e for e in entries if e.get("id") != job_id and self.holds(e, now)]
            found[:] = [any(e.get("id") == job_id for e in entries)]
            if doc is None or len(kept) == len(entries):
                raise _Unchanged
            return {**doc, "jobs": kept}

        try:
            self.store.update_document(slots_key(namespace), change)
        except _Unchanged:
            pass
        return bool(found and found[0])


class _Unchanged(Exception):
    """Raised inside a document change that has nothing to write (no store write at all)."""
