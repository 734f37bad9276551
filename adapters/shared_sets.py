"""Sets: a shared adaptation's version and the versions of the tasks riding on it, switched
together, with rollback to the previous set.

Store aliases are compare-and-swap per task, so several aliases cannot switch in one
write. The set document (``meta/shared-sets/<adaptation>.json``, one compare-and-swap
document) is the record of which set is active; it is written *before* any alias moves
(``pending``: the set being switched to) and settled *after* the last one moved:

1. register the new adaptation version and one new version per task riding on it, none
   activated (a task given a folder gets that head, e.g. from a new multitask run; every
   other rider carries its head over onto the new adaptation version);
2. write the document: ``pending`` = the new set, ``active`` still the old one, and the
   switch's **owner** (a token of this switch) with its **lease** (``pending_lease_until``,
   :data:`SWITCH_LEASE_S` ahead) and the document's ``generation`` + 1;
3. activate each alias (the adaptation first, then the tasks), each one after renewing the
   lease by a compare-and-swap that fails if the switch has another owner now;
4. write the document, again only while this switch owns it: ``active`` = the new set,
   ``previous`` = the old one, no ``pending``.

A failure in step 3 moves every alias already switched back to the old set and clears
``pending`` before raising. A crash in step 3 leaves ``pending`` in the document with a lease
that is no longer renewed. **Recovery** moves every alias back to ``active`` and clears
``pending``, but only once the owner's lease has expired: it first takes the switch over (a
compare-and-swap making itself the owner, with a lease of its own, which it renews before
each alias it moves), so a replica starting while a live switch is merely slow between two
store writes leaves it alone. It runs at the next set operation on that adaptation (a set
operation finding a live switch of another owner is a ``Conflict``: retry), at every
process's start-up (:meth:`SharedSets.recover_at_start`, called by ``Registry.start``), and
by a timer when a lease found live at start-up expires. A switch stalled past its lease
that wakes up finds, at its next renewal or its settling write, that it lost the document:
it puts back every alias it moved that is still on its version (an alias compare-and-swap,
never over a later change) and raises a ``Conflict``; it never settles over a recovery. So
the aliases end all on the new set or all on the old one; between a crash and its recovery
some tasks may answer with the new set and some with the old, each answer coming from one
consistent version (a task's version pins its adaptation version). Leases are judged on
each machine's clock: the lease must exceed the clock skew between replicas. A document
written before owners existed has a lease of :data:`SWITCH_LEASE_S` from its
``pending_since``.

    >>> set_key("reviews-base")
    'shared-sets/reviews-base'
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable

from adapters.errors import Conflict, InvalidInput, NotFound
from adapters.lifecycle import SHARED_KINDS, Lifecycle
from adapters.plugin_checks import read_adapter_dir
from adapters.store.base import check_name


log = logging.getLogger("taskswap.shared_sets")
SWITCH_LEASE_S = 30.0
"""A switch's lease: renewed before each store write of the switch; a switch whose lease has
run out (its owner dead, or stalled that long between two writes) may be undone by another
process. Moving a set's aliases takes a few store writes."""
SWITCH_GRACE_S = SWITCH_LEASE_S  # the name callers used when the lease was a grace on pending_since


def set_key(name: str) -> str:
    return f"shared-sets/{check_name(name)}"


