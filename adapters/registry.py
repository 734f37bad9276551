"""The per-process owner of the adapter lifecycle: one table of entries per (task, version).

The table (``Registry._tasks``): task name -> :class:`Task` (the task's alias as the store
last said, which version answers its requests here, and its :class:`Entry` per version
this process knows of). An entry is the one place a version's state lives:

* ``state`` — ``unloaded`` (in the store, not loaded in this process yet: a LoRA learnt
  from the store's watcher loads on its first request), ``loading``, ``ready``,
  ``failed`` (``error`` says why; the next request retries), ``evicted`` (a LoRA pushed
  out of the memory budget; it reloads from the store on its next request);
* ``adapter`` — the loaded version, or None: the one reference the registry holds;
* ``loading`` — the in-flight load's future (single flight: later callers wait on it);
* ``pinned`` — on the active version of a pinned task (the pin moves with the active
  version);
* residency — a version is resident when ``adapter`` is set; evictable kinds' resident
  entries are also in ``Registry._lru`` (oldest first), which bounds them by
  ``lora_budget_bytes``. Heads are tiny and stay resident.

Entries are kept for a task's active version, the version that serves, versions being
loaded and versions still resident; any other entry is pruned as soon as it is none of
these, so the table stays the size of what is registered plus what is in memory.
The store is the truth: :meth:`sync` follows its generation number, so every replica and
worker converges on it.

Hot swap is one attribute assignment (``Task.serving``): a batch resolves each task to a
:class:`LoadedAdapter` when its row enters the batch and keeps that reference, so an
old version lives until the last batch using it ends.

Which versions stay resident is the adapter kind's call (``evictable``), never a name
test here. Every version leaving memory (evicted, replaced, deleted) goes through
:meth:`Registry._release`, which also drops every cache built from it (head weight stacks,
LoRA merged weights and factor stacks), so the budget counts what is really held.

One writer at a time: register / activate / delete / pin and the store watcher's sync
hold :attr:`Registry.writer`, so every caller (the service, training's evaluation) gets
the rule, and a registration's replaced version is the one it really replaced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from adapters.backbones.base import Backbone
from adapters import heads_batched
from adapters.dryrun import check_outputs_finite
from adapters.errors import InvalidInput, NotFound, TaskswapError
from adapters.format.adapter_dir import manifest_bytes, read_adapter_dir
from adapters.format.interning import compact_alias
from adapters.kinds import KINDS
from adapters.name_index import NameIndex
from adapters.loading import LoadedAdapter, load_adapter, prepare_adapter
from adapters.store.base import AdapterStore, Alias, VersionInfo, check_expected, check_name

log = logging.getLogger("taskswap.registry")


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
    process: the old one keeps answering), and its entries by version."""

    alias: Alias
    serving: str
    versions: dict[str, Entry] = field(default_factory=dict)


