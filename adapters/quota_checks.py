"""What a namespace holds, and the size quotas a registration must fit before it is published.

Usage is counted from the task table (which follows the store): a namespace's tasks are
its rows, its stored bytes the recorded sizes (``VersionInfo.size``) of every version in
its tasks' histories. :class:`RegistrationQuota` is the lifecycle's ``admit`` hook: it runs
under the lifecycle's writer lock, after the process caught up with the store and before
the version is stored, so a refused registration writes nothing. Registrations through one
process are serialised by that lock; two replicas registering into one namespace at the
same moment may each pass the check and overshoot a limit by one version (or one task).

>>> from adapters.store.base import Alias, VersionInfo
>>> v = VersionInfo(version="a" * 64, kind="head", created_at="", size=10)
>>> usage([("x", Alias(name="x", active="a" * 64, versions=[v], updated_at=""))], "default")
Usage(tasks=1, stored_bytes=10)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from adapters.errors import QuotaExceeded
from adapters.namespaces import namespace_of
from adapters.quotas import QuotaBook
from adapters.store.base import Alias


class Usage(NamedTuple):
    tasks: int
    stored_bytes: int


def usage(aliases: Iterable[tuple[str, Alias]], namespace: str) -> Usage:
    """Tasks and stored bytes of ``namespace`` among ``(name, alias)`` pairs."""
    tasks = stored = 0
    for name, alias in aliases:
        if namespace_of(name) != namespace:
            continue
        tasks += 1
        stored += sum(v.size or 0 for v in alias.versions)
    return Usage(tasks, stored)


def usage_by_namespace(aliases: Iterable[tuple[str, Alias]]) -> dict[str, Usage]:
    """:func:`usage` of every namespace at once (one pass)."""
    out: dict[str, list[int]] = {}
    for name, alias in aliases:
        acc = out.setdefault(namespace_of(name), [0, 0])
        acc[0] += 1
        acc[1] += sum(v.size or 0 for v in alias.versions)
    return {ns: Usage(*acc) for ns, acc in out.items()}


def folder_bytes(folder: Path, replace: dict[str, bytes] | None = None) -> int:
    """Bytes a version of ``folder`` occupies once stored (files in ``replace`` swapped in)."""
    replace = replace or {}
    total = sum(p.stat().st_size for p in Path(folder).rglob("*")
                if p.is_file() and p.relative_to(folder).as_posix() not in replace)
    return total + sum(len(data) for data in replace.values())


def _refuse(namespace: str, quota: str, message: str) -> QuotaExceeded:
    return QuotaExceeded(f"namespace {namespace!r} is at its {quota} quota: {message}", quota=quota)


class RegistrationQuota:
    """``admit(name, nbytes, loaded, is_new)``: raise :class:`QuotaExceeded` (403) when
    storing this version would take ``name``'s namespace past a size quota."""

    def __init__(self, book: QuotaBook, aliases: Callable[[], Iterable[tuple[str, Alias]]]):
        self.book = book
        self.aliases = aliases  # the task table's (name, alias) pairs

    def __call__(self, name: str, nbytes: int, loaded, is_new: bool) -> None:
        namespace = namespace_of(name)
        quota = self.book.get(namespace)
        if not quota.limits():
            return
        used = usage(self.aliases(), namespace)
        if is_new and quota.max_tasks is not None and used.tasks + 1 > quota.max_tasks:
            raise _refuse(namespace, "max_tasks", f"it holds {used.tasks} tasks of {quota.max_tasks}; "
                          f"delete one or ask an admin to raise the quota before registering {name!r}")
        if quota.max_stored_bytes is not None and used.stored_bytes + nbytes > quota.max_stored_bytes:
            raise _refuse(namespace, "max_stored_bytes", f"{used.stored_bytes} bytes stored + {nbytes} "
                          f"for this version of {name!r} > {quota.max_stored_bytes}; delete tasks or "
                          "ask an admin to raise the quota")
        resident = loaded.nbytes if loaded.impl.evictable else 0
        if quota.max_resident_bytes is not None and resident > quota.max_resident_bytes:
            raise _refuse(namespace, "max_resident_bytes", f"this version of {name!r} needs {resident} "
                          f"resident bytes > {quota.max_resident_bytes}, so it could never be held in "
                          "memory within the namespace's share")
