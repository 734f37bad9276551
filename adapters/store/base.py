"""What every store offers, whatever it is backed by.

Layout (relative to the store root)::

    generation                       integer, bumped on every alias change
    tasks/<name>/alias.json          {"active": <version>, "versions": [...]}
    tasks/<name>/versions/<sha256>/  immutable adapter files (content-addressed)
    tasks/<name>/rollout.json        the task's shadow/canary policy, if any (atomic, bumps)
    jobs/<id>.json                   fit-job records (one writer each: the worker running it)
    staging/<uuid>/                  uploads being written; never read as adapters

A version directory appears only by an atomic rename (or, on object storage, only
becomes reachable once the alias names it); the alias is replaced atomically (rename
or conditional put). So any crash leaves the old or the new state, never a half one.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field, PrivateAttr

from adapters.errors import Conflict, InvalidInput, NotFound

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^[0-9a-f]{8,64}$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class VersionInfo(BaseModel):
    version: str
    kind: str
    created_at: str
    labels: list[str] = Field(default_factory=list)


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


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):  # fullmatch: '$' admits 'x\n'
        raise InvalidInput(f"task name {name!r} is invalid: use 1-64 lowercase letters, digits, "
                           "'_', '-' or '.', starting with a letter or digit")
    return name


def check_expected(name: str, alias: "Alias | None", expected: str | None) -> None:
    """Optimistic concurrency: raise ``Conflict`` unless the active version is ``expected``
    (a full id or a prefix of at least 8 characters; None = no condition)."""
    if expected is None:
        return
    active = alias.active if alias is not None else None
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

    @abstractmethod
    def gc(self, grace_s: float = 3600.0) -> list[str]:
        """Remove staging leftovers and unreferenced versions older than ``grace_s``."""

    def resolve_store_path(self, ref: str) -> Path:
        """A folder inside the store named by a request (``tasks/x/versions/<sha>``,
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


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise NotFound(f"job {job_id[:80]!r} does not exist (job ids are 32 hex characters)")
    return job_id
