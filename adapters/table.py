"""The task table: one row per task, one entry per (task, version) this process knows of.

A row (:class:`Task`) holds the task's alias as the store last said, which version answers
its requests here, its :class:`Entry` per version, and its rollout policy (the candidate
version and how it is exercised) with this process's shadow comparisons. An entry is the
one place a version's state lives:

* ``state`` — ``unloaded`` (in the store, not loaded in this process yet: a LoRA learnt
  from the store's watcher loads on its first request), ``loading``, ``ready``,
  ``failed`` (``error`` says why; the next request retries), ``evicted`` (pushed out of
  the memory budget by :mod:`adapters.residency`; it reloads on its next request);
* ``adapter`` — the loaded version, or None: the table's one reference to it;
* ``loading`` — the in-flight load's future (single flight: later callers wait on it);
* ``pinned`` — on the active version of a pinned task (the pin moves with the active
  version).

Entries are kept for a task's active version, the version that serves, versions being
loaded and versions still resident; any other entry is pruned as soon as it is none of
these, so the table stays the size of what is registered plus what is in memory.

Requests read the table without a lock (:meth:`TaskTable.serving`, :meth:`TaskTable.policy`:
task -> row -> entry -> adapter, each read atomic). Every change holds :attr:`TaskTable.lock`
for a few dictionary operations and never across store I/O (the lock order is stated in
:mod:`adapters.lifecycle`). The table does no I/O and frees nothing itself: an adapter it
lets go goes to ``on_release`` (the residency's one way out of memory).

>>> t = TaskTable(on_release=lambda key, loaded: None)
>>> t.serving("absent") is None and t.count()
0
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from adapters.format.interning import compact_alias
from adapters.loading import LoadedAdapter
from adapters.name_index import NameIndex
from adapters.rollout import RolloutPolicy, policy_applies
from adapters.shadow import ShadowStats
from adapters.store.base import Alias

Key = tuple[str, str]  # (task, version)


@dataclass(slots=True)
class Entry:
    """One (task, version) in this process. Small on purpose: one per registered task."""

    state: str  # unloaded | loading | ready | failed | evicted (see the module docstring)
    adapter: LoadedAdapter | None = None
    loading: Future | None = None
    pinned: bool = False
    error: str | None = None
    load_seconds: float | None = None


@dataclass(slots=True)
class Task:
    """One task's row: its alias (the store's truth), the version that answers it here
    (the alias's active one, except while a newer active version failed to load in this
    process: the old one keeps answering), its entries by version, and its rollout
    policy as the store last said (``policy``, checked against the alias when read) with
    this process's shadow comparisons by (active, candidate)."""

    alias: Alias
    serving: str
    versions: dict[str, Entry] = field(default_factory=dict)
    policy: RolloutPolicy | None = None
    shadow: dict[tuple[str, str], ShadowStats] | None = None


