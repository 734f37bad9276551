"""The per-process adapter registry: four pieces over one store, composed here.

* the **task table** (:mod:`adapters.table`): a row per task, an entry per (task,
  version) with its state, the rollout policy and shadow comparisons; lock-free reads;
* **residency** (:mod:`adapters.residency`): single-flight loads, the request path's
  lookups, and the eviction cache of LoRA and top-layers adapters within
  ``adapter_budget_bytes``, whose removal callback frees every cache derived from an adapter;
* the **store follower** (:mod:`adapters.follower`): the only code that syncs from the
  store; a request's miss asks it to catch up on one task;
* the **lifecycle** (:mod:`adapters.lifecycle`): register, activate, delete, pin, set / drop
  a candidate, promote; it owns the writer lock and every store write, and states the
  lock order.

:class:`Registry` wires them together and keeps the one-object API the tests, training's
evaluation and the benches use (``Registry(store, backbones)``, ``register``, ``resolve``,
``sync``...). It holds no state of its own: each method is one piece's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from adapters.backbones.base import Backbone
from adapters.errors import NotFound
from adapters.follower import StoreFollower
from adapters.lifecycle import Change, Lifecycle
from adapters.namespaces import namespace_of
from adapters.shared_sets import SWITCH_GRACE_S, SharedSets
from adapters.loading import LoadedAdapter
from adapters.residency import Residency
from adapters.rollout import RolloutPolicy
from adapters.shadow import ShadowStats
from adapters.store.base import AdapterStore, Alias, check_name
from adapters.table import Task, TaskTable

__all__ = ["Change", "Registry"]


class Registry:
    """``register / activate / delete / resolve / sync / pin / list`` over one store.

    ``adapter_budget_bytes``: the byte budget of the eviction cache (LoRA and top-layers
    adapters; the service's setting is ``TASKSWAP_ADAPTER_BUDGET_MB``).

    >>> import tempfile
    >>> from adapters.store import open_store
    >>> Registry(open_store(tempfile.mkdtemp()), {}).list()
    []
    """

    def __init__(self, store: AdapterStore, backbones: dict[str, Backbone],
                 adapter_budget_bytes: int = 512 << 20, events=None, full_sync_every_s: float = 3600.0):
        self.store = store
        self.backbones = backbones
        self.events = events  # optional observer with on_load(adapter, seconds), on_register(kind)
        self.table = TaskTable(on_release=self._let_go)
        self.residency = Residency(self.table, store, backbones, adapter_budget_bytes, events)
        self.follower = StoreFollower(store, self.residency, full_sync_every_s)
        self.residency.catch_up = self.follower.catch_up
        self.lifecycle = Lifecycle(store, self.residency, self.follower, backbones, events)
        self.shared_sets = SharedSets(self.lifecycle)  # a shared adaptation and its tasks, as one set

    def _let_go(self, key, loaded: LoadedAdapter) -> None:
        self.residency.let_go(key, loaded)

    # ---- settings and wiring ---------------------------------------------------------------
    @property
    def adapter_budget_bytes(self) -> int:
        return self.residency.cache.budget_bytes

    @adapter_budget_bytes.setter
    def adapter_budget_bytes(self, value: int) -> None:
        self.residency.cache.budget_bytes = value

    @property
    def resident_bytes(self) -> int:
        """Bytes of the evictable (LoRA, top layers) adapters held now, against the budget."""
        return self.residency.cache.nbytes

    @property
    def run_probe(self):
        return self.lifecycle.run_probe

    @run_probe.setter
    def run_probe(self, run) -> None:
        self.lifecycle.run_probe = run

    @property
    def writer(self):
        return self.lifecycle.writer

    @property
    def full_sync_every_s(self) -> float:
        return self.follower.full_sync_every_s

    @property
    def last_sync(self) -> dict:
        return self.follower.last_sync

    @property
    def generation(self) -> int:
        return self.follower.generation

    # ---- reading ---------------------------------------------------------------------------
    @property
    def aliases(self) -> dict[str, Alias]:
        """Every task's alias as of the last sync or local change (a snapshot)."""
        return self.table.aliases()

    def resolve(self, task: str) -> LoadedAdapter:
        return self.residency.resolve(task)

    def resolve_version(self, task: str, version: str) -> LoadedAdapter:
        return self.residency.resolve_version(task, version)

    def candidate(self, task: str, version: str) -> LoadedAdapter:
        return self.residency.candidate(task, version)

    def policy(self, task: str) -> RolloutPolicy | None:
        """``task``'s rollout policy, as the runtime's ``rollout`` reads it (lock-free)."""
        return self.table.policy(task)

    def shadow_stats(self, task: str, active: str, candidate: str) -> ShadowStats:
        return self.table.shadow_stats(task, active, candidate)

    def shadow_reports(self, task: str) -> list[dict]:
        return self.table.shadow_reports(task)

    def list(self) -> list[dict]:
        with self.table.lock:
            rows = sorted(self.table.rows.items())
            return [self._describe(name, row) for name, row in rows]

    def page(self, name: str | None = None, offset: int = 0, limit: int | None = None,
             visible: Callable[[str], bool] | None = None) -> tuple[list[dict], int, int | None]:
        """One page of :meth:`list`: ``(tasks, total matching, next offset or None)``, tasks
        whose name contains ``name`` (case-insensitive) and that ``visible`` accepts, in name
        order. Only the page's tasks are described (the sorted name index cuts the page)."""
        with self.table.lock:
            names, total, next_offset = self.table.names.window(name, offset, limit, visible)
            return [self._describe(n, self.table.rows[n]) for n in names], total, next_offset

    def count(self) -> int:
        """How many tasks are registered (as of the last sync or local change)."""
        return self.table.count()

    def show(self, name: str) -> dict:
        row = self.table.get(check_name(name))
        if row is None:
            self.follower.catch_up(name)
            row = self.table.get(name)
        if row is None:
            raise NotFound(f"task {name!r} is not registered")
        with self.table.lock:
            return self._describe(name, row)

    def _describe(self, name: str, row: Task) -> dict:
        return self.table.describe(name, row)

    # test and debugging views derived from the pieces (nothing is stored twice)
    @property
    def _tasks(self) -> dict[str, Task]:
        return self.table.rows

    @property
    def _lock(self):
        return self.table.lock

    @property
    def _loras(self) -> list[tuple[str, str]]:
        """Resident evictable versions, least recently used first (keys ``(task, version)``)."""
        return list(self.residency.cache)

    @property
    def _active(self) -> dict[str, LoadedAdapter]:
        """Task -> the resident adapter answering it (tasks whose version is not loaded are absent)."""
        with self.table.lock:
            return {n: a for n in self.table.rows if (a := self.table.serving(n)) is not None}

    def _evict_over_budget(self, keep=None) -> None:
        self.residency.fit(keep)

    def resident_loras(self) -> int:
        return len(self.residency.cache)

    def loaded_count(self) -> int:
        """Resident versions that serve a task, plus resident evictable adapters."""
        with self.table.lock:
            return self.table.resident_heads() + len(self.residency.cache)

    # ---- lifecycle -------------------------------------------------------------------------
    def register(self, folder: Path, name: str | None = None, labels: list[str] | None = None,
                 backbone: str | None = None, expected: str | None = None,
                 activate: bool = True) -> LoadedAdapter:
        """Validate, load, store and activate an adapter folder; returns the live version
        (see :meth:`Lifecycle.register`, which also says which version it replaced)."""
        return self.lifecycle.register(folder, name, labels, backbone, expected, activate).loaded

    def register_replacing(self, folder: Path, name: str | None = None, labels: list[str] | None = None,
                           backbone: str | None = None, expected: str | None = None,
                           activate: bool = True, authorize: Callable[[str], None] | None = None) -> Change:
        """``(the live version, the version it replaced or None)``: :meth:`Lifecycle.register`."""
        return self.lifecycle.register(folder, name, labels, backbone, expected, activate, authorize)

    def activate(self, name: str, version: str, expected: str | None = None) -> LoadedAdapter:
        """Roll a task to one of its stored versions (loaded and checked before the switch)."""
        return self.lifecycle.activate(name, version, expected).loaded

    def delete(self, name: str, expected: str | None = None) -> None:
        self.lifecycle.delete(name, expected)

    def pin(self, name: str, pinned: bool = True) -> None:
        self.lifecycle.pin(name, pinned)

    def set_candidate(self, task: str, version: str, mode: str, fraction: float) -> RolloutPolicy:
        return self.lifecycle.set_candidate(task, version, mode, fraction)

    def drop_candidate(self, task: str) -> None:
        self.lifecycle.drop_candidate(task)

    def promote(self, task: str) -> Change:
        """The candidate becomes active; ``replaced`` is the version active before."""
        return self.lifecycle.promote(task)

    def start(self, set_grace_s: float = SWITCH_GRACE_S) -> dict:
        """Start-up: every task's row from the store's index, nothing loaded; each task's
        adapter loads on its first request (see :meth:`StoreFollower.start`). Then a shared
        adaptation's set that a dead process left half switched is put back on one set
        (:meth:`SharedSets.recover_at_start`: those whose owner's lease has expired; ``set_grace_s``
        is the lease of a set document written before leases existed); the answer's
        ``"shared_sets"`` says which."""
        started = self.lifecycle.start()
        with self.table.lock:
            namespaces = {namespace_of(name) for name in self.table.rows if "/" in name}
        return {**started, "shared_sets": self.shared_sets.recover_at_start(namespaces, set_grace_s)}

    @property
    def last_start(self) -> dict:
        return self.follower.last_start

    def sync(self, force: bool = False, wait: bool = True) -> bool:
        """Follow the store as its one writer; with ``wait=False``, skip it while another
        writer holds the lock (that writer brings this process up to date)."""
        return self.lifecycle.sync(force, wait)
