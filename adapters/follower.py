"""The store follower: the only code that brings the task table in line with the store.

The store is the truth; every replica and worker converges on it. :meth:`StoreFollower.start`
makes the table ready at start-up from the store's index (one document with every alias and
policy, plus the change log since it) and loads no adapter: each task's active version is
``unloaded`` until its first request loads it (:meth:`Residency.resolve`, single flight), so
start-up reads one document instead of every alias and loads nothing (it still grows with
that document: parsing 100,000 aliases is most of it). :meth:`StoreFollower.sync`
follows the store's generation number (run by the watcher and after admin changes, under
the lifecycle's writer lock: see :mod:`adapters.lifecycle`); :meth:`StoreFollower.catch_up`
reads one task's alias when a request misses (a task registered on another replica, or a
version not resident here) and takes no writer lock, so a request never waits on a
registration's store write.

Both read the store outside the table lock and install what they read under it only if
no local change landed meanwhile (``TaskTable.local_seq``): a stale snapshot must never
roll back a version just acknowledged. Both also take in the rollout policies of the
tasks they read, so a task's candidate and policy arrive with its alias.
"""

from __future__ import annotations

import logging
import threading
import time

from adapters.errors import InvalidInput, TaskswapError
from adapters.gc_pause import collector_paused
from adapters.loading import LoadedAdapter
from adapters.residency import Residency, evictable
from adapters.store.base import CHANGE_LOG, AdapterStore, Alias, StoreIndex, check_name
from adapters.rollout import parse_policy

log = logging.getLogger("taskswap.registry")

CATCH_UP_TRIES = 3  # a miss retries its one-task read this often while local changes race it


