"""What every store offers, whatever it is backed by.

Layout (relative to the store root)::

    generation                       counter + change log (see below), bumped on every change
    tasks/<name>/alias.json          {"active": <version>, "versions": [...]}
    tasks/<name>/versions/<sha256>/  immutable adapter files (content-addressed)
    tasks/<name>/rollout.json        the task's shadow/canary policy, if any (atomic, bumps)
    ns/<namespace>/tasks/<task>/     the same three for a qualified name ``namespace/task``;
                                     the default namespace keeps ``tasks/<name>/`` (stores
                                     written before namespaces open unchanged)
    index.json                       every alias and policy at one generation (see below)
    jobs/<id>.json                   fit-job records (one writer each: the worker running it)
    staging/<uuid>/                  uploads being written; never read as adapters
    meta/<key>.json                  small documents of the server itself (credentials, quotas,
                                     audit records): whole-document compare-and-swap

A version directory appears only by an atomic rename (or, on object storage, only
becomes reachable once the alias names it); the alias is replaced atomically (rename
or conditional put). So any crash leaves the old or the new state, never a half one.

The generation document is ``{"generation": n, "changes": [[n, task], ...]}``: the counter
and which task each of the last :data:`CHANGE_LOG` bumps touched (a bare integer, the
first format, has no log). A follower that has seen generation ``g`` asks
:meth:`AdapterStore.changes_since` and reads only the aliases changed since ``g`` — the
cost of following one change does not grow with the number of tasks. When the log cannot
tell (the follower is further behind than the log, a change without a task name, a
counter that went back) the answer is None and the follower lists everything.

The index (``index.json``, :class:`StoreIndex`) is every task's alias and rollout policy as
of one generation, in one document, so a process starting on a store of 100,000 tasks reads
one file instead of 100,000 aliases: it takes the index, then the change log's changes
since the index's generation (:meth:`AdapterStore.changes_since`). It is derived data: any
follower that has just listed the whole store writes it (an atomic replace, no lock), and a
missing, unreadable or too old index (further behind than the change log) only costs a full
listing. An index written from a listing that started after generation ``g`` was read is
at least as new as ``g``, so replaying the log from ``g`` on top of it is exact.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field, PrivateAttr

from adapters.errors import Conflict, InvalidInput, NotFound
from adapters.namespaces import DEFAULT_NAMESPACE, SEPARATOR, qualified, split_name

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
# The words that follow a task in a URL (``/adapters/team/task/rollout``,
# ``/v2/models/team/task/versions/<v>/infer``): the task part of a qualified name may not be
# one, so ``/adapters/team/rollout`` can only mean the rollout of task ``team``. A bare name
# keeps every word (``/adapters/rollout`` is one segment: no ambiguity).
ROUTE_WORDS = frozenset({"activate", "pin", "fit", "adapt", "rollout", "promote", "versions",
                         "ready", "infer"})
MAX_NAME_CHARS = 32 + 1 + 64  # namespace / task
_VERSION = re.compile(r"^[0-9a-f]{8,64}$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_DOC_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}(/[a-z0-9][a-z0-9_.-]{0,127}){0,3}$")
CHANGE_LOG = 256  # bumps remembered in the generation document (a few KiB)


def parse_generation(body: bytes | None) -> tuple[int, list]:
    """(counter, change log) from the generation document; a bare integer has no log.

    >>> parse_generation(b'{"generation": 3, "changes": [[3, "a"]]}'), parse_generation(b"7")
    ((3, [[3, 'a']]), (7, []))
    """
    if not body or not body.strip():
        return 0, []
    data = json.loads(body)
    if isinstance(data, int):
        return data, []
    return int(data["generation"]), list(data.get("changes", []))


def generation_bumped(body: bytes | None, name: str | None) -> bytes:
    """The generation document after one more change, of task ``name`` (None: unknown,
    which sends every follower to a full listing)."""
    gen, changes = parse_generation(body)
    changes = [*changes, [gen + 1, name]][-CHANGE_LOG:]
    return json.dumps({"generation": gen + 1, "changes": changes}).encode()


def changed_since(seen: int, gen: int, changes: list) -> set[str] | None:
    """Tasks changed by bumps ``seen+1 .. gen`` per the log, or None when the log cannot
    tell (a gap longer than the log, an unnamed change, or a counter that went back).

    >>> sorted(changed_since(1, 3, [[2, "a"], [3, "b"]])), changed_since(0, 3, [[2, "a"], [3, "b"]])
    (['a', 'b'], None)
    """
    if gen < seen or seen < 0:
        return None
    wanted = {g: n for g, n in changes if g > seen}
    if len(wanted) != gen - seen or any(n is None for n in wanted.values()):
        return None
    return set(wanted.values())


class VersionInfo(BaseModel):
    version: str
    kind: str
    created_at: str
    labels: list[str] = Field(default_factory=list)
    # What the version's manifest says it does ('generation', 'single_label', ...), so a listing
    # can tell generation tasks apart without loading them; None in aliases written before it.
    task_type: str | None = None
    # Bytes of the version's files as stored (namespace stored-bytes quotas add these up);
    # None in aliases written before it.
    size: int | None = None
    # The shared adaptation this version rides on ("name@version", kind 'multitask'), so
    # deleting the adaptation can name the tasks that use it without loading any manifest.
    shared: str | None = None


class Alias(BaseModel):
    """A task's pointer to its active version, with the history of its versions."""

    name: str
    active: str
    versions: list[VersionInfo]
    updated_at: str
    _replaced: str | None = PrivateAttr(None)

    @property
    def replaced(self) -> str | None:
        """On the alias a store's publish/activate returned: the version that was active
        just before *this* change (read inside the same compare-and-swap), None if none."""
        return self._replaced

    def replacing(self, previous: "Alias | None") -> "Alias":
        self._replaced = previous.active if previous is not None else None
        return self

    def find(self, version: str) -> VersionInfo:
        """The version with this id or unique prefix (at least 8 hex characters)."""
        check_version(version)
        hits = [v for v in self.versions if v.version.startswith(version)]
        if len(hits) != 1:
            known = ", ".join(v.version[:12] for v in self.versions)
            what = "is ambiguous" if hits else "does not exist"
            raise NotFound(f"version {version!r} of task {self.name!r} {what} (versions: {known})")
        return hits[0]


