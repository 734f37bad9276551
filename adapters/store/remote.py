"""The store on an S3-compatible bucket, through fsspec's ``s3fs``.

Same layout and promises as :mod:`adapters.store.local`, with no lock and no rename:

    <prefix>/generation                              counter + recent change log, compare-and-swap
    <prefix>/tasks/<name>/alias.json                 switched by a conditional put
    <prefix>/tasks/<name>/versions/<sha>/<file>      immutable, content-addressed
    <prefix>/tasks/<name>/versions/<sha>/.complete.json   written last: file list + sha256s
    <prefix>/ns/<namespace>/tasks/<task>/...         the same for a qualified name 'namespace/task'
    <prefix>/imports/...                             adapters uploaded for registration by path
    <prefix>/index.json                              every alias and policy at one generation (derived)

Why each piece:

- A version folder cannot appear atomically on S3, so it is only *reachable* once its
  ``.complete.json`` marker exists (written after every file) and *visible* once an alias
  names it. A crash mid-upload leaves files no reader looks at; ``gc`` removes them.
- Aliases and the generation counter are read-modify-written with ``If-Match: <etag>``
  (or ``If-None-Match: *`` when creating). A writer that lost the race gets HTTP 412,
  re-reads and retries, so two replicas registering at once never lose an update.
- ``delete`` removes the alias with a conditional delete and leaves the version files to
  ``gc``: deleting them at once could pull files from under a concurrent re-registration
  of the same bytes (``put_version`` is idempotent and would trust them). Unreachable
  files are invisible, so this costs storage for ``grace_s`` only.
- ``generation`` holds ``{"generation": n, "changes": [[n, task], ...]}`` (the change
  log of :mod:`adapters.store.base`): ``changes_since`` reads it and then only the aliases
  changed since the follower's generation (one GET each). ``list_aliases`` keeps its own
  snapshot the same way; a gap longer than the log, an unnamed change, or a snapshot
  older than ``FULL_LIST_EVERY_S`` falls back to the full listing (which also catches a
  writer that died between its alias write and its bump).
- ``version_path`` downloads a version into a local cache keyed by its sha256 (a version
  never changes, so the cache never goes stale), verifies the content hash, and renames
  it into place, so concurrent workers on one host never see a half download.

Endpoint and credentials come from the standard environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``) or ``TASKSWAP_S3_ENDPOINT_URL``, which wins.
The local cache lives in ``$TASKSWAP_STORE_CACHE`` or ``$TASKSWAP_HOME/store-cache``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from fsspec.asyn import sync

from adapters.errors import Conflict, InvalidAdapter, InvalidInput, NotFound
from adapters.file_modes import make_readable
from adapters.format.adapter_dir import MAX_FILES, content_hash, content_hash_of
from adapters.home import taskswap_home
from adapters.store.base import (AdapterStore, Alias, StoreIndex, VersionInfo, changed_since, check_expected,
                                 check_document_key, check_job_id, check_version, generation_bumped, name_of_prefix, task_prefix,
                                 parse_generation, parse_index)

MARKER = ".complete.json"
FULL_LIST_EVERY_S = 60.0  # the longest an incremental snapshot is trusted
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict"}  # 412, and 409 on AWS


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception (s3fs wraps botocore's ClientError)."""
    seen = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return response["Error"].get("Code")
        seen = seen.__cause__ or seen.__context__
    return None


class _LostRace(Exception):
    """A conditional write found the object changed since we read it."""


