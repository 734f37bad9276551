"""Which adapter versions are in memory: loading them (single flight) and evicting them.

:class:`AdapterCache` holds the resident versions of evictable kinds (LoRA, top layers:
``AdapterKind.evictable``), least recently used first, within a byte budget. Like vLLM's
``LoRALRUCache(capacity, deactivate_fn)``, its removal callback runs inside the cache, so
nothing derived from an evicted adapter outlives it: :func:`release` drops the head's
weight stacks and asks the kind to ``forget`` what it built (LoRA merged weights and factor
stacks), then the table marks the entry ``evicted``. Heads are tiny and stay resident;
every adapter leaving memory (evicted, replaced, deleted) goes through :func:`release`.

:class:`Residency` loads versions from the store into the table (one load per version at
a time; later callers wait on it) and answers the request path's lookups (``resolve``,
``resolve_version``, ``candidate``). A lookup that misses (a task this process has not
seen, or whose version is not resident) asks the store follower to catch up on that one
task (``catch_up``, a function: residency does not import the follower). Loads run
outside the table lock; only their results are recorded under it.

A load a lookup makes (a version's first use in this process, or an evicted one's return)
that fails for any reason but a missing version (404, :class:`NotFound`) raises
:class:`AdapterUnavailable` naming the task, the version and the cause (503 with
``Retry-After`` over HTTP): only the requests that needed that version fail, its entry says
``failed`` with the reason, and the next request retries the load.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import replace
from typing import Callable, Iterable

from adapters import heads_batched
from adapters.backbones.base import Backbone
from adapters.errors import AdapterUnavailable, NotFound
from adapters.kinds import KINDS
from adapters.loading import LoadedAdapter, load_adapter, prepare_adapter
from adapters.namespaces import namespace_of
from adapters.store.base import AdapterStore, Alias, check_name
from adapters.table import Entry, Key, TaskTable

log = logging.getLogger("taskswap.registry")


def evictable(kind: str) -> bool:
    """Whether versions of adapter kind ``kind`` live in the eviction cache (the kind's call)."""
    k = KINDS.get(kind)
    return k is not None and k.evictable


def release(loaded: LoadedAdapter) -> None:
    """The one way out of memory: drop every cache built from ``loaded`` (head weight
    stacks; the kind's own, e.g. LoRA merged weights and factor stacks). A batch still
    running on it keeps its own references until it ends."""
    heads_batched.HEAD_STACKS.forget(loaded.head)
    if loaded.weights is not None:
        loaded.impl.forget(loaded.weights)


class AdapterCache:
    """Resident evictable adapters by ``(task, version)``, least recently used first,
    bounded by ``budget_bytes``; ``on_remove(key, adapter)`` runs for every adapter that
    leaves it (evicted or removed), and must free everything derived from it.

    >>> gone = []
    >>> c = AdapterCache(10, lambda key, a: gone.append(key))
    >>> c.add(("a", "1"), "x", 6); c.add(("b", "1"), "y", 6)
    >>> c.shrink([("a", "1"), ("b", "1")]); gone, list(c)
    ([('a', '1')], [('b', '1')])
    """

    def __init__(self, budget_bytes: int, on_remove: Callable[[Key, LoadedAdapter], None]):
        self.budget_bytes = budget_bytes
        self._on_remove = on_remove
        self._items: OrderedDict[Key, tuple[LoadedAdapter, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def __iter__(self):
        return iter(list(self._items))

    def get(self, key: Key) -> LoadedAdapter | None:
        item = self._items.get(key)
        return item[0] if item is not None else None

    def size(self, key: Key) -> int:
        """The bytes ``key`` counts for (0 if not held)."""
        item = self._items.get(key)
        return item[1] if item is not None else 0

    def add(self, key: Key, adapter: LoadedAdapter, nbytes: int | None = None) -> None:
        """Hold ``adapter`` as ``key``, the most recently used (no eviction: see :meth:`shrink`)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
            if old[0] is not adapter:
                self._on_remove(key, old[0])
        size = adapter.nbytes if nbytes is None else nbytes
        self._items[key] = (adapter, size)
        self.nbytes += size

    def touch(self, key: Key) -> None:
        if key in self._items:
            self._items.move_to_end(key)

    def remove(self, key: Key) -> LoadedAdapter | None:
        """Drop ``key`` through the removal callback; returns the adapter it held."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.nbytes -= item[1]
        self._on_remove(key, item[0])
        return item[0]

    def shrink(self, victims: Iterable[Key]) -> None:
        """Remove ``victims``, in order, until the held bytes fit the budget."""
        for key in victims:
            if self.nbytes <= self.budget_bytes:
                return
            self.remove(key)


class Residency:
    """Loads, the eviction cache, and the request path's lookups over one :class:`TaskTable`."""

    def __init__(self, table: TaskTable, store: AdapterStore, backbones: dict[str, Backbone],
                 budget_bytes: int, events=None):
        self.table = table
        self.store = store
        self.backbones = backbones
        self.events = events  # optional observer with on_load(adapter, seconds)
        self.cache = AdapterCache(budget_bytes, self._removed)
        # A lookup's miss: catch up with the store on one task (set to the follower's).
        self.catch_up: Callable[[str], None] = lambda task: None
        # A namespace's share of the budget in bytes (its quota's max_resident_bytes), or
        # None for no share of its own; read under the table lock, so it must do no I/O.
        self.share: Callable[[str], int | None] = lambda namespace: None

    # ---- the one way out of memory ----------------------------------------------------
    def _removed(self, key: Key, loaded: LoadedAdapter) -> None:
        """The cache's removal callback (caller holds the table lock)."""
        release(loaded)
        self.table.evicted(key, loaded)

    def let_go(self, key: Key, loaded: LoadedAdapter) -> None:
        """The table's ``on_release``: an adapter it no longer holds leaves memory."""
        if self.cache.get(key) is loaded:
            self.cache.remove(key)
        else:
            release(loaded)

    def install(self, name: str, alias: Alias, loaded: LoadedAdapter | None) -> None:
        """Adopt ``alias`` and make its active version serve ``name`` (caller holds the table
        lock): the hot swap. ``loaded`` is that version, or None to load it on first use."""
        row = self.table.adopt(name, alias)
        if loaded is not None:
            self.table.hold(name, row, loaded)
        self.table.serve(name, row, alias.active)
        if loaded is not None and loaded.impl.evictable:
            self.remember((name, loaded.version), loaded)

    # ---- request-path lookups ----------------------------------------------------------
    def resolve(self, task: str) -> LoadedAdapter:
        """The adapter that serves ``task`` now, loading it if evicted (single flight)."""
        loaded = self.table.serving(task)
        if loaded is None:
            self.catch_up(task)  # a miss may be a registration on another replica
            loaded = self.table.serving(task)
        if loaded is not None:
            if loaded.impl.evictable:
                self.touch((task, loaded.version))
            return loaded
        row = self.table.get(task)
        if row is None:
            # Only the requested name's namespace: another namespace's names are not this
            # caller's to learn (service.access, the 404 rule).
            ns = namespace_of(task)
            known = ", ".join(self.table.names.window(None, 0, 20, lambda n: namespace_of(n) == ns)[0]) \
                or "none registered"
            raise NotFound(f"task {task!r} is not registered (tasks: {known})")
        return self.load_on_use(task, row.alias.active)

    def resolve_version(self, task: str, version: str) -> LoadedAdapter:
        """One exact stored version of ``task`` (id or unique prefix), active or not.

        A stored version is immutable, so this answers the same whatever is active now
        (reproducible evaluation, a rollout pinned to a version). The active version comes
        from :meth:`resolve`; another evictable version joins the cache; another head
        version is loaded from the store on each call (a head file is a few KB).
        """
        row = self.table.get(check_name(task))
        if row is None:
            self.catch_up(task)
            row = self.table.get(task)
        if row is None:
            raise NotFound(f"task {task!r} is not registered")
        alias = row.alias
        target = alias.find(version).version
        if target == alias.active:
            loaded = self.resolve(task)
            if loaded.version == target:
                return loaded
        return self.load_on_use(task, target, activate=False)

    def shared_adaptation(self, name: str, version: str | None) -> LoadedAdapter:
        """The shared adaptation a ``multitask`` task rides on: that stored version (id or
        prefix), or its active one when None (a registration naming no version)."""
        return self.resolve(check_name(name)) if version is None else self.resolve_version(name, version)

    def candidate(self, task: str, version: str) -> LoadedAdapter:
        """A stored, non-active version of ``task`` (a rollout candidate), loaded once.

        Heads stay resident beside the active version (their entry keeps the adapter until
        the version leaves the task's history or becomes active); an evictable candidate
        lives in the cache like any other version (first in line for eviction, reloaded on
        demand).
        """
        got = self.table.resident(task, version)
        if got is not None:
            if got.impl.evictable:
                self.touch((task, version))
            return got
        loaded = self.load_on_use(task, version, activate=False)
        if not loaded.impl.evictable:
            with self.table.lock:
                row = self.table.get(task)
                if row is not None:
                    self.table.hold(task, row, loaded)
        return loaded

    # ---- loading -----------------------------------------------------------------------
    def load_on_use(self, name: str, version: str, activate: bool = True) -> LoadedAdapter:
        """:meth:`load` for a lookup: a failure other than a missing version becomes
        :class:`AdapterUnavailable` (see the module docstring)."""
        try:
            return self.load(name, version, activate)
        except NotFound:
            raise
        except Exception as exc:
            raise AdapterUnavailable(
                f"task {name!r} version {version[:12]} could not be loaded on this replica: {exc}; "
                "the next request retries it, other tasks are unaffected (an admin can activate "
                "another version or register a new one)") from exc

    def load(self, name: str, version: str, activate: bool = True) -> LoadedAdapter:
        """Load ``name@version`` from the store, once however many callers ask at a time.

        ``activate``: if it is the task's active version, it serves from now on (a sync
        loads with False: its snapshot is installed later, all at once). A version this
        process has no row for yet (an activation ahead of the watcher) loads unrecorded.
        """
        table = self.table
        with table.lock:
            row = table.get(name)
            entry = row.versions.get(version) if row is not None else None
            if entry is not None and entry.adapter is not None:
                if version != row.serving:  # a resident other version: now the most recent
                    self.cache.touch((name, version))
                if activate and version == row.alias.active:
                    table.serve(name, row, version)
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
            prep = prepare_adapter(folder, self.backbones, shared=self.shared_adaptation)
            loaded = load_adapter(prep, version)
            loaded = replace(loaded, load_seconds=time.perf_counter() - start)
            with table.lock:
                if entry is not None and table.get(name) is row and row.versions.get(version) is entry:
                    entry.state, entry.load_seconds = "ready", loaded.load_seconds
                    active = version == row.alias.active
                    if loaded.impl.evictable:
                        entry.adapter = loaded
                        table.mark(name)
                        self.remember((name, version), loaded)
                    elif active or version == row.serving:
                        entry.adapter = loaded
                        table.mark(name)
                    # else: a non-active head is the caller's alone (it is a few KB)
                    if activate and active:
                        table.serve(name, row, version)
            if self.events:
                self.events.on_load(loaded, loaded.load_seconds)
            if fut is not None:
                fut.set_result(loaded)
            return loaded
        except Exception as exc:
            with table.lock:
                if entry is not None and entry.adapter is None:
                    entry.state, entry.error = "failed", str(exc)
            if fut is not None:
                fut.set_exception(exc)
            raise
        finally:
            if entry is not None:
                with table.lock:
                    entry.loading = None
                    if table.get(name) is row:
                        table.prune(name, row, version)

    # ---- the budget --------------------------------------------------------------------
    def touch(self, key: Key) -> None:
        with self.table.lock:
            self.cache.touch(key)

    def remember(self, key: Key, loaded: LoadedAdapter) -> None:
        """Make ``key`` the most recently used resident adapter, then fit the budget
        (caller holds the table lock).

        Once a version is the task's active one, its other versions leave the cache at
        once: no request resolves to them again (an in-flight batch keeps its own reference).
        """
        self.cache.add(key, loaded)
        row = self.table.get(key[0])
        if row is not None and row.alias.active == key[1]:
            for other in [v for v in row.versions if v != key[1] and (key[0], v) in self.cache]:
                self.cache.remove((key[0], other))
        self.fit(keep=key)

    def fit(self, keep: Key | None) -> None:
        """Evict until every namespace fits its share and the resident bytes fit the budget
        (caller holds the table lock).

        Victims in order: versions no longer active, then other versions of ``keep``'s task
        (``keep`` is being loaded to replace them), then active versions from least recently
        used. Never evicted: ``keep`` (the one just loaded, even if alone over budget) and
        the active version of a pinned task. A namespace over its share (:attr:`share`)
        loses its own adapters first, in that order, so its loads never push another
        namespace's adapters out beyond what the whole budget requires.
        """
        self._fit_shares(keep)
        if self.cache.nbytes <= self.cache.budget_bytes:
            return
        self.cache.shrink(self._victims(list(self.cache), keep))

    def _victims(self, keys: list[Key], keep: Key | None) -> list[Key]:
        """``keys`` (in LRU order) in the order they may be evicted (see :meth:`fit`)."""
        stale, replaced, live = [], [], []
        for k in keys:
            row = self.table.get(k[0])
            if row is None or row.alias.active != k[1]:
                stale.append(k)
            elif keep is not None and k[0] == keep[0]:
                replaced.append(k)
            else:
                live.append(k)

        def pinned(k: Key) -> bool:
            row = self.table.get(k[0])
            entry = row.versions.get(k[1]) if row is not None else None
            return entry is not None and entry.pinned

        return ([k for k in stale if k != keep]
                + [k for k in replaced + live if k != keep and not pinned(k)])

    def _fit_shares(self, keep: Key | None) -> None:
        by_namespace: dict[str, list[Key]] = {}
        for k in self.cache:
            by_namespace.setdefault(namespace_of(k[0]), []).append(k)
        for namespace, keys in by_namespace.items():
            limit = self.share(namespace)
            if limit is None:
                continue
            held = sum(self.cache.size(k) for k in keys)
            for k in self._victims(keys, keep):
                if held <= limit:
                    break
                held -= self.cache.size(k)
                self.cache.remove(k)

    def namespace_bytes(self) -> dict[str, int]:
        """Resident evictable bytes per namespace (a snapshot)."""
        out: dict[str, int] = {}
        for k in self.cache:
            ns = namespace_of(k[0])
            out[ns] = out.get(ns, 0) + self.cache.size(k)
        return out