class StoreIndex(BaseModel):
    """Every task's alias and rollout policy document, at least as new as ``generation``."""

    generation: int
    tasks: dict[str, Alias]
    rollouts: dict[str, dict] = Field(default_factory=dict)


def parse_index(body: bytes | None) -> StoreIndex | None:
    """The index document, or None when absent or unreadable (a full listing replaces it)."""
    if not body:
        return None
    try:
        return StoreIndex.model_validate_json(body)
    except ValueError:
        return None


def check_name(name: str) -> str:
    """A task name, bare (``sentiment``, the default namespace) or qualified (``team/task``).

    >>> check_name("sentiment"), check_name("vision/defects")
    ('sentiment', 'vision/defects')
    """
    if not isinstance(name, str):
        raise InvalidInput(f"task name {name!r} is invalid: it must be a string")
    namespace, sep, task = name.partition(SEPARATOR)
    if not sep:
        if not _NAME.fullmatch(name):  # fullmatch: '$' admits 'x\n'
            raise InvalidInput(f"task name {name[:100]!r} is invalid: use 1-64 lowercase letters, digits, "
                               "'_', '-' or '.', starting with a letter or digit, optionally "
                               "after a namespace ('team/task')")
        return name
    problems = []
    if not _NAMESPACE.fullmatch(namespace):
        problems.append(f"its namespace {namespace[:40]!r} must be 1-32 lowercase letters, digits, "
                        "'_', '-' or '.', starting with a letter or digit")
    elif namespace == DEFAULT_NAMESPACE:
        problems.append(f"the default namespace is written bare: use {task[:64]!r}")
    if not _NAME.fullmatch(task):
        problems.append(f"its task {task[:70]!r} must be 1-64 lowercase letters, digits, '_', '-' "
                        "or '.', starting with a letter or digit (one '/' at most)")
    elif task in ROUTE_WORDS:
        problems.append(f"its task may not be a URL word ({', '.join(sorted(ROUTE_WORDS))})")
    if problems:
        raise InvalidInput(f"task name {name[:100]!r} is invalid: " + "; ".join(problems))
    return name