class StoreFollower:
    """``sync()`` follows the store's generation; ``catch_up(task)`` reads one task.
    Loads and installs go through ``residency`` (single flight, the eviction budget)."""

    def __init__(self, store: AdapterStore, residency: Residency, full_sync_every_s: float = 3600.0):
        self.store = store
        self.table = residency.table
        self.residency = residency
        self.full_sync_every_s = full_sync_every_s  # the longest between two full listings
        self._full_synced_at = float("-inf")
        self.last_sync: dict = {}  # the last sync that ran: {"full", "tasks_read", "names" (None if full)}
        self.last_start: dict = {}  # what start() read: {"source", "tasks", "replayed", "index_written"}
        self.generation = -1
        self._sync_lock = threading.Lock()

    # ---- one task, for a request's miss ---------------------------------------------------
    def catch_up(self, task: str) -> None:
        """Read ``task``'s alias (and policy) and take it in if it moved (a task the store no
        longer has leaves the table). For a request's miss: one read, and no writer lock."""
        try:
            check_name(task)
        except InvalidInput:
            return
        table = self.table
        for _ in range(CATCH_UP_TRIES):
            seq = table.local_seq
            alias = self.store.get_alias(task)
            row = table.get(task)
            if (row.alias == alias) if row is not None else alias is None:
                return
            policy = parse_policy(task, self.store.get_rollout(task)) if alias is not None else None
            with table.lock:
                if table.local_seq != seq:
                    continue  # a local change raced this read: read again
                table.local_seq += 1  # a sync round in flight must not undo it
                if alias is None:
                    table.drop(task)
                else:
                    table.adopt(task, alias)
                    table.set_policy(task, policy)
                return

    # ---- start-up: the table from the index, nothing loaded --------------------------------
    def start(self) -> dict:
        """Make the table ready from the store's index, loading no adapter; returns
        :attr:`last_start` (``source``: ``index`` or ``listing``, ``tasks``, ``replayed``).

        Reads the index (:meth:`AdapterStore.read_index`, one document) and the changes the
        log holds since its generation (:meth:`AdapterStore.changes_since`: only those tasks'
        aliases and policies are read). With no usable index (none yet, unreadable, or further
        behind than the change log) it lists the store once and writes a fresh index, so the
        next start reads one document again. Every task gets its row, its active version
        ``unloaded`` and serving: the first request loads it, single flight
        (:meth:`Residency.resolve`). The next full listing is due ``full_sync_every_s`` later
        (it catches a writer that died between its alias write and its bump; a request for a
        task the table lacks reads that task's alias at once, :meth:`catch_up`).
        """
        table = self.table
        with self._sync_lock, collector_paused():  # 100,000 aliases and rows: no garbage, many objects
            for _ in range(CATCH_UP_TRIES):
                seq = table.local_seq
                listed_at = time.monotonic()
                index = self.store.read_index()
                delta = self.store.changes_since(index.generation) if index is not None else None
                if delta is None:
                    gen = self.store.generation()  # before the listing: the aliases are at least this new
                    aliases = self.store.list_aliases()
                    policies = self.store.list_rollouts(sorted(aliases))
                    source, replayed = "listing", 0
                else:
                    gen, changed = delta
                    aliases, policies = dict(index.tasks), dict(index.rollouts)
                    live = sorted(n for n, a in changed.items() if a is not None)
                    fresh = self.store.list_rollouts(live)
                    for name, alias in changed.items():
                        policies.pop(name, None)
                        if alias is None:
                            aliases.pop(name, None)
                        else:
                            aliases[name] = alias
                            if name in fresh:
                                policies[name] = fresh[name]
                    source, replayed = "index", len(changed)
                with table.lock:
                    if table.local_seq != seq:
                        continue  # a local change raced this read: read again
                    for name in set(table.rows) - set(aliases):
                        table.drop(name)
                    for name in sorted(aliases):
                        alias, row = aliases[name], table.get(name)
                        if row is None or row.serving != alias.active:
                            self.residency.install(name, alias, None)  # loads on first use
                        elif row.alias != alias:
                            table.adopt(name, alias)
                        policy = parse_policy(name, policies.get(name))
                        if table.get(name).policy != policy:
                            table.set_policy(name, policy)
                    self.generation = gen
                    self._full_synced_at = listed_at
                break
            else:
                raise RuntimeError("local changes kept racing the start-up read of the store")
            written = False
            if source == "listing" or replayed >= CHANGE_LOG // 2:
                written = self._write_index(gen, aliases, policies)
            self.last_start = {"source": source, "tasks": len(aliases), "replayed": replayed,
                               "index_written": written}
            return self.last_start

    def _write_index(self, gen: int, aliases: dict[str, Alias], policies: dict[str, dict]) -> bool:
        """Write the store's index (derived data: a store this process may not write, e.g.
        read-only credentials, only costs the next start a full listing)."""
        try:
            self.store.write_index(StoreIndex(generation=gen, tasks=aliases, rollouts=policies))
            return True
        except Exception as exc:  # noqa: BLE001 - an index is an optimisation, never a failure
            log.warning("could not write the store index: %s", exc)
            return False

    # ---- the whole store ------------------------------------------------------------------
    def sync(self, force: bool = False) -> bool:
        """Follow the store: load newly active versions, drop deleted tasks. True if changed.

        Incremental when it can be: the store's change log names the tasks changed since
        the generation this process has seen, and only their aliases (and policies) are read
        and compared (:meth:`AdapterStore.changes_since`), so one change costs the same with
        100 tasks or 100,000. A full listing happens on the first sync, on ``force``, when
        the log cannot tell (this process is further behind than the log), and at least
        every ``full_sync_every_s`` (it also catches a writer that died between its alias
        write and its generation bump).

        A head new to this process, or a new version of a task whose serving version is in
        memory here, is loaded before it is installed (the old version answers meanwhile, and
        keeps answering if the new one fails); a task already served here at that version,
        resident or waiting for its first request, is left as it is, and a new version of a
        task not in memory here (or of an evictable kind) loads on first use. So a full
        listing after a lazy :meth:`start` loads nothing. A full listing rewrites the store's
        index.

        Loads happen outside the table lock, against a snapshot of the store; the snapshot
        is installed only if no local change landed since it was taken (``local_seq``),
        otherwise the round is dropped and the next one retries. A head version that fails
        to load is recorded on its entry (``failed``) while the task's previous version, if
        any, keeps answering.
        """
        table = self.table
        with self._sync_lock:
            seq = table.local_seq
            gen = self.store.generation()
            due = time.monotonic() - self._full_synced_at >= self.full_sync_every_s
            if gen == self.generation and not force and not due:
                return False
            delta = None if force or due or self.generation < 0 else self.store.changes_since(self.generation)
            if delta is None:
                aliases, full = self.store.list_aliases(), True
                gone = set(table.rows) - set(aliases)
                listed_at = time.monotonic()
            else:
                gen, changed = delta
                aliases = {n: a for n, a in changed.items() if a is not None}
                gone, full = {n for n, a in changed.items() if a is None}, False
            self.last_sync = {"full": full, "tasks_read": len(aliases) + (0 if full else len(gone)),
                              "names": None if full else sorted(set(aliases) | gone)}
            policies = self.store.list_rollouts(sorted(aliases))
            ready: dict[str, LoadedAdapter | None] = {}
            failed: dict[str, str] = {}
            for name, alias in aliases.items():
                row = table.get(name)
                if row is not None and row.serving == alias.active:
                    continue  # served at this version already (resident, or loads on first use)
                if evictable(alias.find(alias.active).kind) or (row is not None and table.serving(name) is None):
                    ready[name] = None  # loads on first use (evictable kinds within the budget)
                    continue
                try:  # load before switching: requests keep the old version meanwhile
                    ready[name] = self.residency.load(name, alias.active, activate=False)
                except TaskswapError as exc:
                    log.warning("task %s version %s failed to load: %s", name, alias.active[:12], exc)
                    failed[name] = str(exc)
            with table.lock:
                if table.local_seq != seq:
                    return False  # a local change raced this snapshot: retry next round
                for name in gone:
                    table.drop(name)
                for name, alias in aliases.items():
                    row = table.get(name)
                    if name in ready:
                        self.residency.install(name, alias, ready[name])
                    elif row is None or name in failed or row.alias != alias:
                        row = table.adopt(name, alias)  # the alias moves; what serves does not
                        if name in failed:
                            entry = row.versions[alias.active]
                            if entry.adapter is None:
                                entry.state, entry.error = "failed", failed[name]
                    policy = parse_policy(name, policies.get(name))
                    row = table.get(name)
                    if row is not None and row.policy != policy:
                        table.set_policy(name, policy)
                self.generation = gen
                if full:
                    self._full_synced_at = listed_at
            if full:
                self._write_index(gen, aliases, policies)
            return True
