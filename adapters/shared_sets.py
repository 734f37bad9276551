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
``active`` first. So the aliases end all on the new set or all on the old one; between a
crash and its recovery some tasks may answer with the new set and some with the old, each
answer coming from one consistent version (a task's version pins its adaptation version).

    >>> set_key("reviews-base")
    'shared-sets/reviews-base'
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from adapters.errors import Conflict, InvalidInput, NotFound
from adapters.lifecycle import SHARED_KINDS, Lifecycle
from adapters.plugin_checks import read_adapter_dir
from adapters.store.base import check_name


def set_key(name: str) -> str:
    return f"shared-sets/{check_name(name)}"


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

    # ---- switching ----------------------------------------------------------------------
    def register(self, folder: Path, task_folders: dict[str, Path] | None = None) -> dict:
        """Register a new version of the shared adaptation in ``folder`` and a new version of
        every task riding on it (``task_folders[task]``: that task's new head folder; other
        riders carry their head over), then switch them all as one set. Returns the document."""
        task_folders = dict(task_folders or {})
        adir = read_adapter_dir(Path(folder))
        if adir.manifest is None:
            raise InvalidInput("a shared adaptation folder needs its adapter.json (kind 'shared_lora')")
        name = check_name(adir.manifest.name)
        lc = self.lifecycle
        with lc.writer:
            self.recover(name)
            old = self.current(name)
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

    def rollback(self, name: str) -> dict:
        """Switch back to the set that was active before the current one."""
        with self.lifecycle.writer:
            self.recover(name)
            doc = self.document(name)
            if doc is None or doc.get("previous") is None:
                raise Conflict(f"shared adaptation {name!r} has no previous set to roll back to")
            return self._switch(name, doc["active"], doc["previous"])

    def recover(self, name: str) -> bool:
        """After a crash in the middle of a switch: move every alias back to the document's
        ``active`` set and clear ``pending``. True if there was one to undo."""
        with self.lifecycle.writer:
            doc = self.document(name)
            if doc is None or doc.get("pending") is None:
                return False
            self._move(name, doc["active"])
            self.store.update_document(set_key(name), lambda d: {**d, "pending": None})
            return True

    def _switch(self, name: str, old: dict, new: dict) -> dict:
        key = set_key(name)
        self.store.update_document(key, lambda d: {**(d or {}), "name": name, "active": old,
                                                   "previous": (d or {}).get("previous"), "pending": new})
        try:
            self._move(name, new)
        except BaseException:
            self._move(name, old)  # every alias back where it was, then the intent is dropped
            self.store.update_document(key, lambda d: {**d, "pending": None})
            raise
        return self.store.update_document(key, lambda d: {**d, "active": new, "previous": old, "pending": None})

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
