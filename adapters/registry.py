"""The per-process owner of the adapter lifecycle.

States per version: ``loading -> ready | failed``, and ``evicted`` for a LoRA pushed out
of the memory budget (it reloads from the store on its next request). Heads are tiny
and stay resident; LoRA adapters live in an LRU bounded by ``lora_budget_bytes``, with
pinning. Loads are single-flight. The store is the truth: :meth:`sync` follows its
generation number, so every replica and worker converges on it.

Hot swap is one dict assignment: a batch resolves each task to a
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from adapters.backbones.base import Backbone
from adapters import heads_batched
from adapters.dryrun import check_outputs_finite
from adapters.errors import NotFound, TaskswapError
from adapters.format.adapter_dir import manifest_bytes, read_adapter_dir
from adapters.loading import LoadedAdapter, load_adapter, prepare_adapter
from adapters.store.base import AdapterStore, Alias, VersionInfo, check_name

log = logging.getLogger("taskswap.registry")


@dataclass
class VersionState:
    state: str  # loading | ready | failed | evicted
    error: str | None = None
    load_seconds: float | None = None


class Registry:
    """``register / activate / delete / resolve / sync / pin / list`` over one store.

    >>> import tempfile
    >>> from adapters.store import open_store
    >>> Registry(open_store(tempfile.mkdtemp()), {}).list()
    []
    """

    def __init__(self, store: AdapterStore, backbones: dict[str, Backbone],
                 lora_budget_bytes: int = 512 << 20, events=None):
        self.store = store
        self.backbones = backbones
        self.lora_budget_bytes = lora_budget_bytes
        self.events = events  # optional observer with on_load(adapter, seconds), on_register(kind)
        self._lock = threading.RLock()
        self._aliases: dict[str, Alias] = {}
        self._active: dict[str, LoadedAdapter] = {}  # task -> the version that serves it
        self._loras: OrderedDict[tuple[str, str], LoadedAdapter] = OrderedDict()  # LRU
        self._states: dict[tuple[str, str], VersionState] = {}
        self._inflight: dict[tuple[str, str], Future] = {}
        self._pinned: set[str] = set()
        self._candidates: dict[tuple[str, str], LoadedAdapter] = {}  # rollout candidates (heads)
        self._generation = -1
        self._local_seq = 0  # bumped by every local register/activate/delete
        self._sync_lock = threading.Lock()
        self.writer = threading.RLock()  # the one-writer rule (see the module docstring)

    # ---- reading ---------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._generation

    @property
    def aliases(self) -> dict[str, Alias]:
        """Every task's alias as of the last sync or local change (a snapshot)."""
        return self._aliases

    def resolve(self, task: str) -> LoadedAdapter:
        """The adapter that serves ``task`` now, loading it if evicted (single flight)."""
        loaded = self._active.get(task)
        if loaded is None:
            self._sync()  # a miss may be a registration on another replica
            loaded = self._active.get(task)
        if loaded is not None:
            if not loaded.impl.evictable:
                return loaded
            if (task, loaded.version) in self._loras:
                self._touch((task, loaded.version))
                return loaded
        alias = self._aliases.get(task)
        if alias is None:
            known = ", ".join(sorted(self._aliases)[:20]) or "none registered"
            raise NotFound(f"task {task!r} is not registered (tasks: {known})")
        return self._load(task, alias.active)

    def resolve_version(self, task: str, version: str) -> LoadedAdapter:
        """One exact stored version of ``task`` (id or unique prefix), active or not.

        A stored version is immutable, so this answers the same whatever is active now
        (reproducible evaluation, a rollout pinned to a version). The active version comes
        from :meth:`resolve`; another LoRA version joins the LRU; another head version is
        loaded from the store on each call (a head file is a few KB).
        """
        alias = self._aliases.get(check_name(task))
        if alias is None:
            self._sync()
            alias = self._aliases.get(task)
        if alias is None:
            raise NotFound(f"task {task!r} is not registered")
        target = alias.find(version).version
        if target == alias.active:
            loaded = self.resolve(task)
            if loaded.version == target:
                return loaded
        return self._load(task, target, activate=False)

    def candidate(self, task: str, version: str) -> LoadedAdapter:
        """A stored, non-active version of ``task`` (a rollout candidate), loaded once.

        Heads stay resident beside the active version; a LoRA candidate lives in the LoRA
        LRU like any other version (first in line for eviction, reloaded on demand).
        """
        key = (task, version)
        got = self._candidates.get(key)
        if got is not None:
            return got
        active = self._active.get(task)
        if active is not None and active.version == version:
            return active
        loaded = self._load(task, version, activate=False)
        if not loaded.impl.evictable:
            with self._lock:
                if task in self._aliases:
                    self._candidates[key] = loaded
        return loaded

    def list(self) -> list[dict]:
        return [self._describe(name, alias) for name, alias in sorted(self._aliases.items())]

    def show(self, name: str) -> dict:
        alias = self._aliases.get(check_name(name))
        if alias is None:
            self._sync()
            alias = self._aliases.get(name)
        if alias is None:
            raise NotFound(f"task {name!r} is not registered")
        return self._describe(name, alias)

    def _describe(self, name: str, alias: Alias) -> dict:
        loaded = self._active.get(name)
        st = self._states.get((name, alias.active), VersionState("unloaded"))
        m = loaded.manifest if loaded is not None else None
        outputs = loaded.task.describe(m) if m else {"labels": alias.find(alias.active).labels}
        return {
            "name": name, "active_version": alias.active, "state": st.state, "error": st.error,
            "kind": m.kind if m else alias.find(alias.active).kind, **outputs,
            "backbone": loaded.backbone.name if loaded else None,
            "task_type": m.task_type if m else None,
            "metrics": m.metrics if m else {}, "pinned": name in self._pinned,
            "versions": [v.model_dump() for v in alias.versions], "updated_at": alias.updated_at,
        }

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
        concurrency for admins; see :func:`adapters.store.base.check_expected`).
        ``activate=False`` stores the version in the task's history as a candidate (for a
        shadow or canary rollout) and leaves the active version as it is (replaced: None).
        """
        adir = read_adapter_dir(Path(folder))  # refuses links / pickles before anything else
        prep = prepare_adapter(adir, self.backbones, name, labels, backbone, fresh=True)
        name = check_name(prep.manifest.name)
        with self.writer:
            loaded = load_adapter(prep, version="pending")  # validate fully before publishing
            check_outputs_finite(loaded)  # and its numbers: a dry-run forward on probe inputs
            version = self.store.put_version(name, adir.path, {"adapter.json": manifest_bytes(prep.manifest)})
            loaded.version = version
            info = VersionInfo(version=version, kind=prep.manifest.kind, labels=prep.manifest.labels,
                               created_at=datetime.now(timezone.utc).isoformat())
            with self._lock:
                if not activate:
                    alias = self.store.add_version(name, version, info)
                    self._local_seq += 1
                    self._aliases = {**self._aliases, name: alias}
                    self._states[(name, version)] = VersionState("ready", None, loaded.load_seconds)
                    if not loaded.impl.evictable:
                        self._candidates[(name, version)] = loaded
                    else:
                        self._remember_lora(loaded)
                else:
                    alias = self.store.publish(name, version, info, expected=expected)
                    self._local_seq += 1
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
        evict it again (at once if the LRU is over budget).
        """
        alias = self._fresh_alias(name)
        with self._lock:
            (self._pinned.add if pinned else self._pinned.discard)(name)
            if not pinned:
                self._evict_over_budget(keep=None)
        if pinned and (name, alias.active) not in self._loras and _evictable(alias.find(alias.active).kind):
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

        Loads happen outside the registry lock, against a snapshot of the store; the
        snapshot is installed only if no local register/activate/delete landed since it
        was taken (``_local_seq``), otherwise the round is dropped and the next one
        retries — a stale snapshot must never roll back a version just acknowledged.
        """
        with self._sync_lock:
            seq = self._local_seq
            gen = self.store.generation()
            if gen == self._generation and not force:
                return False
            aliases = self.store.list_aliases()
            ready: dict[str, LoadedAdapter | None] = {}
            for name, alias in aliases.items():
                current = self._active.get(name)
                if current is not None and current.version == alias.active:
                    continue
                if _evictable(alias.find(alias.active).kind):
                    ready[name] = None  # evictable kinds load lazily on first use, within the budget
                    continue
                try:  # load before switching: requests keep the old version meanwhile
                    ready[name] = self._load(name, alias.active, activate=False)
                except TaskswapError as exc:
                    log.warning("task %s version %s failed to load: %s", name, alias.active[:12], exc)
            with self._lock:
                if self._local_seq != seq:
                    return False  # a local change raced this snapshot: retry next round
                for name in set(self._aliases) - set(aliases):
                    self._drop(name)
                for name, loaded in ready.items():
                    if loaded is None:
                        self._retire(self._active.pop(name, None))
                    self._install(name, aliases[name], loaded)
                self._aliases = dict(aliases)
                self._generation = gen
            return True

    def _install(self, name: str, alias: Alias, loaded: LoadedAdapter | None) -> None:
        self._aliases = {**self._aliases, name: alias}
        if loaded is not None:
            old = self._active.get(name)
            self._active[name] = loaded  # the hot swap: one assignment
            if old is not loaded:
                self._retire(old)
            if loaded.impl.evictable:
                self._remember_lora(loaded)
            self._states[(name, loaded.version)] = VersionState("ready", None, loaded.load_seconds)
        # candidates no longer in the task's history (or now active) are not kept
        self._forget_candidates(name, keep={v.version for v in alias.versions} - {alias.active})

    def _forget_candidates(self, name: str, keep: set[str]) -> None:
        """Drop ``name``'s resident candidates not in ``keep``, releasing their caches unless
        the object went on serving as the active version (a promote reuses it)."""
        for key in [k for k in self._candidates if k[0] == name and k[1] not in keep]:
            cand = self._candidates.pop(key)
            if self._active.get(name) is not cand:
                self._release(cand)

    def _drop(self, name: str) -> None:
        self._aliases = {k: v for k, v in self._aliases.items() if k != name}
        self._forget_candidates(name, keep=set())
        self._retire(self._active.pop(name, None))
        self._pinned.discard(name)
        for key in [k for k in self._loras if k[0] == name]:
            self._release(self._loras.pop(key))
        for key in [k for k in self._states if k[0] == name]:
            del self._states[key]

    # ---- loading and the LoRA budget -----------------------------------------------
    def _load(self, name: str, version: str, activate: bool = True) -> LoadedAdapter:
        key = (name, version)
        with self._lock:
            current = self._active.get(name)
            if current is not None and current.version == version and (
                    not current.impl.evictable or key in self._loras):
                return current
            resident = self._loras.get(key) or self._candidates.get(key)
            if resident is not None:  # loaded earlier but not (or no longer) the active entry
                if key in self._loras:
                    self._loras.move_to_end(key)
                if activate and name in self._aliases and self._aliases[name].active == version:
                    self._active[name] = resident
                return resident
            fut = self._inflight.get(key)
            owner = fut is None
            if owner:
                fut = self._inflight[key] = Future()
                self._states[key] = VersionState("loading")
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
                self._states[key] = VersionState("ready", None, loaded.load_seconds)
                if activate and name in self._aliases and self._aliases[name].active == version:
                    self._retire(self._active.get(name))
                    self._active[name] = loaded
                if loaded.impl.evictable:
                    self._remember_lora(loaded)
            if self.events:
                self.events.on_load(loaded, loaded.load_seconds)
            fut.set_result(loaded)
            return loaded
        except Exception as exc:
            with self._lock:
                self._states[key] = VersionState("failed", str(exc))
            fut.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _touch(self, key) -> None:
        with self._lock:
            if key in self._loras:
                self._loras.move_to_end(key)

    def _remember_lora(self, loaded: LoadedAdapter) -> None:
        """Make ``loaded`` the most recently used resident LoRA, then fit the budget.

        Once a version is the task's active one, its other versions leave the LRU at once:
        no request resolves to them again (an in-flight batch keeps its own reference).
        """
        key = (loaded.name, loaded.version)
        self._loras[key] = loaded
        self._loras.move_to_end(key)
        alias = self._aliases.get(loaded.name)
        if alias is not None and alias.active == loaded.version:
            for k in [k for k in self._loras if k[0] == loaded.name and k != key]:
                self._evict(k)
        self._evict_over_budget(keep=key)

    def _evict_over_budget(self, keep) -> None:
        """Evict LoRAs until the resident bytes fit ``lora_budget_bytes`` (caller holds the lock).

        Victims in order: versions no longer active, then other versions of ``keep``'s task
        (``keep`` is being loaded to replace them), then active versions from least recently
        used. Never evicted: ``keep`` (the one just loaded, even if alone over budget) and
        the active version of a pinned task.
        """
        total = sum(a.nbytes for a in self._loras.values())
        if total <= self.lora_budget_bytes:
            return
        stale, replaced, live = [], [], []
        for k in self._loras:
            alias = self._aliases.get(k[0])
            if alias is None or alias.active != k[1]:
                stale.append(k)
            elif keep is not None and k[0] == keep[0]:
                replaced.append(k)
            else:
                live.append(k)
        stale_set = set(stale)
        for k in stale + replaced + live:
            if total <= self.lora_budget_bytes:
                break
            if k == keep or (k[0] in self._pinned and k not in stale_set):
                continue
            total -= self._evict(k).nbytes

    def _evict(self, key) -> LoadedAdapter:
        """Drop one resident LoRA version, from the active map too, so its tensors are freed.

        Its next request reloads it from the store (single flight).
        """
        evicted = self._loras.pop(key)
        if self._active.get(key[0]) is evicted:
            del self._active[key[0]]
        self._states[key] = VersionState("evicted")
        self._release(evicted)
        return evicted

    def _retire(self, loaded: LoadedAdapter | None) -> None:
        """An adapter no longer active: resident kinds leave memory now; evictable ones stay
        in the LRU, which releases them when it drops them."""
        if loaded is not None and not loaded.impl.evictable:
            self._release(loaded)

    @staticmethod
    def _release(loaded: LoadedAdapter) -> None:
        """The one way out of memory: drop every cache built from ``loaded`` (head weight
        stacks; the kind's own, e.g. LoRA merged weights and factor stacks). A batch still
        running on it keeps its own references until it ends."""
        heads_batched.STACKS.forget(loaded.head)
        if loaded.weights is not None:
            loaded.impl.forget(loaded.weights)

    def resident_loras(self) -> int:
        return len(self._loras)

    def loaded_count(self) -> int:
        return sum(1 for a in self._active.values() if not a.impl.evictable) + len(self._loras)


def _evictable(kind: str) -> bool:
    from adapters.kinds import KINDS
    k = KINDS.get(kind)
    return k is not None and k.evictable
