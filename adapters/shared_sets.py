"""Sets: a shared adaptation's version and the versions of the tasks riding on it, switched
together, with rollback to the previous set.

Store aliases are compare-and-swap per task, so several aliases cannot switch in one
write. The set document (``meta/shared-sets/<adaptation>.json``, one compare-and-swap
document) is the record of which set is active; it is written *before* any alias moves
(``pending``: the set being switched to) and settled *after* the last one moved:

1. register the new adaptation version and one new version per task riding on it, none
   activated (a task given a folder gets that head, e.g. from a new multitask run; every
   other rider carries its head over onto the new adaptation version);
2. write the document: ``pending`` = the new set, ``active`` still the old one;
3. activate each alias (the adaptation first, then the tasks);
4. write the document: ``active`` = the new set, ``previous`` = the old one, no ``pending``.

A failure in step 3 moves every alias already switched back to the old set and clears
``pending`` before raising. A crash in step 3 leaves ``pending`` in the document: the next
set operation on that adaptation (or :meth:`SharedSets.recover`) moves every alias back to
``active`` first, and so does every process's start-up (:meth:`SharedSets.recover_at_start`,
called by ``Registry.start``) for a ``pending`` older than :data:`SWITCH_GRACE_S` (written
by a switch that died; a younger one may be a switch still running on another replica, so
it is looked at again once it is that old). So the aliases end all on the new set or all on the old one; between a
crash and its recovery some tasks may answer with the new set and some with the old, each
answer coming from one consistent version (a task's version pins its adaptation version).

    >>> set_key("reviews-base")
    'shared-sets/reviews-base'
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from adapters.errors import Conflict, InvalidInput, NotFound
from adapters.lifecycle import SHARED_KINDS, Lifecycle
from adapters.plugin_checks import read_adapter_dir
from adapters.store.base import check_name


log = logging.getLogger("taskswap.shared_sets")
SWITCH_GRACE_S = 30.0
"""A ``pending`` switch younger than this may still be running (on another replica): start-up
recovery leaves it until it is this old. Moving a set's aliases takes a few store writes."""


def set_key(name: str) -> str:
    return f"shared-sets/{check_name(name)}"


def _age_s(doc: dict, now: datetime) -> float:
    """Seconds since the document's pending switch began (a document without the time: old)."""
    try:
        return (now - datetime.fromisoformat(doc["pending_since"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return float("inf")


class SharedSets:
    """Switch a shared adaptation and its tasks as one set (see the module docstring)."""

    def __init__(self, lifecycle: Lifecycle):
        self.lifecycle = lifecycle
        self.store = lifecycle.store

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

    def recover(self, name: str, older_than_s: float | None = None) -> bool:
        """After a crash in the middle of a switch: move every alias back to the document's
        ``active`` set and clear ``pending``. True if there was one to undo. With
        ``older_than_s``, only a switch that began at least that long ago is undone."""
        with self.lifecycle.writer:
            doc = self.document(name)
            if doc is None or doc.get("pending") is None:
                return False
            if older_than_s is not None and _age_s(doc, datetime.now(timezone.utc)) < older_than_s:
                return False
            self._move(name, doc["active"])
            self.store.update_document(set_key(name), lambda d: {**d, "pending": None, "pending_since": None})
            log.warning("shared adaptation %r: a switch left half done was undone; its aliases are back on "
                        "version %s and its tasks' versions of that set", name, doc["active"]["adaptation"][:12])
            return True

    def recover_at_start(self, namespaces: Iterable[str] = (), grace_s: float = SWITCH_GRACE_S) -> dict:
        """Start-up: undo every half-done switch older than ``grace_s`` (:meth:`recover`);
        a younger one is looked at again by a timer once it is that old (its replica may be
        alive and finishing it). Returns ``{"recovered": [names], "deferred": [names]}``."""
        recovered, deferred = [], []
        now = datetime.now(timezone.utc)
        for name in self.names(namespaces):
            doc = self.document(name)
            if doc is None or doc.get("pending") is None:
                continue
            age = _age_s(doc, now)
            if age >= grace_s:
                if self.recover(name, older_than_s=grace_s):
                    recovered.append(name)
                continue
            deferred.append(name)
            timer = threading.Timer(grace_s - age + 0.05, self._recover_quietly, (name, grace_s))
            timer.daemon = True
            timer.start()
        return {"recovered": recovered, "deferred": deferred}

    def _recover_quietly(self, name: str, grace_s: float) -> None:
        try:
            self.recover(name, older_than_s=grace_s)
        except Exception:  # noqa: BLE001 - a timer thread: the next set operation or start retries
            log.exception("shared adaptation %r: undoing a half-done switch failed", name)

    def _switch(self, name: str, old: dict, new: dict) -> dict:
        key = set_key(name)
        since = datetime.now(timezone.utc).isoformat()
        self.store.update_document(key, lambda d: {**(d or {}), "name": name, "active": old,
                                                   "previous": (d or {}).get("previous"), "pending": new,
                                                   "pending_since": since})
        try:
            self._move(name, new)
        except BaseException:
            self._move(name, old)  # every alias back where it was, then the intent is dropped
            self.store.update_document(key, lambda d: {**d, "pending": None, "pending_since": None})
            raise
        return self.store.update_document(key, lambda d: {**d, "active": new, "previous": old, "pending": None,
                                                          "pending_since": None})

    def _move(self, name: str, target: dict) -> None:
        """Activate the adaptation's and each task's version of ``target`` (those not already active)."""
        wanted = [(name, target["adaptation"]), *sorted(target["tasks"].items())]
        for task, version in wanted:
            alias = self.store.get_alias(task)
            if alias is not None and alias.active != version:
                self.lifecycle.activate(task, version)


def _on_version(src: Path, dst: Path, task: str, shared: str, version: str) -> Path:
    """A copy of task folder ``src`` whose manifest rides on ``shared@version``."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "adapter.json").read_text())
    if m.get("name") not in (None, task):
        raise InvalidInput(f"the folder given for task {task!r} is task {m.get('name')!r}")
    m["name"], m["shared"] = task, {"name": shared, "version": version}
    (dst / "adapter.json").write_text(json.dumps(m))
    return dst
