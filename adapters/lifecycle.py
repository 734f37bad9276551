"""The adapter lifecycle: register, activate, delete, pin, set / drop a candidate, promote.

Every store write of the registry happens here, one writer at a time, with the dry run and
the compatibility checks before anything is published; each verb returns what the caller
needs (the new version, the one it replaced).

Lock order (a thread holding one of these only ever takes those below it):

1. ``Lifecycle.writer`` — the one-writer rule: a lifecycle verb, or a store follower's
   ``sync`` or start-up ``start`` (:meth:`Lifecycle.sync`, :meth:`Lifecycle.start`). Held across store I/O (uploads, fsyncs, the alias
   compare-and-swap) and loads. No request path takes it: a request's miss asks the
   follower to ``catch_up`` on one task, which takes no writer lock.
2. ``StoreFollower._sync_lock`` — one sync round at a time.
3. ``TaskTable.lock`` — a few dictionary operations to record a change (install a version,
   drop a task, move a pin, set a policy). Never held across store I/O, a load, a dry run
   or a wait on another lock or future.

A prediction reads the table without a lock and takes ``TaskTable.lock`` only for an LRU
touch or to record a load it made itself, so it never waits on a store write; a load it
needs (an evicted LoRA) is single-flight with any other load of that version, never with
a registration's upload or swap. ``tests/unit/test_lifecycle_locks.py`` holds a store whose
writes sleep and checks that predictions keep answering during activate and delete.

A stale store snapshot never undoes a local change: every install here bumps
``TaskTable.local_seq`` under the table lock, and the follower installs a snapshot only
if that number did not move while it read.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

from adapters.backbones.base import Backbone
from adapters.dryrun import check_outputs_finite
from adapters.errors import Conflict, IncompatibleAdapter, NotFound
from adapters.follower import StoreFollower
from adapters.format.adapter_dir import manifest_bytes
from adapters.kinds import KINDS
from adapters.loading import LoadedAdapter, load_adapter, prepare_adapter
from adapters.plugin_checks import read_adapter_dir
from adapters.quota_checks import folder_bytes
from adapters.residency import Residency, evictable, release
from adapters.rollout import Mode, RolloutPolicy, now
from adapters.store.base import AdapterStore, Alias, VersionInfo, check_expected, check_name


SHARED_KINDS = frozenset(k.name for k in KINDS.values() if k.provides_shared_trunk)
"""Kinds whose versions other tasks ride on (``shared_lora``)."""


def shared_ref(m) -> str | None:
    """``"name@version"`` of the shared adaptation a manifest rides on, or None."""
    return None if m.shared is None else f"{m.shared.name}@{m.shared.version}"


def riders(aliases: dict[str, Alias], shared: str) -> list[str]:
    """Tasks with any stored version riding on shared adaptation ``shared``, sorted.

    >>> v = VersionInfo(version="a" * 64, kind="multitask", created_at="", shared="base@" + "b" * 64)
    >>> riders({"t": Alias(name="t", active="a" * 64, versions=[v], updated_at="")}, "base")
    ['t']
    """
    return sorted(n for n, a in aliases.items()
                  if any(v.shared is not None and v.shared.split("@")[0] == shared for v in a.versions))


class Change(NamedTuple):
    """What a lifecycle verb did: the version that serves now, and the one it replaced
    (read inside the store's compare-and-swap; None if none, or if nothing was activated)."""

    loaded: LoadedAdapter
    replaced: str | None


def check_candidate(candidate: LoadedAdapter, active: LoadedAdapter) -> None:
    """Whether ``candidate`` may stand beside ``active`` in shadow or canary: it must answer
    the same kind of question and share the active version's trunk pass.

    >>> from types import SimpleNamespace as NS
    >>> m = NS(task_type="single_label"); bb = NS(name="text")
    >>> check_candidate(NS(manifest=m, backbone=bb, version="b" * 64), NS(manifest=m, backbone=bb))
    """
    target = candidate.version[:12]
    if candidate.manifest.task_type != active.manifest.task_type:
        raise IncompatibleAdapter(f"candidate {target} is a {candidate.manifest.task_type} task "
                                  f"but the active version is {active.manifest.task_type}; a "
                                  "candidate must answer the same kind of question")
    if candidate.backbone is not active.backbone:
        raise IncompatibleAdapter(f"candidate {target} runs on backbone {candidate.backbone.name!r} "
                                  f"but the active version on {active.backbone.name!r}; a candidate "
                                  "must share the active version's trunk pass")


class Lifecycle:
    """The verbs that change what is registered, over one store (see the module docstring)."""

    def __init__(self, store: AdapterStore, residency: Residency, follower: StoreFollower,
                 backbones: dict[str, Backbone], events=None):
        self.store = store
        self.residency = residency
        self.table = residency.table
        self.follower = follower
        self.backbones = backbones
        self.events = events  # optional observer with on_load(adapter, seconds), on_register(kind)
        self.writer = threading.RLock()  # the one-writer rule (see the lock order above)
        # How a registration's dry run runs its probe request: None = in the caller's
        # thread; a server routes it through its batcher (adapters.dryrun).
        self.run_probe = None
        # Size quotas: admit(name, stored bytes, loaded, is_new_task) raises to refuse a
        # registration before anything is stored (adapters.quota_checks); None = no quotas.
        self.admit = None

    # ---- following the store -------------------------------------------------------------
    def sync(self, force: bool = False, wait: bool = True) -> bool:
        """Follow the store as its one writer (:meth:`StoreFollower.sync`); with ``wait=False``,
        skip it while another writer holds the lock (that writer brings this process up to date)."""
        if not self.writer.acquire(blocking=wait):
            return False
        try:
            return self.follower.sync(force)
        finally:
            self.writer.release()

    def start(self) -> dict:
        """The first round at start-up, as the one writer: the table from the store's index,
        no adapter loaded (:meth:`StoreFollower.start`)."""
        with self.writer:
            return self.follower.start()

    def _installed(self, name: str, alias: Alias, loaded: LoadedAdapter | None) -> None:
        """Record a local change in the table (a few dictionary operations, no I/O)."""
        with self.table.lock:
            self.table.local_seq += 1
            self.residency.install(name, alias, loaded)

    def _fresh_alias(self, name: str) -> Alias:
        alias = self.store.get_alias(check_name(name))
        if alias is None:
            raise NotFound(f"task {name!r} is not registered")
        return alias

    # ---- register / activate / delete / pin ----------------------------------------------
    def register(self, folder: Path, name: str | None = None, labels: list[str] | None = None,
                 backbone: str | None = None, expected: str | None = None,
                 activate: bool = True, authorize: Callable[[str], None] | None = None) -> Change:
        """Register in one pass; returns ``(the live version, the version it replaced or None)``.

        The folder is read once (files, manifest, safetensors headers), checked against the
        backbone without writing anything, loaded (a dry run of the real thing), then stored
        once — the completed ``adapter.json`` goes straight into the store's staging copy —
        and published by the store's compare-and-swap, whose replaced alias is the answer's
        second half. ``expected``: a ``Conflict`` unless that version is active (optimistic
        concurrency for admins; see :func:`adapters.store.base.check_expected`), checked
        against the stored alias before anything is written, so a stale expectation leaves
        no version behind; the compare-and-swap stays the arbiter of a race that lands in
        between (its loser's version is unreferenced, and ``gc`` collects it after its grace).
        ``activate=False`` stores the version in the task's history as a candidate (for a
        shadow or canary rollout) and leaves the active version as it is (replaced: None).
        ``authorize(name)`` runs once the task's name is known (the manifest's, or the
        override), before the dry run: it raises to refuse a caller that may not change it.
        """
        adir = read_adapter_dir(Path(folder))  # refuses links / pickles before anything else
        prep = prepare_adapter(adir, self.backbones, name, labels, backbone, fresh=True,
                               shared=self.residency.shared_adaptation)
        name = check_name(prep.manifest.name)
        if authorize is not None:
            authorize(name)
        if activate and expected is not None:  # a 409 before the dry run and the upload
            check_expected(name, self.store.get_alias(name), expected)
        # Validated before taking the writer lock: the dry run may wait for a batch slot.
        pending = load_adapter(prep, version="pending")  # validate fully before publishing
        try:  # and its numbers: a dry-run forward on probe inputs
            check_outputs_finite(pending, self.run_probe)
        except BaseException:
            release(pending)  # caches a probe batch built from it
            raise
        replace = {"adapter.json": manifest_bytes(prep.manifest)}
        size = folder_bytes(adir.path, replace)
        with self.writer:
            if self.admit is not None:
                try:
                    self.follower.sync()  # count what the namespace holds as the store says now
                    self.admit(name, size, pending, self.table.get(name) is None)
                except BaseException:
                    release(pending)
                    raise
            version = self.store.put_version(name, adir.path, replace)
            # The same tensors under their stored version (caches derived from them are keyed
            # by the tensors, so the dry run's stay valid).
            loaded = pending.with_version(version)
            info = VersionInfo(version=version, kind=prep.manifest.kind, labels=prep.manifest.labels,
                               task_type=prep.manifest.task_type, size=size,
                               shared=shared_ref(prep.manifest),
                               created_at=datetime.now(timezone.utc).isoformat())
            # The store's compare-and-swap runs outside the table lock (request threads and
            # the batch worker's metrics take it); the writer lock and local_seq keep a
            # concurrent sync's older snapshot from undoing it (see adapters.follower).
            if not activate:
                alias = self.store.add_version(name, version, info)
                with self.table.lock:
                    self.table.local_seq += 1
                    self.table.hold(name, self.table.adopt(name, alias), loaded)
                    if loaded.impl.evictable:
                        self.residency.remember((name, version), loaded)
            else:
                alias = self.store.publish(name, version, info, expected=expected)
                self._installed(name, alias, loaded)
        if self.events:
            self.events.on_register(loaded.kind)
            self.events.on_load(loaded, loaded.load_seconds)
        return Change(loaded, alias.replaced if activate else None)

    def activate(self, name: str, version: str, expected: str | None = None) -> Change:
        """Roll a task to one of its stored versions (loaded and checked before the switch)."""
        with self.writer:
            alias = self._fresh_alias(name)
            target = alias.find(version).version
            loaded = self.residency.load(name, target, activate=False)
            alias = self.store.activate(name, target, expected=expected)  # no table lock held
            self._installed(name, alias, loaded)
        return Change(loaded, alias.replaced)

    def delete(self, name: str, expected: str | None = None) -> None:
        """Delete a task from the store (and its rollout policy), then from the table.

        A shared adaptation that any stored version of another task rides on is refused
        (:class:`Conflict`, naming those tasks): delete or re-register them first. Deleting
        a task that rides on one never touches the adaptation (it is its own entry)."""
        with self.writer:
            alias = self._fresh_alias(name)
            if any(v.kind in SHARED_KINDS for v in alias.versions):
                users = riders(self.store.list_aliases(), name)
                if users:
                    raise Conflict(f"shared adaptation {name!r} is used by tasks {users}; delete "
                                   "them (or register their new versions on another adaptation) first")
            self.store.delete(name, expected=expected)  # no table lock held
            try:  # an object store keeps the policy file; a re-registered task must not inherit it
                if self.store.get_rollout(name) is not None:
                    self.store.update_rollout(name, lambda _old: None)
            except Exception:
                pass
            with self.table.lock:
                self.table.local_seq += 1
                self.table.drop(name)

    def pin(self, name: str, pinned: bool = True) -> None:
        """Keep a task's active evictable adapter resident whatever the budget (or release it).

        Pinning loads the adapter now if it is not resident; unpinning lets the budget
        evict it again (at once if the cache is over budget). The pin sits on the active
        version's entry and moves with the active version.
        """
        with self.writer:
            alias = self._fresh_alias(name)
            with self.table.lock:
                row = self.table.get(name)
                if row is None:  # registered elsewhere, not synced here yet: take the store's word
                    self.table.local_seq += 1
                    row = self.table.adopt(name, alias)
                row.versions[row.alias.active].pinned = pinned
                if not pinned:
                    self.residency.fit(keep=None)
            if (pinned and (name, alias.active) not in self.residency.cache
                    and evictable(alias.find(alias.active).kind)):
                self.residency.resolve(name)  # load it now; a resident one keeps its place

    # ---- rollout candidates -------------------------------------------------------------
    def set_candidate(self, task: str, version: str, mode: Mode, fraction: float) -> RolloutPolicy:
        """Put a stored, non-active version of ``task`` in shadow or canary: loaded and checked
        against the active version (:func:`check_candidate`) before the policy is published."""
        alias = self._fresh_alias(task)
        target = alias.find(version).version
        if target == alias.active:
            raise Conflict(f"version {target[:12]} is already the active version of {task!r}; "
                           "name another stored version as the candidate")
        with self.writer:
            self.sync()
            candidate = self.residency.candidate(task, target)  # loads and checks it now
            active = self.residency.resolve(task)
            check_candidate(candidate, active)
            policy = RolloutPolicy(task=task, candidate=target, mode=mode, fraction=fraction, updated_at=now())
            self.store.update_rollout(task, lambda _old: policy.model_dump())
            with self.table.lock:
                self.table.set_policy(task, policy)
            self.sync()
        return policy

    def drop_candidate(self, task: str) -> None:
        """Remove the task's candidate policy (the candidate stays a stored version) and this
        process's comparisons for it."""
        self._fresh_alias(task)
        with self.writer:
            self.store.update_rollout(task, lambda _old: None)
            with self.table.lock:
                self.table.set_policy(task, None, forget_shadow=True)
            self.sync()

    def promote(self, task: str) -> Change:
        """Make the candidate the active version (one atomic alias switch), then clear the
        policy; a crash between the two leaves a policy whose candidate is active, which
        is ignored. Returns the candidate and the version that was active before."""
        policy = self.store.get_rollout(check_name(task))
        alias = self._fresh_alias(task)
        if policy is None:
            raise Conflict(f"task {task!r} has no candidate in shadow or canary; set one first, "
                           "or activate a stored version for a plain switch")
        candidate = RolloutPolicy.model_validate(policy).candidate
        previous = alias.active
        with self.writer:
            loaded = self.activate(task, candidate).loaded
            self.store.update_rollout(task, lambda _old: None)
            with self.table.lock:
                self.table.set_policy(task, None)
            self.sync()
        return Change(loaded, previous)