def task_prefix(name: str) -> str:
    """Where a task's files sit, relative to the store root.

    >>> task_prefix("sentiment"), task_prefix("vision/defects")
    ('tasks/sentiment', 'ns/vision/tasks/defects')
    """
    namespace, task = split_name(check_name(name))
    return f"tasks/{task}" if namespace == DEFAULT_NAMESPACE else f"ns/{namespace}/tasks/{task}"


def name_of_prefix(parts: list[str]) -> str | None:
    """The task name of a prefix split on '/' (``["ns", "team", "tasks", "t"]`` or
    ``["tasks", "t"]``), or None when it is neither layout.

    >>> name_of_prefix(["ns", "team", "tasks", "t"]), name_of_prefix(["tasks", "t"])
    ('team/t', 't')
    """
    if len(parts) == 2 and parts[0] == "tasks":
        return parts[1]
    if len(parts) == 4 and parts[0] == "ns" and parts[2] == "tasks" and parts[1] != DEFAULT_NAMESPACE:
        return qualified(parts[1], parts[3])
    return None


def stored_task(ref: str) -> str | None:
    """The task a store path points into (``tasks/x/...``, ``ns/team/tasks/x/...``,
    ``./`` and empty parts ignored), :data:`NAMESPACES_ROOT` for a path inside ``ns/`` that
    names no task, or None for a path outside both (``imports/...``).

    >>> stored_task("ns/team/tasks/x/versions/ab12"), stored_task("./tasks//x/versions/ab12/.")
    ('team/x', 'x')
    >>> stored_task("ns/team"), stored_task("imports/x")
    ('ns/', None)
    """
    parts = [p for p in str(ref).split("/") if p not in ("", ".")]
    if parts[:1] == ["tasks"] and len(parts) >= 2:
        return parts[1]
    if parts[:1] == ["ns"]:
        return (name_of_prefix(parts[:4]) if len(parts) >= 4 else None) or NAMESPACES_ROOT
    return None


NAMESPACES_ROOT = "ns/"  # stored_task's answer for a path in ns/ naming no task (never a task name)


EXPECT_NO_VERSION = ""  # ``expected``: the task must have no active version (a first registration)


def check_expected(name: str, alias: "Alias | None", expected: str | None) -> None:
    """Optimistic concurrency: raise ``Conflict`` unless the active version is ``expected``
    (a full id or a prefix of at least 8 characters; None = no condition;
    :data:`EXPECT_NO_VERSION` = no active version)."""
    if expected is None:
        return
    active = alias.active if alias is not None else None
    if expected == EXPECT_NO_VERSION:
        if active is not None:
            raise Conflict(f"task {name!r} is at version {active[:12]}, but no active version was "
                           "expected: another change landed first; re-read it and retry")
        return
    if active is None or not active.startswith(check_version(expected)):
        raise Conflict(f"task {name!r} is at version {active[:12] if active else 'none (not registered)'}, "
                       f"not the expected {expected[:12]}: another change landed first; "
                       "re-read it and retry")


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InvalidInput(f"version {version!r} is invalid: give the sha256 id or a prefix "
                           "of at least 8 hex characters")
    return version