def _endpoint_url() -> str | None:
    for var in ("TASKSWAP_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def _make_s3fs():
    try:  # optional: only an s3:// store needs s3fs (the 's3' extra)
        import s3fs
    except ImportError as exc:
        raise InvalidInput("an s3:// store needs s3fs; install it with: pip install 'taskswap[s3]'") from exc
    client_kwargs = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    # No listings cache: other replicas write to the bucket, a cached listing would be stale.
    return s3fs.S3FileSystem(endpoint_url=_endpoint_url(), client_kwargs=client_kwargs,
                             use_listings_cache=False, skip_instance_cache=True)


class FsspecStore(AdapterStore):
    """``open_store('s3://bucket/prefix')`` — see the module docstring for the layout.

    ``cas_attempts`` bounds the retries of one conditional update before it gives up
    with :class:`Conflict`; ``max_import_bytes`` caps a registration by store path.
    """

    def __init__(self, url: str, cache_dir: str | Path | None = None, fs=None,
                 cas_attempts: int = 64, max_import_bytes: int = 256 << 20):
        protocol, _, rest = url.partition("://")
        if protocol not in ("s3", "s3a"):
            raise InvalidInput(f"store URL {url!r}: only s3:// (any S3-compatible service) is supported "
                               "for object storage; it offers the conditional writes the store needs")
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise InvalidInput(f"store URL {url!r} names no bucket; use s3://BUCKET[/PREFIX]")
        self.prefix = prefix.strip("/")
        if ".." in self.prefix.split("/"):
            raise InvalidInput(f"store URL {url!r}: '..' is not allowed in the prefix")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.fs = fs if fs is not None else _make_s3fs()
        self.cas_attempts = cas_attempts
        self.max_import_bytes = max_import_bytes
        env_cache = os.environ.get("TASKSWAP_STORE_CACHE")
        base = Path(cache_dir or env_cache or taskswap_home() / "store-cache")
        # One cache per store URL, so two stores never share (or clash on) a folder.
        self.cache = (base / hashlib.sha256(self.url.encode()).hexdigest()[:16]).resolve()
        self.cache.mkdir(parents=True, exist_ok=True)
        # list_aliases' last answer: (generation, aliases, monotonic time of the full listing)
        self._snapshot: tuple[int, dict[str, Alias], float] | None = None
        self._snapshot_lock = threading.Lock()
        self._check_bucket()

    # ---- raw S3 calls (s3fs owns the client, its event loop and transient retries) -----
    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    def _call(self, method: str, **kwargs):
        # Through the coroutine, like every other S3 call here (one place to observe them).
        return self._run(lambda: self.fs._call_s3(method, Bucket=self.bucket, **kwargs))

    def _run(self, coro_fn, *args):
        return sync(self.fs.loop, coro_fn, *args)

    def _check_bucket(self) -> None:
        try:
            self._call("head_bucket")
        except Exception as exc:  # noqa: BLE001 - reworded below, cause kept
            raise InvalidInput(f"store bucket {self.bucket!r} is not reachable ({_error_code(exc) or exc}); "
                               "create it, or check the endpoint (TASKSWAP_S3_ENDPOINT_URL / "
                               "AWS_ENDPOINT_URL) and the credentials (AWS_ACCESS_KEY_ID ...)") from exc

    def _get(self, rel: str) -> tuple[bytes, str] | None:
        """(body, etag) read in one request, or None when the key does not exist."""
        async def get():
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self._key(rel))
            async with resp["Body"] as body:
                return await body.read(), resp["ETag"]
        try:
            return self._run(get)
        except FileNotFoundError:
            return None

    def _get_many(self, rels: list[str], concurrency: int = 32) -> list[bytes | None]:
        """Bodies of ``rels`` (None where a key does not exist), fetched concurrently with
        one GET each. Any other error is raised. (``fs.cat``/``fs.get`` on a list first
        probe each path, several times slower per key: this is what a sync pays per task.)"""
        async def fetch_all():
            gate = asyncio.Semaphore(concurrency)

            async def one(rel: str) -> bytes | None:
                async with gate:
                    try:
                        resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self._key(rel))
                    except FileNotFoundError:
                        return None
                    async with resp["Body"] as body:
                        return await body.read()
            return await asyncio.gather(*(one(r) for r in rels))
        return list(self._run(fetch_all)) if rels else []

    def _put(self, rel: str, data: bytes, if_match: str | None = None, create: bool = False) -> None:
        cond = {"IfMatch": if_match} if if_match else ({"IfNoneMatch": "*"} if create else {})
        try:
            self._call("put_object", Key=self._key(rel), Body=data, **cond)
        except Exception as exc:
            if cond and _error_code(exc) in _LOST_RACE:
                raise _LostRace(rel) from exc
            raise

    def _delete(self, rel: str, if_match: str | None = None) -> None:
        cond = {"IfMatch": if_match} if if_match else {}
        try:
            self._call("delete_object", Key=self._key(rel), **cond)
        except Exception as exc:
            if cond and _error_code(exc) in _LOST_RACE:
                raise _LostRace(rel) from exc
            if _error_code(exc) != "NoSuchKey":
                raise

    def _list(self, rel_prefix: str, delimiter: bool = False) -> list[dict]:
        """Objects under ``rel_prefix`` (``{"rel", "size", "etag", "mtime"}``), or with
        ``delimiter`` the immediate sub-folder names."""
        out, token = [], None
        while True:
            kwargs = {"Prefix": self._key(rel_prefix)}
            if delimiter:
                kwargs["Delimiter"] = "/"
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._call("list_objects_v2", **kwargs)
            if delimiter:
                out += [p["Prefix"][len(kwargs["Prefix"]):].rstrip("/") for p in resp.get("CommonPrefixes", [])]
            else:
                out += [{"rel": self._rel(o["Key"]), "size": o["Size"], "etag": o.get("ETag", ""),
                         "mtime": o["LastModified"].timestamp()} for o in resp.get("Contents", [])]
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return out

    def _remove(self, rels: list[str]) -> None:
        for i in range(0, len(rels), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = [{"Key": self._key(r)} for r in rels[i:i + 1000]]
            self._call("delete_objects", Delete={"Objects": chunk, "Quiet": True})

    # ---- compare-and-swap ----------------------------------------------------------------
    def _cas(self, rel: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read ``rel``, compute its new body with ``change`` (None deletes it) and write it
        only if nobody wrote in between; on a lost race re-read and retry (jittered backoff)."""
        for attempt in range(self.cas_attempts):
            got = self._get(rel)
            body, etag = got if got else (None, None)
            new = change(body)  # may raise NotFound / InvalidInput: nothing written then
            try:
                if new is None:
                    if body is not None:
                        self._delete(rel, if_match=etag)
                else:
                    self._put(rel, new, if_match=etag, create=etag is None)
                return new
            except _LostRace:
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
        raise Conflict(f"{rel} changed {self.cas_attempts} times while this update was retried; "
                       "too many concurrent writers, try again")

    def _cas_json(self, rel: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """:meth:`_cas` over a JSON document: ``change`` sees and returns dicts (None: absent)."""
        def on_bytes(body: bytes | None) -> bytes | None:
            new = change(json.loads(body) if body is not None else None)
            return json.dumps(new, indent=2).encode() if new is not None else None
        out = self._cas(rel, on_bytes)
        return json.loads(out) if out is not None else None

    # ---- versions --------------------------------------------------------------------
    def _version_rel(self, name: str, version: str) -> str:
        return f"{task_prefix(name)}/versions/{check_version(version)}"

    def put_version(self, name: str, folder: Path, replace: dict[str, bytes] | None = None) -> str:
        folder = Path(folder)
        replace = dict(replace or {})
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in replace)
        data = {p.name: p.read_bytes() for p in files}  # what content_hash covers
        data.update(replace)
        version = content_hash_of(data)
        rel = self._version_rel(name, version)
        marker = {"version": version, "created_at": _now(),
                  "files": {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                            for n, b in sorted(data.items())}}
        if self._get(f"{rel}/{MARKER}") is None:
            self.fs.put([str(p) for p in files], [f"{self.bucket}/{self._key(f'{rel}/{p.name}')}" for p in files])
            for n, b in replace.items():
                self._put(f"{rel}/{n}", b)
        # Written last (and rewritten when the version already exists, which refreshes its
        # age so gc never collects a version that a registration is about to publish).
        self._put(f"{rel}/{MARKER}", json.dumps(marker, indent=2).encode())
        return version

    def _marker(self, name: str, version: str) -> dict:
        got = self._get(f"{self._version_rel(name, version)}/{MARKER}")
        if got is None:
            raise NotFound(f"version {version[:12]} of task {name!r} is not in the store")
        return json.loads(got[0])

    def version_path(self, name: str, version: str) -> Path:
        cached = self.cache / task_prefix(name) / check_version(version)
        if cached.is_dir():
            return cached
        marker = self._marker(name, version)
        rel = self._version_rel(name, version)
        self._download(cached, {f"{rel}/{f}": f for f in marker["files"]}, expect=marker["version"])
        return cached

    def _download(self, dest: Path, keys: dict[str, str], expect: str | None = None) -> None:
        """Fetch ``{rel key: file name}`` into a temp sibling, check, rename to ``dest``."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex}")
        tmp.mkdir()
        try:
            rels = list(keys)
            for rel, body in zip(rels, self._get_many(rels)):
                if body is None:
                    raise InvalidAdapter(f"{dest.name[:12]}: {keys[rel]} is missing from the store")
                (tmp / keys[rel]).write_bytes(body)
            make_readable(tmp)  # the cache may be shared by workers running as other users
            if expect is not None and content_hash(tmp) != expect:
                raise InvalidAdapter(f"{dest.name[:12]}: the files in the store do not match their "
                                     "content hash; the stored version is corrupt")
            try:
                os.rename(tmp, dest)  # atomic: the cached folder appears whole or not at all
            except OSError:
                if not dest.is_dir():  # another worker renamed its identical copy first: keep it
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- aliases -----------------------------------------------------------------------
    def _alias_rel(self, name: str) -> str:
        return f"{task_prefix(name)}/alias.json"

    def get_alias(self, name: str) -> Alias | None:
        got = self._get(self._alias_rel(name))
        return Alias.model_validate_json(got[0]) if got else None

    def list_aliases(self) -> dict[str, Alias]:
        """Every task's alias. The generation is read first: writers bump it after their
        alias, so the aliases read next are at least that new. Incremental when the change
        log covers the gap since the last snapshot (see the module docstring)."""
        with self._snapshot_lock:
            gen, changes = self._read_generation()
            snap, now = self._snapshot, time.monotonic()
            changed = changed_since(snap[0], gen, changes) if snap and now - snap[2] < FULL_LIST_EVERY_S else None
            if changed is None:
                names, aliases, listed_at = self._task_names(), {}, now
            else:
                names, aliases, listed_at = sorted(changed), dict(snap[1]), snap[2]
            # Any read error but "no such key" is raised by _get_many: never mistake an
            # unreadable alias for a deleted task.
            for name, body in zip(names, self._get_many([self._alias_rel(n) for n in names])):
                if body is None:
                    aliases.pop(name, None)  # deleted (its version files wait for gc)
                else:
                    aliases[name] = Alias.model_validate_json(body)
            self._snapshot = (gen, aliases, listed_at)
            return dict(aliases)

    def _task_names(self) -> list[str]:
        """Every task folder's name: ``tasks/<name>/`` and ``ns/<namespace>/tasks/<task>/``."""
        names = list(self._list("tasks/", delimiter=True))
        for ns in self._list("ns/", delimiter=True):
            names += [name_of_prefix(["ns", ns, "tasks", t]) for t in self._list(f"ns/{ns}/tasks/", delimiter=True)]
        return sorted(n for n in names if n is not None)

    def changes_since(self, generation: int) -> tuple[int, dict[str, Alias | None]] | None:
        """One GET of the generation document, then one GET per changed task's alias."""
        gen, changes = self._read_generation()
        names = changed_since(generation, gen, changes)
        if names is None:
            return None
        names = sorted(names)
        bodies = self._get_many([self._alias_rel(n) for n in names])
        return gen, {n: Alias.model_validate_json(b) if b is not None else None for n, b in zip(names, bodies)}

    def _update_alias(self, name: str, change: Callable[[Alias | None], Alias | None]) -> Alias | None:
        def on_bytes(body: bytes | None) -> bytes | None:
            new = change(Alias.model_validate_json(body) if body is not None else None)
            return new.model_dump_json(indent=2).encode() if new is not None else None
        out = self._cas(self._alias_rel(name), on_bytes)
        self._bump(name)  # after the alias: a replica that sees the new number sees the new alias
        return Alias.model_validate_json(out) if out is not None else None

    def publish(self, name: str, version: str, info: VersionInfo, expected: str | None = None) -> Alias:
        self._marker(name, version)  # only complete versions can be published
        seen: list[Alias | None] = [None]  # the alias the winning compare-and-swap replaced

        def change(alias: Alias | None) -> Alias:
            seen[0] = alias
            check_expected(name, alias, expected)
            versions = [v for v in (alias.versions if alias else []) if v.version != version]
            return Alias(name=name, active=version, versions=[*versions, info], updated_at=_now())
        return self._update_alias(name, change).replacing(seen[0])

    def activate(self, name: str, version: str, expected: str | None = None) -> Alias:
        seen: list[Alias | None] = [None]

        def change(alias: Alias | None) -> Alias:
            seen[0] = alias
            if alias is None:
                raise NotFound(f"task {name!r} is not registered")
            check_expected(name, alias, expected)
            found = alias.find(version)
            return alias.model_copy(update={"active": found.version, "updated_at": _now()})
        return self._update_alias(name, change).replacing(seen[0])

    def delete(self, name: str, expected: str | None = None) -> None:
        def change(alias: Alias | None) -> None:
            if alias is None:
                raise NotFound(f"task {name!r} is not registered")
            check_expected(name, alias, expected)
            return None
        self._update_alias(name, change)  # version files stay unreachable until gc

    # ---- candidates, rollout policies, jobs ----------------------------------------------
    def add_version(self, name: str, version: str, info: VersionInfo) -> Alias:
        self._marker(name, version)

        def change(alias: Alias | None) -> Alias:
            if alias is None:
                raise NotFound(f"task {name!r} is not registered: a candidate needs an active "
                               "version to compare with; register it as active first")
            versions = [v for v in alias.versions if v.version != version]
            return alias.model_copy(update={"versions": [*versions, info], "updated_at": _now()})
        return self._update_alias(name, change)

    def _rollout_rel(self, name: str) -> str:
        return f"{task_prefix(name)}/rollout.json"

    def get_rollout(self, name: str) -> dict | None:
        got = self._get(self._rollout_rel(name))
        return json.loads(got[0]) if got else None

    def update_rollout(self, name: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Conditional put (If-Match) like an alias, then a named bump: replicas re-read it."""
        def checked(current: dict | None) -> dict | None:
            new = change(current)
            if new is not None and self.get_alias(name) is None:
                raise NotFound(f"task {name!r} is not registered")
            return new
        out = self._cas_json(self._rollout_rel(name), checked)
        self._bump(name)
        return out

    def list_rollouts(self, names: list[str]) -> dict[str, dict]:
        bodies = self._get_many([self._rollout_rel(n) for n in names])
        return {n: json.loads(b) for n, b in zip(names, bodies) if b is not None}

    def put_job(self, job_id: str, record: dict) -> None:
        self._put(f"jobs/{check_job_id(job_id)}.json", json.dumps(record).encode())

    def get_job(self, job_id: str) -> dict | None:
        got = self._get(f"jobs/{check_job_id(job_id)}.json")
        return json.loads(got[0]) if got else None

    # ---- documents --------------------------------------------------------------------
    def _document_rel(self, key: str) -> str:
        return f"meta/{check_document_key(key)}.json"

    def get_document(self, key: str) -> dict | None:
        got = self._get(self._document_rel(key))
        return json.loads(got[0]) if got else None

    def update_document(self, key: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Conditional put (If-Match / If-None-Match), retried on a lost race like an alias."""
        return self._cas_json(self._document_rel(key), change)

    def create_document(self, key: str, doc: dict) -> bool:
        try:
            self._put(self._document_rel(key), json.dumps(doc, indent=2).encode(), create=True)
        except _LostRace:
            return False
        return True

    def list_documents(self, prefix: str) -> list[str]:
        rel = f"meta/{check_document_key(prefix)}/"
        return sorted(o["rel"][len("meta/"):-len(".json")] for o in self._list(rel)
                      if o["rel"].endswith(".json") and "/" not in o["rel"][len(rel):])

    # ---- generation --------------------------------------------------------------------
    def generation(self) -> int:
        return self._read_generation()[0]

    def _read_generation(self) -> tuple[int, list]:
        got = self._get("generation")
        return parse_generation(got[0] if got else None)

    # ---- the index (derived: any follower that listed everything writes it) -----------
    def read_index(self) -> StoreIndex | None:
        got = self._get("index.json")
        return parse_index(got[0]) if got else None

    def write_index(self, index: StoreIndex) -> None:
        """One plain put (atomic on S3): readers see the old or the new index whole."""
        self._put("index.json", index.model_dump_json().encode())

    def _bump(self, name: str | None = None) -> None:
        """Count one change (of task ``name``; None = unknown, readers list everything)."""
        self._cas("generation", lambda body: generation_bumped(body, name))

    # ---- maintenance -------------------------------------------------------------------
    def gc(self, grace_s: float = 3600.0) -> list[str]:
        """Remove unreferenced versions (and half uploads) older than ``grace_s``, from the
        bucket and from this host's cache. Age = the marker's last write (see put_version)."""
        removed, cutoff = [], time.time() - grace_s
        for name in self._task_names():
            groups: dict[str, list[dict]] = {}
            versions_rel = f"{task_prefix(name)}/versions/"
            for obj in self._list(versions_rel):
                version = obj["rel"][len(versions_rel):].split("/")[0]
                groups.setdefault(version, []).append(obj)
            alias = self.get_alias(name)  # read after listing: a version published meanwhile is kept
            keep = {v.version for v in alias.versions} if alias else set()
            for version, objs in sorted(groups.items()):
                markers = [o for o in objs if o["rel"].endswith("/" + MARKER)]
                age_ref = markers[0]["mtime"] if markers else max(o["mtime"] for o in objs)
                if version not in keep and age_ref < cutoff:
                    self._remove([o["rel"] for o in objs])
                    removed.append(f"{task_prefix(name)}/versions/{version}")
        removed += self._gc_cache(cutoff)
        return removed

    def _gc_cache(self, cutoff: float) -> list[str]:
        removed = []
        referenced = {(task_prefix(n), v.version) for n, a in self.list_aliases().items() for v in a.versions}
        for task in [*(self.cache / "tasks").glob("*"), *(self.cache / "ns").glob("*/tasks/*")]:
            rel = task.relative_to(self.cache).as_posix()
            for entry in task.iterdir():
                stale = entry.name.startswith(".") or (rel, entry.name) not in referenced
                if stale and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(f"cache:{rel}/{entry.name}")
        for entry in (self.cache / "imports").glob("*"):
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(f"cache:imports/{entry.name}")
        return removed

    # ---- registration by store path ----------------------------------------------------
    def resolve_store_path(self, ref: str) -> Path:
        """``imports/<folder>`` (downloaded to a local cache folder) or
        ``tasks/<name>/versions/<sha>`` (``ns/<namespace>/tasks/<task>/versions/<sha>``);
        anything else is refused."""
        if (not isinstance(ref, str) or not ref.strip("/") or ref.startswith("/") or "\\" in ref
                or "\0" in ref or len(ref) > 1024
                or any(part in ("", ".", "..") for part in ref.strip("/").split("/"))):
            raise InvalidInput(f"store path {ref!r} must be a relative key prefix like 'imports/my-adapter', "
                               "without '.', '..' or empty parts")
        parts = ref.strip("/").split("/")
        task = name_of_prefix(parts[:-2]) if len(parts) >= 4 and parts[-2] == "versions" else None
        if task is not None:
            return self.version_path(task, parts[-1])
        if parts[0] != "imports" or len(parts) < 2:
            raise InvalidInput(f"store path {ref!r} is outside the import area; upload the adapter under "
                               f"{self.url}/imports/ and name it as 'imports/<folder>'")
        prefix = "/".join(parts) + "/"
        objs = self._list(prefix)
        if not objs:
            raise NotFound(f"store path {ref!r} does not exist in the store ({self.url}/{prefix})")
        problems = [f"{o['rel'][len(prefix):]} is inside a sub-folder; an adapter is one flat folder"
                    for o in objs if "/" in o["rel"][len(prefix):]]
        if len(objs) > MAX_FILES:
            problems.append(f"{len(objs)} files; an adapter has at most {MAX_FILES}")
        total = sum(o["size"] for o in objs)
        if total > self.max_import_bytes:
            problems.append(f"{total} bytes; imports are capped at {self.max_import_bytes}")
        InvalidAdapter.collect(problems[:5], f"store path {ref!r}")
        # Keyed by the listing (keys + etags): an unchanged import is fetched once.
        digest = hashlib.sha256(json.dumps(sorted((o["rel"], o["etag"], o["size"]) for o in objs)).encode())
        dest = self.cache / "imports" / digest.hexdigest()[:32]
        if not dest.is_dir():
            self._download(dest, {o["rel"]: o["rel"][len(prefix):] for o in objs})
        return dest
