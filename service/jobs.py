"""Fit jobs: a head fitted from examples sent over HTTP, off the serving path.

``POST /adapters/{task}/fit`` answers ``202`` with a job; ``GET /jobs/{id}`` follows it.
Each job runs ``python -m training.fit_job`` in a **child process** at a lower CPU
priority (``nice``) with few torch threads:

- the service never imports ``training`` (imports flow service -> adapters <- training),
  yet the fit runs exactly the code of ``taskswap train --method head``;
- a child process does not share the server's GIL, so its Python-heavy epochs never stall
  the batcher thread; ``nice`` lets the kernel prefer the serving threads when cores are
  busy; and a crash or a runaway fit (``fit_timeout_s``) kills only the child;
- the cost is a second copy of the backbone in the child's memory while it runs, and its
  load time (seconds for the embedded models).

At most ``fit_max_jobs`` children run at once per worker; ``fit_max_queued`` more may wait,
beyond that a fit gets 429. A namespace's ``max_jobs`` quota counts its jobs on every replica
(:mod:`service.job_slots`); a job releases its slot when it ends. The child writes the adapter folder; the worker then registers
it through the same path as an upload (validated, content-addressed, atomic), as the active
version or as a shadow/canary candidate. Job records are written to the store
(``jobs/<id>.json``) at every phase change, so any replica or worker answers ``GET /jobs/{id}``.

**A lease per job**, so a job never stays ``queued``/``running`` after its worker died: while a
job is live, its worker rewrites the record's ``heartbeat_at`` every ``lease_s / 4`` (the
record carries ``lease_s``, ``TASKSWAP_FIT_LEASE_S``). A worker or replica that reads a live
record from the store with no heartbeat for longer than ``lease_s`` (a worker killed, its
host gone, or cut off from the store) marks it ``failed`` with error ``WorkerLost`` in the
store. The owner, if it was only stalled, sees that mark at its next heartbeat: it stops the
fit and registers nothing, so a job reported failed never publishes a version afterwards.
Timestamps come from each machine's clock: the lease must exceed the clock skew between
replicas. The judgement happens when a record is read (``GET /jobs/{id}``); a job nobody
reads keeps its last state in the store.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import signal
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from adapters.errors import CapacityError, InvalidInput, NotFound, QuotaExceeded, TaskswapError
from adapters.namespaces import namespace_of
from adapters.redact import redact
from service.job_slots import JobSlots

log = logging.getLogger("taskswap.jobs")
REPO = Path(__file__).resolve().parents[1]
CHILD_MODULES = {"fit": "training.fit_job", "adapt": "training.adapt_job"}
"""The child module each job kind runs (same spec/out/result.json contract)."""


def _child_setup(niceness: int) -> None:
    """In the fit child before exec: lower its CPU priority, and (Linux) have the kernel kill
    it if the worker that started it dies, so no fit outlives its server. (The signal follows
    the *thread* that forked; the runner's threads live as long as the worker.)"""
    if niceness:
        os.nice(niceness)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: close() still kills children on a clean shutdown


_LIVE = ("queued", "running")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _heartbeat_age(record: dict) -> float | None:
    """Seconds since a live record's last heartbeat; None when it is final or was written
    without a lease (before leases existed).

    >>> _heartbeat_age({"status": "succeeded", "heartbeat_at": "2020-01-01T00:00:00+00:00", "lease_s": 60})
    >>> _heartbeat_age({"status": "running", "heartbeat_at": "2020-01-01T00:00:00+00:00", "lease_s": 60}) > 1e8
    True
    """
    if record.get("status") not in _LIVE or "heartbeat_at" not in record or "lease_s" not in record:
        return None
    try:
        beat = datetime.fromisoformat(record["heartbeat_at"])
    except (TypeError, ValueError):
        return None
    return (datetime.now(timezone.utc) - beat).total_seconds()


@dataclass
class Job:
    id: str
    task: str
    promote: str
    examples: int
    spec: dict  # what the child reads (examples, backbone, options); never stored in the record
    extra: dict = field(default_factory=dict)  # e.g. canary_fraction, for the finishing step
    record: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None  # the fit child while it runs
    lost: bool = False  # another worker marked it failed (lease expired): never write or finish it
    kind: str = "fit"  # a key of CHILD_MODULES


class JobRunner:
    """A bounded pool of fit children. ``finish(job, adapter_dir, result) -> dict`` registers
    the fitted adapter and returns the job's public result.

    >>> r = JobRunner(store=None, replica_id="r", finish=None, max_jobs=1, max_queued=1, start=False)
    >>> r.max_jobs
    1
    """

    def __init__(self, store, replica_id: str, finish: Callable[[Job, Path, dict], dict] | None,
                 max_jobs: int = 1, max_queued: int = 4, timeout_s: float = 900.0,
                 niceness: int = 10, threads: int = 1, lease_s: float = 60.0, start: bool = True,
                 max_jobs_of: Callable[[str], int | None] = lambda namespace: None,
                 keep_finished: int = 256):
        self.store = store
        self.keep_finished = keep_finished  # finished jobs kept in memory (older ones: the store's record)
        self.max_jobs_of = max_jobs_of  # a namespace's quota of jobs at once, all replicas (None: none)
        self._slots = JobSlots(store, lease_s, self._record_of, self._holds_slot)
        self.lease_s = lease_s
        self.replica_id = replica_id
        self.finish = finish
        self.max_jobs, self.max_queued = max_jobs, max_queued
        self.timeout_s, self.niceness, self.threads = timeout_s, niceness, threads
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._records = threading.RLock()  # one writer of job records at a time: in memory and store in order
        self._stop = threading.Event()
        self._waiting = 0
        self._jobs: dict[str, Job] = {}
        self._children: set[subprocess.Popen] = set()
        self._threads = [threading.Thread(target=self._loop, name=f"taskswap-fit-{i}", daemon=True)
                         for i in range(max_jobs)]
        if start:
            for t in self._threads:
                t.start()
            threading.Thread(target=self._heartbeats, name="taskswap-fit-lease", daemon=True).start()

    # ---- API ---------------------------------------------------------------------------
    def submit(self, task: str, promote: str, spec: dict, examples: int, extra: dict | None = None,
               kind: str = "fit") -> dict:
        """Queue a job (``kind``: a key of :data:`CHILD_MODULES`); returns its record (status
        ``queued``) or raises 429 when full."""
        job_id = uuid.uuid4().hex
        with self._lock:
            if self._waiting >= self.max_queued:
                raise CapacityError(f"{self._waiting} fit jobs are already waiting (limit "
                                    f"{self.max_queued}, TASKSWAP_FIT_MAX_QUEUED); retry later",
                                    retry_after_s=10)
            self._check_quota(task, job_id)
            self._waiting += 1
        job = Job(job_id, task, promote, examples, spec, extra or {}, kind=kind)
        job.record = {"id": job.id, "kind": kind, "task": task, "status": "queued", "phase": "queued",
                      "promote": promote, "examples": examples, "created_at": _now(),
                      "replica_id": self.replica_id, "lease_s": self.lease_s, "heartbeat_at": _now()}
        self._jobs[job.id] = job
        self._save(job)
        self._q.put(job)
        return dict(job.record)

    def live(self, namespace: str) -> int:
        """Jobs of ``namespace`` queued or running on this worker."""
        return sum(1 for job in list(self._jobs.values())
                   if namespace_of(job.task) == namespace and job.record.get("status") in _LIVE)

    def _check_quota(self, task: str, job_id: str) -> None:
        """Claim one of the namespace's job slots, counted over every replica through the
        store (:mod:`service.job_slots`); a store without documents counts this worker's."""
        namespace = namespace_of(task)
        limit = self.max_jobs_of(namespace)
        if self.store is not None:
            try:
                self._slots.claim(namespace, job_id, limit)
                return
            except InvalidInput:  # a store that keeps no documents: this worker's jobs only
                pass
        if limit is None:
            return
        live = self.live(namespace)
        if live >= limit:
            raise QuotaExceeded(f"namespace {namespace!r} is at its max_jobs quota: {live} fit/adapt "
                                f"jobs queued or running on this worker of {limit}; wait for one to "
                                "finish (GET /jobs/{id}) or ask an admin to raise the quota",
                                quota="max_jobs")

    def _record_of(self, job_id: str) -> dict | None:
        job = self._jobs.get(job_id)
        return dict(job.record) if job is not None else self.store.get_job(job_id)

    def _holds_slot(self, record: dict) -> bool:
        """Queued or running, and its worker's lease renewed within ``lease_s``."""
        age = _heartbeat_age(record)
        return record.get("status") in _LIVE and (age is None or age <= float(record.get("lease_s", self.lease_s)))

    def get(self, job_id: str) -> dict:
        """The job's record: this worker's copy if it runs here, else the store's."""
        job = self._jobs.get(job_id)
        if job is not None:
            return dict(job.record)
        record = self.store.get_job(job_id)
        if record is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return self._judge(record)

    def close(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._q.put(None)
        with self._lock:
            children = list(self._children)
        for child in children:  # a server that stops takes its fits with it
            child.kill()

    # ---- running -----------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        try:
            self.store.put_job(job.id, job.record)
        except Exception as exc:  # the in-memory record still answers on this worker
            log.warning("job %s: record not written to the store: %s", job.id, exc)

    def _update(self, job: Job, **fields) -> None:
        with self._records:
            if job.lost:  # failed by another worker's judgement: that record stands
                return
            job.record = {**job.record, **fields}
            self._save(job)

    # ---- the lease -----------------------------------------------------------------------
    def _judge(self, record: dict) -> dict:
        """A store record as it stands, or marked ``failed`` (and written back) when it is
        live but its worker's heartbeat is older than its lease."""
        age = _heartbeat_age(record)
        if age is None or age <= float(record["lease_s"]):
            return record
        fresh = self.store.get_job(record["id"])  # read again right before taking it over
        if fresh != record:
            return fresh if fresh is not None else record
        outcome = (f"it may have registered its version before it was lost: see GET /adapters/{record.get('task')}"
                   if record.get("phase") == "registering" else "this job registered nothing; fit again")
        failed = {**record, "status": "failed", "phase": "done", "finished_at": _now(), "error": {
            "error": "WorkerLost",
            "message": (f"the worker running this job ({record.get('replica_id')}) stopped renewing "
                        f"its lease in phase {record.get('phase')!r}: no heartbeat for {age:.0f}s (lease "
                        f"{float(record['lease_s']):g}s, TASKSWAP_FIT_LEASE_S); it was stopped, killed or "
                        f"cut off from the store; {outcome}")}}
        try:
            self.store.put_job(record["id"], failed)
        except Exception as exc:  # the answer is the same; the next read retries the write
            log.warning("job %s: lost-worker record not written: %s", record["id"], exc)
        log.warning("job %s: marked failed, its worker %s stopped renewing its lease",
                    record["id"], record.get("replica_id"))
        return failed

    def _heartbeats(self) -> None:
        """Renew the lease of every live job of this worker every ``lease_s / 4``."""
        while not self._stop.wait(self.lease_s / 4):
            for job in list(self._jobs.values()):
                try:
                    self._beat(job)
                except Exception:  # a store hiccup: the next beat tries again
                    log.exception("job %s: heartbeat failed", job.id)

    def _beat(self, job: Job) -> None:
        with self._records:
            if job.lost or job.record.get("status") not in _LIVE:
                return
            stored = self.store.get_job(job.id)
            if stored is not None and stored.get("status") == "failed":  # judged dead meanwhile
                log.warning("job %s: another worker marked it failed (lease expired); stopping it", job.id)
                job.record, job.lost = stored, True
                if job.proc is not None:
                    job.proc.kill()
                return
            self._update(job, heartbeat_at=_now())

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
            try:
                self._run(job)
            except TaskswapError as exc:
                self._update(job, status="failed", phase="done", finished_at=_now(),
                             error={"error": type(exc).__name__, "message": redact(exc.message),
                                    "problems": [redact(p) for p in exc.problems]})
            except Exception as exc:  # never lose a job silently, never kill the loop
                log.exception("fit job %s failed", job.id)
                self._update(job, status="failed", phase="done", finished_at=_now(),
                             error={"error": "FitFailed", "message": (
                                 f"the fit job failed ({type(exc).__name__}: {redact(str(exc))[:300]})")})
            finally:
                job.spec = {}  # the examples are no longer needed in memory
                self._release_slot(job)
                self._forget_finished()

    def _release_slot(self, job: Job) -> None:
        """The job has ended: free its namespace's job slot now (:meth:`JobSlots.release`). A
        store that keeps no documents counted this worker's jobs, which end with their records;
        a failed write leaves the slot to the next claim's pruning (its record is final)."""
        if self.store is None:
            return
        try:
            self._slots.release(namespace_of(job.task), job.id)
        except InvalidInput:  # a store without documents: nothing was claimed there
            pass
        except Exception as exc:  # noqa: BLE001 - the next claim prunes the entry of a final record
            log.warning("job %s: its job slot was not released (%s: %s); the next claim drops it",
                        job.id, type(exc).__name__, exc)

    def _forget_finished(self) -> None:
        """Drop the oldest finished jobs from memory past ``keep_finished``: their records stay
        in the store (``get`` reads them there), so a long-running worker's memory stays bounded."""
        with self._lock:
            done = [j for j in list(self._jobs.values()) if j.record.get("status") not in _LIVE]
            for job in done[:max(0, len(done) - self.keep_finished)]:
                del self._jobs[job.id]

    def _run(self, job: Job) -> None:
        self._update(job, status="running", phase="starting", started_at=_now())
        work = Path(tempfile.mkdtemp(prefix=f"taskswap-fit-{job.id[:8]}-"))
        try:
            (work / "spec.json").write_text(json.dumps({**job.spec, "threads": self.threads}))
            code = self._child(job, work)
            result = json.loads((work / "out" / "result.json").read_text()) \
                if (work / "out" / "result.json").is_file() else None
            if result is None or result.get("status") != "fitted":
                why = (f"the fit ran past {self.timeout_s:g}s (TASKSWAP_FIT_TIMEOUT_S) and was stopped"
                       if code == "timeout" else f"the fit process exited with code {code}")
                err = result or {"error": "FitFailed", "message": why}
                self._update(job, status="failed", phase="done", finished_at=_now(),
                             error={k: err.get(k) for k in ("error", "message", "problems") if err.get(k)})
                return
            try:
                self._beat(job)  # renews the lease, or finds the job judged lost: register nothing
            except Exception as exc:  # the store could not be read: the heartbeats keep trying
                log.warning("job %s: lease not checked before registering: %s", job.id, exc)
            if job.lost:
                return
            self._update(job, phase="registering")
            public = self.finish(job, work / "out" / "adapter", result)
            self._update(job, status="succeeded", phase="done", finished_at=_now(), result=public)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _child(self, job: Job, work: Path) -> int | str:
        """Run the fit child to its end; its exit code, or ``"timeout"`` if it was killed."""
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        proc = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULES[job.kind], str(work / "spec.json"), str(work / "out")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(work / "stderr.log", "wb"),
            preexec_fn=functools.partial(_child_setup, self.niceness), text=True)
        with self._lock:
            self._children.add(proc)
        job.proc = proc
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            proc.kill()
        timer = threading.Timer(self.timeout_s, kill)
        timer.start()
        try:
            for line in proc.stdout:  # one JSON object per phase
                try:
                    phase = json.loads(line).get("phase")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if phase and phase != "done":
                    self._update(job, phase=phase)
            code = proc.wait()
        finally:
            timer.cancel()
            job.proc = None
            with self._lock:
                self._children.discard(proc)
        if code not in (0, 1, 2):
            tail = (work / "stderr.log").read_text(errors="replace")[-500:]
            log.warning("fit job %s: child exited with %s: %s", job.id, code, tail)
        return "timeout" if expired.is_set() else code