class Registry:
    """``register / activate / delete / resolve / sync / pin / list`` over one store.

    >>> import tempfile
    >>> from adapters.store import open_store
    >>> Registry(open_store(tempfile.mkdtemp()), {}).list()
    []
    """

    def __init__(self, store: AdapterStore, backbones: dict[str, Backbone],
                 lora_budget_bytes: int = 512 << 20, events=None, full_sync_every_s: float = 3600.0):
        self.store = store
        self.full_sync_every_s = full_sync_every_s  # the longest between two full listings
        self._full_synced_at = float("-inf")
        self.last_sync: dict = {}  # the last sync that ran: {"full", "tasks_read", "names" (None if full)}
        self._unseen: set[str] | None = None  # tasks synced since take_synced() (None: all)
        self.backbones = backbones
        self.lora_budget_bytes = lora_budget_bytes
        self.events = events  # optional observer with on_load(adapter, seconds), on_register(kind)
        self._lock = threading.RLock()  # guards the table; reads on the request path take none
        self._tasks: dict[str, Task] = {}  # the table (see the module docstring)
        self._names = NameIndex()  # the table's names, sorted (pages of the listing)
        # loaded_count without a pass over every task: tasks whose serving version is a resident
        # non-evictable adapter, brought up to date from the tasks marked since the last count
        self._resident_heads: set[str] = set()
        self._dirty: set[str] = set()  # tasks whose residency or serving version moved
        self._lru: OrderedDict[tuple[str, str], Entry] = OrderedDict()  # resident evictable, oldest first
        self._generation = -1
        self._local_seq = 0  # bumped by every local register/activate/delete
        self._sync_lock = threading.Lock()
        self.writer = threading.RLock()  # the one-writer rule (see the module docstring)
        # How a registration's dry run runs its probe request: None = in the caller's
        # thread; a server routes it through its batcher (adapters.dryrun).
        self.run_probe = None

    # ---- reading ---------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._generation

    @property
    def aliases(self) -> dict[str, Alias]:
        """Every task's alias as of the last sync or local change (a snapshot)."""
        with self._lock:
            return {name: row.alias for name, row in self._tasks.items()}

    def take_synced(self) -> list[str] | None:
        """The tasks the store changed, as synced since the last call (None: a full listing
        ran, so any task may have changed); for caches kept beside the registry."""
        with self._lock:
            names, self._unseen = self._unseen, set()
        return None if names is None else sorted(names)

    def aliases_of(self, names) -> dict[str, Alias]:
        """The aliases of those of ``names`` that are registered (a snapshot)."""
        with self._lock:
            return {n: row.alias for n in names if (row := self._tasks.get(n)) is not None}

    def resolve(self, task: str) -> LoadedAdapter:
        """The adapter that serves ``task`` now, loading it if evicted (single flight)."""
        loaded = self._serving(task)
        if loaded is None:
            self._sync()  # a miss may be a registration on another replica
            loaded = self._serving(task)
        if loaded is not None:
            if loaded.impl.evictable:
                self._touch((task, loaded.version))
            return loaded
        row = self._tasks.get(task) or self._adopt_unlogged(task)
        if row is None:
            known = ", ".join(self._names.window(None, 0, 20)[0]) or "none registered"
            raise NotFound(f"task {task!r} is not registered (tasks: {known})")
        return self._load(task, row.alias.active)

    def _adopt_unlogged(self, task: str) -> Task | None:
        """A task still unknown after a sync: read its alias once, in case its writer died
        between the alias write and the generation bump (the change log never named it)."""
        try:
            alias = self.store.get_alias(check_name(task))
        except InvalidInput:
            return None
        if alias is None:
            return None
        with self._lock:
            self._local_seq += 1  # a sync round in flight must not drop it
            return self._tasks.get(task) or self._adopt(task, alias)

    def _serving(self, task: str) -> LoadedAdapter | None:
        """The resident adapter answering ``task``, or None (lock-free: each read is atomic)."""
        row = self._tasks.get(task)
        if row is None:
            return None
        entry = row.versions.get(row.serving)
        return entry.adapter if entry is not None else None

    def resolve_version(self, task: str, version: str) -> LoadedAdapter:
        """One exact stored version of ``task`` (id or unique prefix), active or not.

        A stored version is immutable, so this answers the same whatever is active now
        (reproducible evaluation, a rollout pinned to a version). The active version comes
        from :meth:`resolve`; another LoRA version joins the LRU; another head version is
        loaded from the store on each call (a head file is a few KB).
        """
        row = self._tasks.get(check_name(task))
        if row is None:
            self._sync()
            row = self._tasks.get(task)
        if row is None:
            raise NotFound(f"task {task!r} is not registered")
        alias = row.alias
        target = alias.find(version).version
        if target == alias.active:
            loaded = self.resolve(task)
            if loaded.version == target:
                return loaded
        return self._load(task, target, activate=False)

    def candidate(self, task: str, version: str) -> LoadedAdapter:
        """A stored, non-active version of ``task`` (a rollout candidate), loaded once.

        Heads stay resident beside the active version (their entry keeps the adapter until
        the version leaves the task's history or becomes active); a LoRA candidate lives in
        the LoRA LRU like any other version (first in line for eviction, reloaded on demand).
        """
        row = self._tasks.get(task)
        entry = row.versions.get(version) if row is not None else None
        got = entry.adapter if entry is not None else None
        if got is not None:
            if got.impl.evictable:
                self._touch((task, version))
            return got
        loaded = self._load(task, version, activate=False)
        if not loaded.impl.evictable:
            with self._lock:
                row = self._tasks.get(task)
                if row is not None:
                    self._hold(task, row, loaded)
        return loaded

    def list(self) -> list[dict]:
        with self._lock:
            rows = sorted(self._tasks.items())
            return [self._describe(name, row) for name, row in rows]

    def page(self, name: str | None = None, offset: int = 0,
             limit: int | None = None) -> tuple[list[dict], int, int | None]:
        """One page of :meth:`list`: ``(tasks, total matching, next offset or None)``, tasks
        whose name contains ``name`` (case-insensitive), in name order. Only the page's
        tasks are described (the sorted name index cuts the page)."""
        with self._lock:
            names, total, next_offset = self._names.window(name, offset, limit)
            return [self._describe(n, self._tasks[n]) for n in names], total, next_offset

    def count(self) -> int:
        """How many tasks are registered (as of the last sync or local change)."""
        return len(self._tasks)

    def show(self, name: str) -> dict:
        row = self._tasks.get(check_name(name))
        if row is None:
            self._sync()
            row = self._tasks.get(name)
        if row is None:
            raise NotFound(f"task {name!r} is not registered")
        with self._lock:
            return self._describe(name, row)

    def _describe(self, name: str, row: Task) -> dict:
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
            "task_type": m.task_type if m else None,
            "metrics": m.metrics if m else {}, "pinned": active.pinned,
            "versions": [v.model_dump() for v in alias.versions], "updated_at": alias.updated_at,
        }

    # test and debugging views derived from the table (nothing is stored twice)
    @property
    def _loras(self) -> OrderedDict[tuple[str, str], Entry]:
        """Resident evictable versions, least recently used first (keys ``(task, version)``)."""
        return self._lru

    @property
    def _active(self) -> dict[str, LoadedAdapter]:
        """Task -> the resident adapter answering it (tasks whose version is not loaded are absent)."""
        with self._lock:
            return {n: a for n in self._tasks if (a := self._serving(n)) is not None}

    # ---- lifecycle -------------------------------------------------------------------
    def register(self, folder: Path, name: str | None = None, labels: list[str] | None = None,
                 backbone: str | None = None, expected: str | None = None,
                 activate: bool = True) -> LoadedAdapter:
        """Validate, load, store and activate an adapter folder; returns the live version
        (see :meth:`register_replacing`, which also says which version it replaced)."""
        return self.register_replacing(folder, name, labels, backbone, expected, activate)[0]

    def register_replacing(self, folder: Path, name: str | None = None, labels: list[str] | None = None,
                           backbone: str | None = None, expected: str | None = None,
                           activate: bool = True) -> tuple[LoadedAdapter, str | None]:
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
        """
        adir = read_adapter_dir(Path(folder))  # refuses links / pickles before anything else
        prep = prepare_adapter(adir, self.backbones, name, labels, backbone, fresh=True)
        name = check_name(prep.manifest.name)
        if activate and expected is not None:  # a 409 before the dry run and the upload
            check_expected(name, self.store.get_alias(name), expected)
        # Validated before taking the writer lock: the dry run may wait for a batch slot.
        loaded = load_adapter(prep, version="pending")  # validate fully before publishing
        try:  # and its numbers: a dry-run forward on probe inputs
            check_outputs_finite(loaded, self.run_probe)
        except BaseException:
            self._release(loaded)  # caches a probe batch built from it
            raise
        with self.writer:
            version = self.store.put_version(name, adir.path, {"adapter.json": manifest_bytes(prep.manifest)})
            loaded.version = version
            info = VersionInfo(version=version, kind=prep.manifest.kind, labels=prep.manifest.labels,
                               created_at=datetime.now(timezone.utc).isoformat())
            # The store's compare-and-swap runs outside the table lock (request threads and
            # the batch worker's metrics take it); the writer lock and _local_seq keep a
            # concurrent sync's older snapshot from undoing it (see _sync).
            if not activate:
                alias = self.store.add_version(name, version, info)
            else:
                alias = self.store.publish(name, version, info, expected=expected)
            with self._lock:
                self._local_seq += 1
                if not activate:
                    entry = self._hold(name, self._adopt(name, alias), loaded)
                    if loaded.impl.evictable:
                        self._remember_lora((name, version), entry)
                else:
                    self._install(name, alias, loaded)
        if self.events:
            self.events.on_register(loaded.kind)
            self.events.on_load(loaded, loaded.load_seconds)
        return loaded, alias.replaced if activate else None

    def activate(self, name: str, version: str, expected: str | None = None) -> LoadedAdapter:
        """Roll a task to one of its stored versions (loaded and checked before the switch)."""
        with self.writer:
            alias = self._fresh_alias(name)
            target = alias.find(version).version
            loaded = self._load(name, target, activate=False)
            with self._lock:
                alias = self.store.activate(name, target, expected=expected)
                self._local_seq += 1
                self._install(name, alias, loaded)
        return loaded

    def delete(self, name: str, expected: str | None = None) -> None:
        with self.writer:
            self._fresh_alias(name)
            with self._lock:
                self.store.delete(name, expected=expected)
                self._local_seq += 1
                self._drop(name)

    def pin(self, name: str, pinned: bool = True) -> None:
        with self.writer:
            self._pin(name, pinned)

    def _pin(self, name: str, pinned: bool) -> None:
        """Keep a task's active LoRA resident whatever the budget (or release it).

        Pinning loads the adapter now if it is not resident; unpinning lets the budget
        evict it again (at once if the LRU is over budget). The pin sits on the active
        version's entry and moves with the active version.
        """
        alias = self._fresh_alias(name)
        with self._lock:
            row = self._tasks.get(name)
            if row is None:  # registered elsewhere, not synced here yet: take the store's word
                self._local_seq += 1
                row = self._adopt(name, alias)
            row.versions[row.alias.active].pinned = pinned
            if not pinned:
                self._evict_over_budget(keep=None)
        if pinned and (name, alias.active) not in self._lru and _evictable(alias.find(alias.active).kind):
            self.resolve(name)  # load it now; a resident one keeps its place in the LRU

    def _fresh_alias(self, name: str) -> Alias:
        alias = self.store.get_alias(check_name(name))
        if alias is None:
            raise NotFound(f"task {name!r} is not registered")
        return alias

    # ---- convergence -----------------------------------------------------------------
    def sync(self, force: bool = False, wait: bool = True) -> bool:
        """Follow the store as its one writer (see :meth:`_sync`); with ``wait=False``, skip
        it while another writer holds the lock (that writer brings this process up to date)."""
        if not self.writer.acquire(blocking=wait):
            return False
        try:
            return self._sync(force)
        finally:
            self.writer.release()

    def _sync(self, force: bool = False) -> bool:
        """Follow the store: load newly active versions, drop deleted tasks. True if changed.

        Incremental when it can be: the store's change log names the tasks changed since
        the generation this process has seen, and only their aliases are read and compared
        (:meth:`AdapterStore.changes_since`), so one change costs the same with 100 tasks or
        100,000. A full listing happens on the first sync, on ``force``, when the log
        cannot tell (this process is further behind than the log), and at least every
        ``full_sync_every_s`` (it also catches a writer that died between its alias write
        and its generation bump).

        Loads happen outside the registry lock, against a snapshot of the store; the
        snapshot is installed only if no local register/activate/delete landed since it
        was taken (``_local_seq``), otherwise the round is dropped and the next one
        retries — a stale snapshot must never roll back a version just acknowledged.
        A head version that fails to load is recorded on its entry (``failed``) while the
        task's previous version, if any, keeps answering.
        """
        with self._sync_lock:
            seq = self._local_seq
            gen = self.store.generation()
            due = time.monotonic() - self._full_synced_at >= self.full_sync_every_s
            if gen == self._generation and not force and not due:
                return False
            delta = None if force or due or self._generation < 0 else self.store.changes_since(self._generation)
            if delta is None:
                aliases, full = self.store.list_aliases(), True
                gone = set(self._tasks) - set(aliases)
                listed_at = time.monotonic()
            else:
                gen, changed = delta
                aliases = {n: a for n, a in changed.items() if a is not None}
                gone, full = {n for n, a in changed.items() if a is None}, False
            self.last_sync = {"full": full, "tasks_read": len(aliases) + (0 if full else len(gone)),
                              "names": None if full else sorted(set(aliases) | gone)}
            ready: dict[str, LoadedAdapter | None] = {}
            failed: dict[str, str] = {}
            for name, alias in aliases.items():
                current = self._serving(name)
                if current is not None and current.version == alias.active:
                    continue
                if _evictable(alias.find(alias.active).kind):
                    ready[name] = None  # evictable kinds load lazily on first use, within the budget
                    continue
                try:  # load before switching: requests keep the old version meanwhile
                    ready[name] = self._load(name, alias.active, activate=False)
                except TaskswapError as exc:
                    log.warning("task %s version %s failed to load: %s", name, alias.active[:12], exc)
                    failed[name] = str(exc)
            with self._lock:
                if self._local_seq != seq:
                    return False  # a local change raced this snapshot: retry next round
                for name in gone:
                    self._drop(name)
                for name, alias in aliases.items():
                    if name in ready:
                        self._install(name, alias, ready[name])
                        continue
                    row = self._tasks.get(name)
                    if row is not None and name not in failed and row.alias == alias:
                        continue  # unchanged (a full listing compares every task: keep it cheap)
                    row = self._adopt(name, alias)  # the alias moves; what serves does not
                    if name in failed:
                        entry = row.versions[alias.active]
                        if entry.adapter is None:
                            entry.state, entry.error = "failed", failed[name]
                self._generation = gen
                if full:
                    self._full_synced_at = listed_at
                    self._unseen = None
                elif self._unseen is not None:
                    self._unseen.update(aliases, gone)
            return True

    def _adopt(self, name: str, alias: Alias) -> Task:
        """Take ``alias`` as ``name``'s truth (caller holds the lock): the active version gets
        an entry (``unloaded`` if new) and the pin moves to it. Which version serves is
        left to the caller (:meth:`_install`)."""
        alias = compact_alias(alias)  # equal parts (labels, kinds, pydantic sets) held once
        row = self._tasks.get(name)
        if row is None:
            row = self._tasks[name] = Task(alias, alias.active)
            row.versions[alias.active] = Entry("unloaded")
            self._names.add(name)
            return row
        before, row.alias = row.alias.active, alias
        entry = row.versions.get(alias.active)
        if entry is None:
            entry = row.versions[alias.active] = Entry("unloaded")
        if before != alias.active:
            old = row.versions.get(before)
            if old is not None and old.pinned:
                old.pinned, entry.pinned = False, True
            self._prune(name, row, before)
        if len(row.versions) > 1:  # resident candidates (heads) go once out of the history
            history = {v.version for v in alias.versions}
            for version in [v for v in row.versions if v not in history and v != row.serving]:
                self._retire(name, row, version)
        return row

    def _install(self, name: str, alias: Alias, loaded: LoadedAdapter | None) -> None:
        """Adopt ``alias`` and make its active version serve ``name`` (caller holds the lock);
        ``loaded`` is that version, or None to load it on first use."""
        row = self._adopt(name, alias)
        if loaded is not None:
            entry = self._hold(name, row, loaded)
        self._serve(name, row, alias.active)
        if loaded is not None and loaded.impl.evictable:
            self._remember_lora((name, loaded.version), entry)

    def _hold(self, name: str, row: Task, loaded: LoadedAdapter) -> Entry:
        """Record ``loaded`` as ``name``'s resident adapter of its version (caller holds the lock)."""
        entry = row.versions.get(loaded.version)
        if entry is None:
            entry = row.versions[loaded.version] = Entry("ready")
        previous = entry.adapter
        entry.adapter, entry.state, entry.error = loaded, "ready", None
        self._dirty.add(name)
        entry.load_seconds = loaded.load_seconds
        if previous is not None and previous is not loaded:
            self._release(previous)  # the same version registered again: a new object
        return entry

    def _serve(self, name: str, row: Task, version: str) -> None:
        """The hot swap: ``version`` answers ``name`` from now on (caller holds the lock)."""
        before, row.serving = row.serving, version
        self._dirty.add(name)
        if before != version:
            self._retire(name, row, before)

    def _drop(self, name: str) -> None:
        row = self._tasks.pop(name, None)
        if row is None:
            return
        self._names.discard(name)
        for version, entry in row.versions.items():
            self._lru.pop((name, version), None)
            if entry.adapter is not None:
                self._release(entry.adapter)
                entry.adapter = None
        self._dirty.add(name)

    def _retire(self, name: str, row: Task, version: str) -> None:
        """A version no longer serving: resident kinds leave memory now; evictable ones stay
        in the LRU, which releases them when it drops them."""
        entry = row.versions.get(version)
        if entry is not None and entry.adapter is not None and not entry.adapter.impl.evictable:
            self._release(entry.adapter)
            entry.adapter = None
            self._dirty.add(name)
        self._prune(name, row, version)

    @staticmethod
    def _prune(name: str, row: Task, version: str) -> None:
        """Forget ``version``'s entry unless it is active, serving, loading or resident."""
        entry = row.versions.get(version)
        if (entry is not None and version != row.alias.active and version != row.serving
                and entry.loading is None and entry.adapter is None):
            del row.versions[version]

    # ---- loading and the LoRA budget -----------------------------------------------
    def _load(self, name: str, version: str, activate: bool = True) -> LoadedAdapter:
        """Load ``name@version`` from the store, once however many callers ask at a time.

        ``activate``: if it is the task's active version, it serves from now on (a sync
        loads with False: its snapshot is installed later, all at once). A version this
        process has no row for yet (an activation ahead of the watcher) loads unrecorded.
        """
        with self._lock:
            row = self._tasks.get(name)
            entry = row.versions.get(version) if row is not None else None
            if entry is not None and entry.adapter is not None:
                if version != row.serving:  # a resident other version: now the most recent
                    self._touch((name, version))
                if activate and version == row.alias.active:
                    self._serve(name, row, version)
                return entry.adapter
            owner, fut = True, None
            if row is not None:
                if entry is None:
                    entry = row.versions[version] = Entry("loading")
                fut = entry.loading
                owner = fut is None
                if owner:
                    fut = entry.loading = Future()
                    entry.state, entry.error = "loading", None
        if not owner:
            return fut.result()
        try:
            start = time.perf_counter()
            folder = self.store.version_path(name, version)
            # A stored version is immutable and already complete: check it, write nothing.
            prep = prepare_adapter(folder, self.backbones)
            loaded = load_adapter(prep, version)
            loaded.load_seconds = time.perf_counter() - start
            with self._lock:
                if entry is not None and self._tasks.get(name) is row and row.versions.get(version) is entry:
                    entry.state, entry.load_seconds = "ready", loaded.load_seconds
                    active = version == row.alias.active
                    if loaded.impl.evictable:
                        entry.adapter = loaded
                        self._dirty.add(name)
                        self._remember_lora((name, version), entry)
                    elif active or version == row.serving:
                        entry.adapter = loaded
                        self._dirty.add(name)
                    # else: a non-active head is the caller's alone (it is a few KB)
                    if activate and active:
                        self._serve(name, row, version)
            if self.events:
                self.events.on_load(loaded, loaded.load_seconds)
            if fut is not None:
                fut.set_result(loaded)
            return loaded
        except Exception as exc:
            with self._lock:
                if entry is not None and entry.adapter is None:
                    entry.state, entry.error = "failed", str(exc)
            if fut is not None:
                fut.set_exception(exc)
            raise
        finally:
            if entry is not None:
                with self._lock:
                    entry.loading = None
                    if self._tasks.get(name) is row:
                        self._prune(name, row, version)

    def _touch(self, key) -> None:
        with self._lock:
            if key in self._lru:
                self._lru.move_to_end(key)

    def _remember_lora(self, key: tuple[str, str], entry: Entry) -> None:
        """Make ``key`` the most recently used resident LoRA, then fit the budget.

        Once a version is the task's active one, its other versions leave the LRU at once:
        no request resolves to them again (an in-flight batch keeps its own reference).
        """
        self._lru[key] = entry
        self._lru.move_to_end(key)
        row = self._tasks.get(key[0])
        if row is not None and row.alias.active == key[1]:
            for other in [v for v in row.versions if v != key[1] and (key[0], v) in self._lru]:
                self._evict((key[0], other))
        self._evict_over_budget(keep=key)

    def _evict_over_budget(self, keep) -> None:
        """Evict LoRAs until the resident bytes fit ``lora_budget_bytes`` (caller holds the lock).

        Victims in order: versions no longer active, then other versions of ``keep``'s task
        (``keep`` is being loaded to replace them), then active versions from least recently
        used. Never evicted: ``keep`` (the one just loaded, even if alone over budget) and
        the active version of a pinned task.
        """
        total = sum(e.adapter.nbytes for e in self._lru.values())
        if total <= self.lora_budget_bytes:
            return
        stale, replaced, live = [], [], []
        for k in self._lru:
            row = self._tasks.get(k[0])
            if row is None or row.alias.active != k[1]:
                stale.append(k)
            elif keep is not None and k[0] == keep[0]:
                replaced.append(k)
            else:
                live.append(k)
        stale_set = set(stale)
        for k in stale + replaced + live:
            if total <= self.lora_budget_bytes:
                break
            if k == keep or (self._lru[k].pinned and k not in stale_set):
                continue
            total -= self._evict(k).nbytes

    def _evict(self, key) -> LoadedAdapter:
        """Drop one resident LoRA version, so its tensors are freed; its entry says
        ``evicted`` (or goes, if the version is no longer active or serving).

        Its next request reloads it from the store (single flight).
        """
        entry = self._lru.pop(key)
        evicted, entry.adapter, entry.state = entry.adapter, None, "evicted"
        self._dirty.add(key[0])
        self._release(evicted)
        row = self._tasks.get(key[0])
        if row is not None:
            self._prune(key[0], row, key[1])
        return evicted

    @staticmethod
    def _release(loaded: LoadedAdapter) -> None:
        """The one way out of memory: drop every cache built from ``loaded`` (head weight
        stacks; the kind's own, e.g. LoRA merged weights and factor stacks). A batch still
        running on it keeps its own references until it ends."""
        heads_batched.STACKS.forget(loaded.head)
        if loaded.weights is not None:
            loaded.impl.forget(loaded.weights)

    def resident_loras(self) -> int:
        return len(self._lru)

    def loaded_count(self) -> int:
        """Resident versions that serve a task, plus resident LoRAs. It is read after every
        batch, so it recounts only the tasks whose residency moved since the last call."""
        with self._lock:
            for name in self._dirty:
                row = self._tasks.get(name)
                entry = row.versions.get(row.serving) if row is not None else None
                a = entry.adapter if entry is not None else None
                if a is not None and not a.impl.evictable:
                    self._resident_heads.add(name)
                else:
                    self._resident_heads.discard(name)
            self._dirty.clear()
            return len(self._resident_heads) + len(self._lru)


def _evictable(kind: str) -> bool:
    k = KINDS.get(kind)
    return k is not None and k.evictable