def _lease_left_s(doc: dict, now: datetime, lease_s: float) -> float:
    """Seconds left on the pending switch's lease (<= 0: expired). A document written before
    leases existed: ``lease_s`` from ``pending_since``; one without a readable time: expired."""
    try:
        if doc.get("pending_lease_until"):
            return (datetime.fromisoformat(doc["pending_lease_until"]) - now).total_seconds()
        return lease_s - (now - datetime.fromisoformat(doc["pending_since"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return float("-inf")


class SwitchLost(Conflict):
    """This switch no longer owns the set document: a recovery took it over after its lease ran out."""


_NO_PENDING = {"pending": None, "pending_since": None, "pending_owner": None, "pending_lease_until": None}


class SharedSets:
    """Switch a shared adaptation and its tasks as one set (see the module docstring).
    ``clock``: now, as an aware datetime (tests move it to expire a lease)."""

    def __init__(self, lifecycle: Lifecycle, lease_s: float = SWITCH_LEASE_S,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.lease_s = lease_s
        self.clock = clock

    # ---- reading ------------------------------------------------------------------------
    def current(self, name: str) -> dict:
        """The active set ``{"adaptation": version, "tasks": {task: version}}`` as the
        aliases say now (the adaptation's active version and every task whose active version
        rides on it)."""
        alias = self.store.get_alias(check_name(name))
        if alias is None:
            raise NotFound(f"shared adaptation {name!r} is not registered")
        if alias.find(alias.active).kind not in SHARED_KINDS:
            raise InvalidInput(f"{name!r} is a {alias.find(alias.active).kind} task, not a shared adaptation")
        ref = f"{name}@{alias.active}"
        tasks = {t: a.active for t, a in self.store.list_aliases().items()
                 if a.find(a.active).shared == ref}
        return {"adaptation": alias.active, "tasks": tasks}

    def document(self, name: str) -> dict | None:
        return self.store.get_document(set_key(name))

    def riders(self, name: str, aliases: dict | None = None) -> dict[str, dict[str, str]]:
        """``{adaptation version: {task: its newest version riding on it}}`` over every stored
        version of every task (active or not)."""
        prefix = f"{name}@"
        out: dict[str, dict[str, str]] = {}
        for task, alias in sorted((aliases if aliases is not None else self.store.list_aliases()).items()):
            for v in alias.versions:  # oldest first: the newest one riding on a version wins
                if v.shared is not None and v.shared.startswith(prefix):
                    out.setdefault(v.shared[len(prefix):], {})[task] = v.version
        return out

    def summaries(self) -> list[dict]:
        """``[{"name", "active": {"adaptation", "tasks"}}]`` of every shared adaptation (a task
        whose active version is one), by name, from one listing of the aliases."""
        aliases = self.store.list_aliases()
        riding: dict[str, dict[str, str]] = {}
        for task, a in sorted(aliases.items()):
            ref = a.find(a.active).shared
            if ref is not None:
                riding.setdefault(ref, {})[task] = a.active
        return [{"name": t, "active": {"adaptation": a.active, "tasks": riding.get(f"{t}@{a.active}", {})}}
                for t, a in sorted(aliases.items()) if a.find(a.active).kind in SHARED_KINDS]

    def describe(self, name: str) -> dict:
        """The set's record and every version of the adaptation with the tasks riding on it:
        ``{"name", "active": {"adaptation", "tasks"}, "previous", "pending", "versions":
        [{"version", "created_at", "active", "tasks": {task: version}}]}`` (versions oldest first)."""
        aliases = self.store.list_aliases()
        alias = aliases.get(check_name(name))
        if alias is None or alias.find(alias.active).kind not in SHARED_KINDS:
            raise NotFound(f"shared adaptation {name!r} is not registered"
                           + ("" if alias is None else f" ({name!r} is a {alias.find(alias.active).kind} task)"))
        ref = f"{name}@{alias.active}"
        active = {"adaptation": alias.active,
                  "tasks": {t: a.active for t, a in sorted(aliases.items()) if a.find(a.active).shared == ref}}
        riders, doc = self.riders(name, aliases), self.document(name) or {}
        versions = [{"version": v.version, "created_at": v.created_at, "active": v.version == alias.active,
                     "tasks": riders.get(v.version, {})} for v in alias.versions if v.kind in SHARED_KINDS]
        return {"name": name, "active": active, "previous": doc.get("previous"), "pending": doc.get("pending"),
                "versions": versions}

    def names(self, namespaces: Iterable[str] = ()) -> list[str]:
        """Every shared adaptation that has a set document: the bare names and those of
        ``namespaces`` (``team/base``), sorted."""
        keys = list(self.store.list_documents("shared-sets"))
        for ns in sorted(set(namespaces)):
            keys += self.store.list_documents(f"shared-sets/{ns}")
        return sorted(k.partition("/")[2] for k in keys)

    # ---- switching ----------------------------------------------------------------------
    def register(self, folder: Path, task_folders: dict[str, Path] | None = None,
                 authorize: Callable[[str], None] | None = None) -> dict:
        """Register a new version of the shared adaptation in ``folder`` and a new version of
        every task riding on it (``task_folders[task]``: that task's new head folder; other
        riders carry their head over), then switch them all as one set. Returns the document.
        ``authorize(name)`` is called on the adaptation's and every rider's name before
        anything is written (the service's role check)."""
        task_folders = dict(task_folders or {})
        adir = read_adapter_dir(Path(folder))
        if adir.manifest is None:
            raise InvalidInput("a shared adaptation folder needs its adapter.json (kind 'shared_lora')")
        if adir.manifest.kind not in SHARED_KINDS:
            raise InvalidInput(f"the adaptation's folder is a {adir.manifest.kind!r} adapter; a set's new "
                               f"version needs a shared adaptation (kind {sorted(SHARED_KINDS)})")
        name = check_name(adir.manifest.name)
        lc = self.lifecycle
        with lc.writer:
            self.recover(name)
            old = self.current(name)
            for task in (name, *sorted(old["tasks"])) if authorize is not None else ():
                authorize(task)
            unknown = sorted(set(task_folders) - set(old["tasks"]))
            if unknown:
                raise InvalidInput(f"tasks {unknown} do not ride on {name!r} (its tasks: {sorted(old['tasks'])}); "
                                   "register them on their own")
            new_version = lc.register(Path(folder), activate=False).loaded.version
            if new_version == old["adaptation"]:
                raise Conflict(f"version {new_version[:12]} is already the active version of {name!r}")
            tasks = {}
            for task, version in sorted(old["tasks"].items()):
                with tempfile.TemporaryDirectory(prefix="taskswap-rider-") as tmp:
                    src = task_folders.get(task) or self.store.version_path(task, version)
                    rider = _on_version(Path(src), Path(tmp) / task, task, name, new_version)
                    tasks[task] = lc.register(rider, activate=False).loaded.version
            return self._switch(name, old, {"adaptation": new_version, "tasks": tasks})

    def activate(self, name: str, version: str) -> dict:
        """Switch to the set of adaptation version ``version`` (an id or unique prefix): the
        adaptation and every task riding on it now, each to its newest version riding on
        ``version``; all or none. A ``Conflict`` names the tasks that have no such version."""
        with self.lifecycle.writer:
            self.recover(name)
            old = self.current(name)
            alias = self.store.get_alias(name)
            info = alias.find(version)
            if info.kind not in SHARED_KINDS:
                raise InvalidInput(f"version {info.version[:12]} of {name!r} is a {info.kind} version, "
                                   "not a shared adaptation")
            if info.version == old["adaptation"]:
                raise Conflict(f"version {info.version[:12]} is already the active version of {name!r}")
            on_target = self.riders(name).get(info.version, {})
            missing = sorted(set(old["tasks"]) - set(on_target))
            if missing:
                raise Conflict(f"tasks {missing} ride on {name!r} now but have no version on its version "
                               f"{info.version[:12]}: register their versions on it first (nothing was switched)")
            return self._switch(name, old, {"adaptation": info.version,
                                            "tasks": {t: on_target[t] for t in sorted(old["tasks"])}})

    def rollback(self, name: str) -> dict:
        """Switch back to the set that was active before the current one."""
        with self.lifecycle.writer:
            self.recover(name)
            doc = self.document(name)
            if doc is None or doc.get("previous") is None:
                raise Conflict(f"shared adaptation {name!r} has no previous set to roll back to")
            return self._switch(name, doc["active"], doc["previous"])

    def recover(self, name: str, lease_s: float | None = None, live_ok: bool = False) -> bool:
        """Undo a switch left half done (its owner's lease expired): take it over, move every
        alias back to the document's ``active`` set and clear ``pending``. True if there was
        one to undo. A switch whose lease still runs is a ``Conflict`` naming when it expires
        (with ``live_ok``: left alone, False). ``lease_s``: the lease of a document written
        before leases existed, from its ``pending_since`` (default: this instance's)."""
        lease_s = self.lease_s if lease_s is None else lease_s
        token = uuid.uuid4().hex
        with self.lifecycle.writer:
            taken: list[dict] = []

            def take(d: dict | None) -> dict:
                if d is None or d.get("pending") is None:
                    raise _Nothing
                now = self.clock()
                left = _lease_left_s(d, now, lease_s)
                if left > 0:
                    if live_ok:
                        raise _Nothing
                    raise Conflict(f"a switch of shared adaptation {name!r} to version "
                                   f"{d['pending']['adaptation'][:12]} is in progress (its lease runs "
                                   f"{left:.0f}s more); retry once it has finished or its lease has expired")
                taken[:] = [d]
                return {**d, "pending_owner": token, "pending_lease_until": self._lease_until(now),
                        "generation": int(d.get("generation") or 0) + 1}

            try:
                self.store.update_document(set_key(name), take)
            except _Nothing:
                return False
            doc = taken[0]
            self._move(name, doc["active"], token)
            self._settle(name, token, {})
            log.warning("shared adaptation %r: a switch left half done (owner %s) was undone; its aliases are "
                        "back on version %s and its tasks' versions of that set", name,
                        str(doc.get("pending_owner"))[:12], doc["active"]["adaptation"][:12])
            return True

    def recover_at_start(self, namespaces: Iterable[str] = (), lease_s: float | None = None) -> dict:
        """Start-up: undo every half-done switch whose owner's lease has expired
        (:meth:`recover`); a live one is looked at again by a timer when its lease runs out
        (its replica may be alive and finishing it). Returns ``{"recovered": [names],
        "deferred": [names]}``."""
        lease_s = self.lease_s if lease_s is None else lease_s
        recovered, deferred = [], []
        for name in self.names(namespaces):
            doc = self.document(name)
            if doc is None or doc.get("pending") is None:
                continue
            left = _lease_left_s(doc, self.clock(), lease_s)
            if left <= 0:
                if self.recover(name, lease_s, live_ok=True):
                    recovered.append(name)
                continue
            deferred.append(name)
            self._recover_later(name, left, lease_s)
        return {"recovered": recovered, "deferred": deferred}

    def _recover_later(self, name: str, after_s: float, lease_s: float) -> None:
        timer = threading.Timer(after_s + 0.05, self._recover_quietly, (name, lease_s))
        timer.daemon = True
        timer.start()

    def _recover_quietly(self, name: str, lease_s: float) -> None:
        """The timer's look: undo the switch if its lease has expired; if it was renewed
        meanwhile (its owner is alive), look again when the new lease runs out."""
        try:
            if not self.recover(name, lease_s, live_ok=True):
                doc = self.document(name)
                if doc is not None and doc.get("pending") is not None:
                    self._recover_later(name, max(_lease_left_s(doc, self.clock(), lease_s), 0.0), lease_s)
        except Exception:  # noqa: BLE001 - a timer thread: the next set operation or start retries
            log.exception("shared adaptation %r: undoing a half-done switch failed", name)

    def _lease_until(self, now: datetime) -> str:
        return (now + timedelta(seconds=self.lease_s)).isoformat()

    def _owned(self, name: str, token: str, change: Callable[[dict], dict]) -> dict:
        """Compare-and-swap the set document with ``change(doc)`` only while switch ``token``
        owns it (:class:`SwitchLost` otherwise, nothing written)."""
        def guarded(d: dict | None) -> dict:
            if d is None or d.get("pending_owner") != token:
                owner = None if d is None else d.get("pending_owner")
                raise SwitchLost(f"the switch of shared adaptation {name!r} lost its lease: "
                                 + (f"switch {str(owner)[:12]} owns the set now" if owner else
                                    "a recovery undid it")
                                 + f" (lease {self.lease_s:g}s); nothing of this switch stands: retry")
            return change(d)
        return self.store.update_document(set_key(name), guarded)

    def _renew(self, name: str, token: str) -> None:
        """Push the switch's lease ahead, proving it still owns the document."""
        self._owned(name, token, lambda d: {**d, "pending_lease_until": self._lease_until(self.clock())})

    def _settle(self, name: str, token: str, fields: dict) -> dict:
        """The switch's last write: ``fields`` and no ``pending``, only while ``token`` owns it."""
        return self._owned(name, token, lambda d: {**d, **fields, **_NO_PENDING,
                                                   "generation": int(d.get("generation") or 0) + 1})

    def _switch(self, name: str, old: dict, new: dict) -> dict:
        key, token = set_key(name), uuid.uuid4().hex

        def start(d: dict | None) -> dict:
            d = d or {}
            now = self.clock()
            if d.get("pending") is not None:  # a switch began since recover() looked: its lease decides
                raise Conflict(f"a switch of shared adaptation {name!r} began meanwhile; retry")
            return {**d, "name": name, "active": old, "previous": d.get("previous"), "pending": new,
                    "pending_since": now.isoformat(), "pending_owner": token,
                    "pending_lease_until": self._lease_until(now), "generation": int(d.get("generation") or 0) + 1}

        self.store.update_document(key, start)
        moved: list[tuple[str, str, str]] = []
        try:
            self._move(name, new, token, moved)
            return self._settle(name, token, {"active": new, "previous": old})
        except SwitchLost:
            self._put_back(moved)  # a recovery owns the set: undo what this switch moved after it
            raise
        except BaseException:
            self._put_back(moved)  # every alias back where it was, then the intent is dropped
            try:
                self._settle(name, token, {})
            except SwitchLost:
                pass  # a recovery took it over: it clears pending itself
            raise

    def _move(self, name: str, target: dict, token: str, moved: list | None = None) -> None:
        """Activate the adaptation's and each task's version of ``target`` (those not already
        active), renewing switch ``token``'s lease before each; ``moved`` collects
        ``(task, version, the version it replaced)``."""
        wanted = [(name, target["adaptation"]), *sorted(target["tasks"].items())]
        for task, version in wanted:
            alias = self.store.get_alias(task)
            if alias is not None and alias.active != version:
                self._renew(name, token)
                self.lifecycle.activate(task, version)
                if moved is not None:
                    moved.append((task, version, alias.active))

    def _put_back(self, moved: list[tuple[str, str, str]]) -> None:
        """Every alias this switch moved back to the version it replaced, where it still is on
        this switch's version (compare-and-swap on the alias: a later change stays)."""
        for task, version, before in reversed(moved):
            try:
                self.lifecycle.activate(task, before, expected=version)
            except (Conflict, NotFound):
                pass  # moved since (by the recovery, or a later change): leave it


class _Nothing(Exception):
    """Raised inside a document change that finds nothing to do (no store write)."""


def _on_version(src: Path, dst: Path, task: str, shared: str, version: str) -> Path:
    """A copy of task folder ``src`` whose manifest rides on ``shared@version``."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "adapter.json").read_text())
    if m.get("name") not in (None, task):
        raise InvalidInput(f"the folder given for task {task!r} is task {m.get('name')!r}")
    m["name"], m["shared"] = task, {"name": shared, "version": version}
    (dst / "adapter.json").write_text(json.dumps(m))
    return dst