class TaskTable:
    """Rows by task name; lock-free reads, changes under :attr:`lock` (see the module docstring).

    ``on_release(key, loaded)``: called (under the lock) for every resident adapter the
    table lets go — a task dropped, a replaced version, a head no longer serving.
    """

    def __init__(self, on_release: Callable[[Key, LoadedAdapter], None]):
        self.lock = threading.RLock()  # guards the rows; reads on the request path take none
        self.rows: dict[str, Task] = {}
        self.names = NameIndex()  # the rows' names, sorted (pages of the listing)
        # Bumped by every local change that a store snapshot read before it must not undo
        # (a register/activate/delete, a miss's catch-up): see adapters.follower.
        self.local_seq = 0
        self._on_release = on_release
        # loaded_count without a pass over every task: tasks whose serving version is a resident
        # non-evictable adapter, brought up to date from the tasks marked since the last count
        self._resident_heads: set[str] = set()
        self._dirty: set[str] = set()  # tasks whose residency or serving version moved

    # ---- lock-free reads (the request path) --------------------------------------------
    def get(self, name: str) -> Task | None:
        return self.rows.get(name)

    def serving(self, name: str) -> LoadedAdapter | None:
        """The resident adapter answering ``name``, or None (lock-free: each read is atomic)."""
        row = self.rows.get(name)
        if row is None:
            return None
        entry = row.versions.get(row.serving)
        return entry.adapter if entry is not None else None

    def resident(self, name: str, version: str) -> LoadedAdapter | None:
        """``name@version``'s resident adapter, or None (lock-free)."""
        row = self.rows.get(name)
        entry = row.versions.get(version) if row is not None else None
        return entry.adapter if entry is not None else None

    def policy(self, name: str) -> RolloutPolicy | None:
        """``name``'s rollout policy, if its candidate is a stored, non-active version (lock-free)."""
        row = self.rows.get(name)
        if row is None or row.policy is None:
            return None
        return row.policy if policy_applies(row.policy, row.alias) else None

    def count(self) -> int:
        return len(self.rows)

    # ---- snapshots -------------------------------------------------------------------
    def aliases(self) -> dict[str, Alias]:
        with self.lock:
            return {name: row.alias for name, row in self.rows.items()}

    def describe(self, name: str, row: Task) -> dict:
        """What ``GET /adapters/{name}`` shows of a row (caller holds the lock)."""
        alias = row.alias
        active = row.versions[alias.active]
        serving = row.versions.get(row.serving)
        loaded = serving.adapter if serving is not None else None
        m = loaded.manifest if loaded is not None else None
        outputs = loaded.task.describe(m) if m else {"labels": alias.find(alias.active).labels}
        return {
            "name": name, "active_version": alias.active, "state": active.state, "error": active.error,
            "kind": m.kind if m else alias.find(alias.active).kind, **outputs,
            "backbone": loaded.backbone.name if loaded else None,
            "task_type": m.task_type if m else alias.find(alias.active).task_type,
            "metrics": m.metrics if m else {}, "pinned": active.pinned,
            "versions": [v.model_dump() for v in alias.versions], "updated_at": alias.updated_at,
        }

    # ---- shadow comparisons (this process's observations, kept on the row) -------------
    def shadow_stats(self, name: str, active: str, candidate: str) -> ShadowStats:
        """The comparison of ``name``'s ``active`` and ``candidate`` versions (created on first
        use; a task no longer in the table gets a throw-away one)."""
        with self.lock:
            row = self.rows.get(name)
            if row is None:
                return ShadowStats(name, active, candidate)
            if row.shadow is None:
                row.shadow = {}
            stats = row.shadow.get((active, candidate))
            if stats is None:
                stats = row.shadow[(active, candidate)] = ShadowStats(name, active, candidate)
            return stats

    def shadow_reports(self, name: str) -> list[dict]:
        """Every comparison this process has for ``name`` (one per active/candidate pair)."""
        with self.lock:
            row = self.rows.get(name)
            stats = list(row.shadow.values()) if row is not None and row.shadow else []
        return [s.report() for s in stats]

    # ---- changes (the caller holds the lock) -------------------------------------------
    def set_policy(self, name: str, policy: RolloutPolicy | None, forget_shadow: bool = False) -> None:
        row = self.rows.get(name)
        if row is not None:
            row.policy = policy
            if forget_shadow:
                row.shadow = None

    def adopt(self, name: str, alias: Alias) -> Task:
        """Take ``alias`` as ``name``'s truth: the active version gets an entry (``unloaded``
        if new) and the pin moves to it. Which version serves is left to the caller
        (:meth:`install`)."""
        alias = compact_alias(alias)  # equal parts (labels, kinds, pydantic sets) held once
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = Task(alias, alias.active)
            row.versions[alias.active] = Entry("unloaded")
            self.names.add(name)
            return row
        before, row.alias = row.alias.active, alias
        entry = row.versions.get(alias.active)
        if entry is None:
            entry = row.versions[alias.active] = Entry("unloaded")
        if before != alias.active:
            old = row.versions.get(before)
            if old is not None and old.pinned:
                old.pinned, entry.pinned = False, True
            self.prune(name, row, before)
        if len(row.versions) > 1:  # resident candidates (heads) go once out of the history
            history = {v.version for v in alias.versions}
            for version in [v for v in row.versions if v not in history and v != row.serving]:
                self.retire(name, row, version)
        return row

    def hold(self, name: str, row: Task, loaded: LoadedAdapter) -> Entry:
        """Record ``loaded`` as ``name``'s resident adapter of its version."""
        entry = row.versions.get(loaded.version)
        if entry is None:
            entry = row.versions[loaded.version] = Entry("ready")
        previous = entry.adapter
        entry.adapter, entry.state, entry.error = loaded, "ready", None
        self._dirty.add(name)
        entry.load_seconds = loaded.load_seconds
        if previous is not None and previous is not loaded:
            self._on_release((name, loaded.version), previous)  # the same version registered again
        return entry

    def serve(self, name: str, row: Task, version: str) -> None:
        """The hot swap: ``version`` answers ``name`` from now on."""
        before, row.serving = row.serving, version
        self._dirty.add(name)
        if before != version:
            self.retire(name, row, before)

    def drop(self, name: str) -> None:
        """Forget ``name`` and let every resident version of it go."""
        row = self.rows.pop(name, None)
        if row is None:
            return
        self.names.discard(name)
        for version, entry in row.versions.items():
            if entry.adapter is not None:
                adapter, entry.adapter = entry.adapter, None
                self._on_release((name, version), adapter)
        self._dirty.add(name)

    def retire(self, name: str, row: Task, version: str) -> None:
        """A version no longer serving: resident kinds leave memory now; evictable ones stay
        in the residency cache, which lets them go when it drops them."""
        entry = row.versions.get(version)
        if entry is not None and entry.adapter is not None and not entry.adapter.impl.evictable:
            adapter, entry.adapter = entry.adapter, None
            self._on_release((name, version), adapter)
            self._dirty.add(name)
        self.prune(name, row, version)

    def evicted(self, key: Key, loaded: LoadedAdapter) -> None:
        """The residency cache dropped ``loaded``: its entry says ``evicted`` (or goes, if the
        version is neither active nor serving)."""
        row = self.rows.get(key[0])
        entry = row.versions.get(key[1]) if row is not None else None
        if entry is None or entry.adapter is not loaded:
            return
        entry.adapter, entry.state = None, "evicted"
        self._dirty.add(key[0])
        self.prune(key[0], row, key[1])

    @staticmethod
    def prune(name: str, row: Task, version: str) -> None:
        """Forget ``version``'s entry unless it is active, serving, loading or resident."""
        entry = row.versions.get(version)
        if (entry is not None and version != row.alias.active and version != row.serving
                and entry.loading is None and entry.adapter is None):
            del row.versions[version]

    def mark(self, name: str) -> None:
        """``name``'s residency or serving version moved (for :meth:`resident_heads`)."""
        self._dirty.add(name)

    def resident_heads(self) -> int:
        """Tasks whose serving version is a resident non-evictable adapter. It is read after
        every batch, so it recounts only the tasks marked since the last call."""
        with self.lock:
            for name in self._dirty:
                row = self.rows.get(name)
                entry = row.versions.get(row.serving) if row is not None else None
                a = entry.adapter if entry is not None else None
                if a is not None and not a.impl.evictable:
                    self._resident_heads.add(name)
                else:
                    self._resident_heads.discard(name)
            self._dirty.clear()
            return len(self._resident_heads)
