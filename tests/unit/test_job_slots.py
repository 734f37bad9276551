"""A namespace's fit/adapt jobs at once counted over replicas through the store
(service/job_slots.py through service/jobs.py's JobRunner): two runners on two handles of
one store (two replicas), on the folder store and on S3 (moto). The runners are not started,
so a submitted job stays queued (live) until the test finishes it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from adapters.errors import CapacityError, QuotaExceeded
from service.job_slots import slots_key
from service.jobs import JobRunner
from support.replica_helpers import wait_for
from support.s3 import moto_s3  # noqa: F401  (session fixture)
from support.store_fixtures import kind, make_store  # noqa: F401  (fixtures: local and S3 stores)


def _runner(store, replica: str, limits: dict) -> JobRunner:
    return JobRunner(store=store, replica_id=replica, finish=None, max_jobs=1, max_queued=50, start=False,
                     lease_s=60.0, max_jobs_of=lambda ns: limits.get(ns))


def _finish(runner: JobRunner, job_id: str) -> None:
    runner._update(runner._jobs[job_id], status="succeeded", phase="done")


def test_the_jobs_quota_counts_every_replica_s_jobs(make_store):
    limits = {"team-a": 2}
    here, there = _runner(make_store(), "r1", limits), _runner(make_store(), "r2", limits)
    first = here.submit("team-a/x", "active", {}, 4)
    there.submit("team-a/y", "active", {}, 4)
    with pytest.raises(QuotaExceeded) as exc:  # two live, one on each replica: neither takes a third
        here.submit("team-a/z", "active", {}, 4)
    assert exc.value.quota == "max_jobs" and "2 fit/adapt jobs" in str(exc.value) and "of 2" in str(exc.value)
    with pytest.raises(QuotaExceeded):
        there.submit("team-a/z", "active", {}, 4)
    assert there.submit("team-b/x", "active", {}, 4)["status"] == "queued"  # another namespace: its own slots
    _finish(here, first["id"])  # a final record frees its slot, for every replica
    assert there.submit("team-a/z", "active", {}, 4)["status"] == "queued"


def test_a_job_whose_worker_stopped_renewing_its_lease_frees_its_slot(make_store):
    limits = {"team-a": 1}
    here, there = _runner(make_store(), "r1", limits), _runner(make_store(), "r2", limits)
    job = here.submit("team-a/x", "active", {}, 4)
    with pytest.raises(QuotaExceeded):
        there.submit("team-a/y", "active", {}, 4)
    stale = (datetime.now(timezone.utc) - timedelta(seconds=120)).isoformat()
    here._update(here._jobs[job["id"]], heartbeat_at=stale)  # r1 died: its heartbeat is older than the lease
    here._jobs.clear()  # (and r1 is gone: only the store's record is left)
    assert there.submit("team-a/y", "active", {}, 4)["status"] == "queued"


def test_racing_replicas_never_both_take_the_last_slot(make_store):
    limits = {"team-a": 1}
    runners = [_runner(make_store(), f"r{i}", limits) for i in range(4)]
    outcomes, barrier = [], threading.Barrier(len(runners))

    def go(r: JobRunner) -> None:
        barrier.wait()
        try:
            r.submit("team-a/x", "active", {}, 4)
            outcomes.append("queued")
        except (QuotaExceeded, CapacityError) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=go, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["QuotaExceeded"] * 3 + ["queued"], outcomes


def test_no_quota_no_limit(make_store):
    r = _runner(make_store(), "r1", {})
    assert all(r.submit("team-a/x", "active", {}, 4)["status"] == "queued" for _ in range(5))


def _slot_ids(store, namespace: str) -> list[str]:
    return [e["id"] for e in (store.get_document(slots_key(namespace)) or {}).get("jobs", [])]


def test_an_ended_job_releases_its_slot_at_once_for_every_replica(make_store):
    limits = {"team-a": 2}
    here, there = _runner(make_store(), "r1", limits), _runner(make_store(), "r2", limits)
    first = here.submit("team-a/x", "active", {}, 4)
    second = there.submit("team-a/y", "active", {}, 4)
    assert _slot_ids(here.store, "team-a") == [first["id"], second["id"]]
    _finish(here, first["id"])
    here._release_slot(here._jobs[first["id"]])  # what the runner's loop does when a job ends
    assert _slot_ids(there.store, "team-a") == [second["id"]]  # gone from the store, not only pruned later
    assert there._slots.release("team-a", first["id"]) is False  # twice: nothing to drop, nothing written
    there.submit("team-a/z", "active", {}, 4)


def test_a_running_runner_releases_the_slot_of_a_job_that_ends(make_store, tmp_path):
    """A started runner, a real child that fails at once (its spec names no examples): the
    job ends failed and its entry leaves the slot document without any later claim."""
    store = make_store()
    runner = JobRunner(store=store, replica_id="r1", finish=None, max_jobs=1, max_queued=5,
                       lease_s=60.0, max_jobs_of=lambda ns: 1)
    try:
        job = runner.submit("team-a/x", "active", {"bogus": True}, 1)
        assert _slot_ids(store, "team-a") == [job["id"]]
        wait_for(lambda: _slot_ids(store, "team-a") == [], "the ended job's slot released", timeout_s=300)
        assert runner.get(job["id"])["status"] == "failed"
        assert store.get_document(slots_key("team-a")) == {"jobs": []}
    finally:
        runner.close()