class AdapterStore(ABC):
    """Immutable versions + atomically switched aliases + a generation counter."""

    url: str

    @abstractmethod
    def put_version(self, name: str, folder: Path, replace: dict[str, bytes] | None = None) -> str:
        """Copy an adapter folder in as a new immutable version; return its sha256 (idempotent).

        ``replace`` maps file names to the bytes stored instead of the folder's own (the
        registry's completed ``adapter.json``), so the caller's folder is never written."""

    @abstractmethod
    def version_path(self, name: str, version: str) -> Path:
        """A local folder holding the version's files (fetched into a cache if remote)."""

    @abstractmethod
    def get_alias(self, name: str) -> Alias | None: ...

    @abstractmethod
    def list_aliases(self) -> dict[str, Alias]: ...

    @abstractmethod
    def publish(self, name: str, version: str, info: VersionInfo, expected: str | None = None) -> Alias:
        """Add ``version`` to the task's history and make it active (atomic). The returned
        alias's ``replaced`` is the version it displaced; with ``expected``, a ``Conflict``
        unless that was the active version (see :func:`check_expected`)."""

    @abstractmethod
    def activate(self, name: str, version: str, expected: str | None = None) -> Alias:
        """Make an existing version active (rollback); atomic; ``expected`` as for publish."""

    @abstractmethod
    def delete(self, name: str, expected: str | None = None) -> None:
        """Remove the task: its alias first (atomic), then its files; ``expected`` as for publish."""

    @abstractmethod
    def generation(self) -> int:
        """A number that grows with every alias change; replicas poll it."""

    def changes_since(self, generation: int) -> "tuple[int, dict[str, Alias | None]] | None":
        """What changed after ``generation``: ``(the current generation, {task: its alias
        now, or None if the task is gone})``, reading only those tasks' aliases; or None
        when the change log cannot tell (see the module docstring): list everything then.
        The aliases are read after the generation, so they are at least that new."""
        return None

    def read_index(self) -> StoreIndex | None:
        """The store's index (see the module docstring), or None if it has none."""
        return None

    def write_index(self, index: StoreIndex) -> None:
        """Replace the index atomically (a store that keeps none ignores it)."""

    @abstractmethod
    def gc(self, grace_s: float = 3600.0) -> list[str]:
        """Remove staging leftovers and unreferenced versions older than ``grace_s``."""

    def resolve_store_path(self, ref: str) -> Path:
        """A folder inside the store named by a request (``tasks/x/versions/<sha>``,
        ``ns/team/tasks/x/versions/<sha>``,
        or a path under ``imports/``); anything else is refused."""
        raise InvalidInput("this store does not support registration by path")

    # ---- beside the adapters: rollout policies and job records ---------------------------
    # Additive to the store contract; the policy and job *meaning* lives in adapters.rollout
    # and service.jobs, the store only keeps small JSON documents atomically.

    def add_version(self, name: str, version: str, info: VersionInfo) -> Alias:
        """Add ``version`` to an existing task's history *without* activating it (a
        candidate for shadow/canary); atomic like :meth:`publish`."""
        raise InvalidInput("this store does not support candidate versions")

    def get_rollout(self, name: str) -> dict | None:
        """The task's rollout policy document, or None."""
        return None

    def update_rollout(self, name: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Atomically replace the policy with ``change(current)`` (None removes it) and bump
        the generation, so every replica and worker follows it; returns the new document."""
        raise InvalidInput("this store does not support rollout policies")

    def list_rollouts(self, names: list[str]) -> dict[str, dict]:
        """The policy documents of ``names`` that have one."""
        return {}

    def put_job(self, job_id: str, record: dict) -> None:
        """Write a fit-job record (whole-document replace; one writer per job)."""
        raise InvalidInput("this store does not keep job records")

    def get_job(self, job_id: str) -> dict | None:
        return None

    # ---- documents: the server's own small records (credentials, quotas, audit) ----------
    def get_document(self, key: str) -> dict | None:
        """The document at ``meta/<key>.json``, or None."""
        return None

    def update_document(self, key: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Atomically replace the document with ``change(current)`` (None removes it; an
        exception from ``change`` writes nothing) and return the new one. Two writers never
        lose each other's update. Bumps no generation: readers poll or cache with a TTL."""
        raise InvalidInput("this store does not keep documents")

    def create_document(self, key: str, doc: dict) -> bool:
        """Write the document only if ``key`` holds none (append-only records); False if it does."""
        raise InvalidInput("this store does not keep documents")

    def list_documents(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (a key's folder, e.g. ``"audit"``), sorted."""
        return []


def check_document_key(key: str) -> str:
    """``a/b/c``: up to four lowercase path parts, no ``..``, no leading dot.

    >>> check_document_key("tokens/abc"), check_document_key("audit/2026-12-07.x")
    ('tokens/abc', 'audit/2026-12-07.x')
    """
    if not isinstance(key, str) or not _DOC_KEY.fullmatch(key) or ".." in key:
        raise InvalidInput(f"document key {str(key)[:80]!r} is invalid")
    return key


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise NotFound(f"job {job_id[:80]!r} does not exist (job ids are 32 hex characters)")
    return job_id
