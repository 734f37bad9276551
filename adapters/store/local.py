"""The store on a local (or network-mounted POSIX) folder.

Writes are stage-then-rename with fsync; alias read-modify-writes run under an
``fcntl`` lock on ``<root>/.lock`` so several worker processes and replicas on one
filesystem never lose an update. The generation file carries the change log
(:mod:`adapters.store.base`), so a follower re-reads only the aliases that changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from adapters.errors import InvalidInput, NotFound
from adapters.file_modes import make_readable
from adapters.format.adapter_dir import content_hash
from adapters.store.base import (AdapterStore, Alias, StoreIndex, VersionInfo, changed_since, check_expected,
                                 check_document_key, check_job_id, check_version, generation_bumped, name_of_prefix,
                                 parse_generation, parse_index, task_prefix)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _replace_json(path: Path, doc: dict | None) -> None:
    """Write ``doc`` at ``path`` atomically (its folder made if missing), or remove the file
    when ``doc`` is None (callers hold the store lock)."""
    if doc is None:
        if path.exists():
            path.unlink()
            _fsync_dir(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(doc, indent=2).encode())


class LocalStore(AdapterStore):
    """``open_store('/var/lib/taskswap/store')`` — see :mod:`adapters.store.base` for the layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.url = str(self.root)
        for sub in ("tasks", "staging", "imports", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()

    # ---- locking -------------------------------------------------------------------
    @contextmanager
    def _locked(self):
        with self._thread_lock, open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- versions ------------------------------------------------------------------
    def _task_dir(self, name: str) -> Path:
        return self.root / task_prefix(name)

    def _task_dirs(self) -> list[tuple[str, Path]]:
        """Every task folder with its name: ``tasks/<name>`` (the default namespace) and
        ``ns/<namespace>/tasks/<task>``, sorted by name."""
        found = [(d.name, d) for d in (self.root / "tasks").iterdir()]
        for ns in (self.root / "ns").glob("*/tasks"):
            found += [(name_of_prefix(["ns", ns.parent.name, "tasks", d.name]), d) for d in ns.iterdir()]
        return sorted((n, d) for n, d in found if n is not None)

    def put_version(self, name: str, folder: Path, replace: dict[str, bytes] | None = None) -> str:
        stage = self.root / "staging" / uuid.uuid4().hex
        shutil.copytree(folder, stage, symlinks=True)
        try:
            for fname, data in (replace or {}).items():
                (stage / fname).write_bytes(data)
            make_readable(stage)  # copies keep 0600/0700 modes; other users' replicas read it
            for p in stage.iterdir():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            _fsync_dir(stage)
            version = content_hash(stage)
            target = self._task_dir(name) / "versions" / version
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                return version  # same bytes already stored: idempotent
            try:
                os.rename(stage, target)  # atomic: the version appears whole or not at all
            except OSError:
                if not target.exists():
                    raise
            _fsync_dir(target.parent)
            return version
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def version_path(self, name: str, version: str) -> Path:
        path = self._task_dir(name) / "versions" / check_version(version)
        if not path.is_dir():
            raise NotFound(f"version {version[:12]} of task {name!r} is not in the store")
        return path

    # ---- aliases -------------------------------------------------------------------
    def get_alias(self, name: str) -> Alias | None:
        path = self._task_dir(name) / "alias.json"
        try:
            return Alias.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None

    def list_aliases(self) -> dict[str, Alias]:
        out = {}
        for name, d in self._task_dirs():
            alias = self.get_alias(name) if (d / "alias.json").exists() else None
            if alias is not None:
                out[name] = alias
        return out

    def _write_alias(self, alias: Alias) -> None:
        write_atomic(self._task_dir(alias.name) / "alias.json", alias.model_dump_json(indent=2).encode())
        self._bump(alias.name)

    def publish(self, name: str, version: str, info: VersionInfo, expected: str | None = None) -> Alias:
        self.version_path(name, version)
        with self._locked():
            old = self.get_alias(name)
            check_expected(name, old, expected)
            versions = [v for v in (old.versions if old else []) if v.version != version]
            alias = Alias(name=name, active=version, versions=[*versions, info], updated_at=_now())
            self._write_alias(alias)
            return alias.replacing(old)

    def activate(self, name: str, version: str, expected: str | None = None) -> Alias:
        with self._locked():
            old = self.get_alias(name)
            if old is None:
                raise NotFound(f"task {name!r} is not registered")
            check_expected(name, old, expected)
            found = old.find(version)
            alias = old.model_copy(update={"active": found.version, "updated_at": _now()})
            self._write_alias(alias)
            return alias.replacing(old)

    def delete(self, name: str, expected: str | None = None) -> None:
        task = self._task_dir(name)
        with self._locked():
            if not (task / "alias.json").exists():
                raise NotFound(f"task {name!r} is not registered")
            check_expected(name, self.get_alias(name), expected)
            trash = self.root / "staging" / f"deleted-{name.replace('/', '+')}-{uuid.uuid4().hex}"
            os.rename(task, trash)  # the task vanishes atomically; files go after
            _fsync_dir(task.parent)
            self._bump(name)
        shutil.rmtree(trash, ignore_errors=True)

    # ---- candidates, rollout policies, jobs ------------------------------------------
    def add_version(self, name: str, version: str, info: VersionInfo) -> Alias:
        self.version_path(name, version)
        with self._locked():
            alias = self.get_alias(name)
            if alias is None:
                raise NotFound(f"task {name!r} is not registered: a candidate needs an active "
                               "version to compare with; register it as active first")
            versions = [v for v in alias.versions if v.version != version]
            alias = alias.model_copy(update={"versions": [*versions, info], "updated_at": _now()})
            self._write_alias(alias)
            return alias

    def get_rollout(self, name: str) -> dict | None:
        try:
            return json.loads((self._task_dir(name) / "rollout.json").read_bytes())
        except FileNotFoundError:
            return None

    def update_rollout(self, name: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        path = self._task_dir(name) / "rollout.json"
        with self._locked():
            new = change(self.get_rollout(name))  # may raise: nothing written then
            if new is not None and not (path.parent / "alias.json").exists():
                raise NotFound(f"task {name!r} is not registered")
            _replace_json(path, new)
            self._bump(name)
            return new

    def list_rollouts(self, names: list[str]) -> dict[str, dict]:
        return {n: r for n in names if (r := self.get_rollout(n)) is not None}

    def put_job(self, job_id: str, record: dict) -> None:
        write_atomic(self.root / "jobs" / f"{check_job_id(job_id)}.json", json.dumps(record).encode())

    def get_job(self, job_id: str) -> dict | None:
        try:
            return json.loads((self.root / "jobs" / f"{check_job_id(job_id)}.json").read_bytes())
        except FileNotFoundError:
            return None

    # ---- documents -------------------------------------------------------------------
    def _document_path(self, key: str) -> Path:
        return self.root / "meta" / f"{check_document_key(key)}.json"

    def get_document(self, key: str) -> dict | None:
        try:
            return json.loads(self._document_path(key).read_bytes())
        except FileNotFoundError:
            return None

    def update_document(self, key: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        path = self._document_path(key)
        with self._locked():
            new = change(self.get_document(key))  # may raise: nothing written then
            _replace_json(path, new)
            return new

    def create_document(self, key: str, doc: dict) -> bool:
        path = self._document_path(key)
        with self._locked():
            if path.exists():
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(doc, indent=2).encode())
            return True

    def list_documents(self, prefix: str) -> list[str]:
        folder = self.root / "meta" / check_document_key(prefix)
        if not folder.is_dir():
            return []
        return sorted(f"{prefix}/{p.name[:-5]}" for p in folder.iterdir()
                      if p.is_file() and p.name.endswith(".json"))

    # ---- generation ----------------------------------------------------------------
    def _generation_doc(self) -> bytes | None:
        try:
            return (self.root / "generation").read_bytes()
        except FileNotFoundError:
            return None

    def generation(self) -> int:
        return parse_generation(self._generation_doc())[0]

    def changes_since(self, generation: int) -> tuple[int, dict[str, Alias | None]] | None:
        """One read of the generation document, then one per changed task's alias."""
        gen, changes = parse_generation(self._generation_doc())
        names = changed_since(generation, gen, changes)
        if names is None:
            return None
        return gen, {n: self.get_alias(n) for n in sorted(names)}

    # ---- the index (derived: any follower that listed everything writes it) -----------
    def read_index(self) -> StoreIndex | None:
        try:
            return parse_index((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return None

    def write_index(self, index: StoreIndex) -> None:
        """Write-then-rename, no store lock: a reader sees the old or the new index whole."""
        write_atomic(self.root / "index.json", index.model_dump_json().encode())

    def _bump(self, name: str | None = None) -> None:
        """Count one change of task ``name`` in the generation document (callers hold the
        lock; written after the change itself, so a reader of the new number sees it)."""
        write_atomic(self.root / "generation", generation_bumped(self._generation_doc(), name))

    # ---- maintenance ---------------------------------------------------------------
    def gc(self, grace_s: float = 3600.0) -> list[str]:
        removed, cutoff = [], time.time() - grace_s
        for p in (self.root / "staging").iterdir():
            if p.stat().st_mtime < cutoff or p.name.startswith("deleted-"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(str(p.relative_to(self.root)))
        for name, task in self._task_dirs():
            # The lock per task, not across the sweep: a sweep of 100,000 tasks takes many
            # seconds, and a registration (whose publish takes the lock) must not wait on it.
            with self._locked():
                if not task.is_dir():
                    continue  # deleted meanwhile
                alias = self.get_alias(name)
                keep = {v.version for v in alias.versions} if alias else set()
                vdir = task / "versions"
                for v in (vdir.iterdir() if vdir.is_dir() else []):
                    if v.name not in keep and v.stat().st_mtime < cutoff:
                        shutil.rmtree(v, ignore_errors=True)
                        removed.append(str(v.relative_to(self.root)))
                if alias is None and (not vdir.is_dir() or not any(vdir.iterdir())):
                    shutil.rmtree(task, ignore_errors=True)
        for p in self.root.glob("**/.*.tmp"):
            if p.stat().st_mtime < cutoff:
                p.unlink(missing_ok=True)
                removed.append(str(p.relative_to(self.root)))
        return removed

    def resolve_store_path(self, ref: str) -> Path:
        """Only folders inside the store root; ``..``, absolute paths and links are refused."""
        if not isinstance(ref, str) or not ref or "\0" in ref or len(ref) > 1024:
            raise InvalidInput("store path must be a non-empty relative path of at most 1024 "
                               "characters, without NUL bytes")
        if ref.startswith("/") or ".." in ref.split("/"):
            raise InvalidInput(f"store path {ref!r} must be relative to the store root, without '..'")
        path = (self.root / ref)
        try:  # a name the filesystem cannot hold (ENAMETOOLONG, found by fuzzing) is bad input
            real = path.resolve()
            outside = self.root not in real.parents or path.is_symlink()
            is_dir = not outside and real.is_dir()
        except OSError as exc:
            raise InvalidInput(f"store path {ref[:100]!r} is not a usable path ({exc.strerror})") from exc
        if outside:
            raise InvalidInput(f"store path {ref!r} leaves the store; only paths inside it are allowed")
        if not is_dir:
            raise NotFound(f"store path {ref!r} does not exist in the store")
        return real
