"""What only the S3 store has: conditional-write races forced step by step, half uploads,
a corrupt object, the local cache, and clear errors for bad URLs. Real moto server."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from adapters.errors import Conflict, InvalidAdapter, InvalidInput, NotFound
from adapters.format.adapter_dir import content_hash
from adapters.store import VersionInfo, open_store
from adapters.store.remote import MARKER, FsspecStore
from support.factories import head_adapter
from support.s3 import moto_s3  # noqa: F401  (session fixture)


@pytest.fixture
def url(moto_s3, tmp_path, monkeypatch):
    monkeypatch.setenv("TASKSWAP_STORE_CACHE", str(tmp_path / "cache"))
    return moto_s3.new_store_url()


@pytest.fixture
def folders(tmp_path, text_backbone):
    return [head_adapter(tmp_path / f"a{i}", text_backbone, "sentiment", seed=i) for i in range(3)]


def info(v: str) -> VersionInfo:
    return VersionInfo(version=v, kind="head", created_at=datetime.now(timezone.utc).isoformat())


class Interleaving(FsspecStore):
    """A store whose first read of ``target`` runs ``meanwhile()`` before returning: the
    read-modify-write of this writer straddles another writer's whole update."""

    def __init__(self, url, target, meanwhile):
        super().__init__(url)
        self.target, self.meanwhile, self.reads = target, meanwhile, 0

    def _get(self, rel):
        got = super()._get(rel)
        if rel.endswith(self.target):
            self.reads += 1
            if self.reads == 1:
                self.meanwhile()
        return got


def test_alias_race_loser_retries_and_no_update_is_lost(url, folders):
    other = open_store(url)
    v0, v1, v2 = (other.put_version("sentiment", f) for f in folders)
    other.publish("sentiment", v0, info(v0))

    slow = Interleaving(url, "alias.json", lambda: other.publish("sentiment", v1, info(v1)))
    slow.publish("sentiment", v2, info(v2))

    alias = other.get_alias("sentiment")
    assert slow.reads == 2  # lost once (412 on If-Match), re-read, then won
    assert [v.version for v in alias.versions] == [v0, v1, v2] and alias.active == v2
    assert other.generation() == 3


def test_generation_race_counts_both_bumps(url, folders):
    other = open_store(url)
    v0 = other.put_version("sentiment", folders[0])
    slow = Interleaving(url, "generation", other._bump)  # another writer's change lands in between
    slow.publish("sentiment", v0, info(v0))
    assert slow.reads == 2 and other.generation() == 2


def test_first_create_race_uses_if_none_match(url, folders):
    """Both writers see no alias; the second create must fail (If-None-Match) and merge."""
    other = open_store(url)
    v0, v1 = (other.put_version("sentiment", f) for f in folders[:2])
    slow = Interleaving(url, "alias.json", lambda: other.publish("sentiment", v0, info(v0)))
    slow.publish("sentiment", v1, info(v1))
    assert [v.version for v in other.get_alias("sentiment").versions] == [v0, v1]


def test_endless_contention_gives_up_with_conflict(url, folders):
    other = open_store(url)
    v0, v1 = (other.put_version("sentiment", f) for f in folders[:2])
    other.publish("sentiment", v0, info(v0))

    class AlwaysBeaten(FsspecStore):
        def _get(self, rel):
            got = super()._get(rel)
            if rel.endswith("alias.json"):
                other.activate("sentiment", v0)  # someone else writes after every read
            return got

    with pytest.raises(Conflict, match="changed 3 times"):
        AlwaysBeaten(url, cas_attempts=3).publish("sentiment", v1, info(v1))
    assert other.get_alias("sentiment").active == v0  # nothing half-applied


def test_half_upload_is_invisible_then_completed_and_collected(url, folders, moto_s3):
    store = open_store(url)
    v = content_hash(folders[0])
    client = moto_s3.client()
    key = f"{store.prefix}/tasks/sentiment/versions/{v}/head.safetensors"
    client.put_object(Bucket=moto_s3.bucket, Key=key, Body=b"crashed mid-upload")  # no marker

    with pytest.raises(NotFound):
        store.version_path("sentiment", v)
    with pytest.raises(NotFound):
        store.publish("sentiment", v, info(v))
    assert store.put_version("sentiment", folders[0]) == v  # a retry completes it
    assert content_hash(store.version_path("sentiment", v)) == v

    orphan = f"{store.prefix}/tasks/sentiment/versions/{'ef' * 32}/adapter.json"
    client.put_object(Bucket=moto_s3.bucket, Key=orphan, Body=b"{}")
    assert store.gc(grace_s=3600) == []
    removed = store.gc(grace_s=0)
    assert f"tasks/sentiment/versions/{'ef' * 32}" in removed
    assert f"tasks/sentiment/versions/{v}" in removed  # complete but never published


def test_corrupt_object_is_refused_not_cached(url, folders, moto_s3):
    store = open_store(url)
    v = store.put_version("sentiment", folders[0])
    key = f"{store.prefix}/tasks/sentiment/versions/{v}/README.md"
    moto_s3.client().put_object(Bucket=moto_s3.bucket, Key=key, Body=b"tampered")
    with pytest.raises(InvalidAdapter, match="do not match their content hash"):
        store.version_path("sentiment", v)
    assert not (store.cache / "tasks" / "sentiment" / v).exists()
    assert not list((store.cache / "tasks" / "sentiment").iterdir())  # temp folder cleaned


def test_missing_object_is_refused_not_cached(url, folders, moto_s3):
    """A file the marker lists but the bucket lost: a clear error, nothing cached."""
    store = open_store(url)
    v = store.put_version("sentiment", folders[0])
    key = f"{store.prefix}/tasks/sentiment/versions/{v}/head.safetensors"
    moto_s3.client().delete_object(Bucket=moto_s3.bucket, Key=key)
    with pytest.raises(InvalidAdapter, match="head.safetensors is missing from the store"):
        store.version_path("sentiment", v)
    assert not list((store.cache / "tasks" / "sentiment").iterdir())


def _recording(store, monkeypatch, deny: str | None = None) -> list[tuple[str, str]]:
    """Record every S3 call ``store`` makes as (method, key or prefix); with ``deny``, a
    get_object of a key ending so fails with AccessDenied (s3fs: PermissionError)."""
    calls, real = [], store.fs._call_s3

    async def call(method, *args, **kw):
        key = kw.get("Key", kw.get("Prefix", ""))
        calls.append((method, key))
        if deny and method == "get_object" and key.endswith(deny):
            raise PermissionError(f"Access Denied: {key}")
        return await real(method, *args, **kw)
    monkeypatch.setattr(store.fs, "_call_s3", call)
    return calls


def test_list_aliases_is_one_listing_and_one_get_per_task(url, folders, monkeypatch):
    """A first listing (no snapshot yet): the generation, one listing of tasks/ and one of
    ns/ (the namespaces' folders; one more per namespace), one GET per task folder; no
    per-key probes (fs.cat's were 4x slower)."""
    store = open_store(url)
    for name in ("a", "b", "c"):
        v = store.put_version(name, folders[0])
        store.publish(name, v, info(v))
    store.delete("c")  # its folder stays until gc: one GET that finds nothing
    calls = _recording(store, monkeypatch)
    assert sorted(store.list_aliases()) == ["a", "b"]
    p = store.prefix
    assert sorted(calls) == [("get_object", f"{p}/generation")] + \
        [("get_object", f"{p}/tasks/{n}/alias.json") for n in "abc"] + \
        [("list_objects_v2", f"{p}/ns/"), ("list_objects_v2", f"{p}/tasks/")]


def test_list_aliases_follows_the_change_log(url, folders, monkeypatch):
    """Another replica's changes: only the changed aliases are read again, and the answer
    equals a fresh full listing; an unnamed change or a gap past the log lists everything."""
    reader, writer = open_store(url), FsspecStore(url)
    versions = {}
    for name in ("a", "b", "c", "d"):
        versions[name] = writer.put_version(name, folders[0])
        writer.publish(name, versions[name], info(versions[name]))
    reader.list_aliases()  # the snapshot
    v2 = writer.put_version("a", folders[1])
    writer.publish("a", v2, info(v2))
    writer.delete("b")
    calls = _recording(reader, monkeypatch)
    got = reader.list_aliases()
    assert sorted(calls) == [("get_object", f"{reader.prefix}/{rel}")
                             for rel in ("generation", "tasks/a/alias.json", "tasks/b/alias.json")]
    assert got == FsspecStore(url).list_aliases() and sorted(got) == ["a", "c", "d"]
    assert got["a"].active == v2

    writer._bump()  # a change the log cannot name: everything is read again
    calls.clear()
    assert reader.list_aliases() == got
    assert ("list_objects_v2", f"{reader.prefix}/tasks/") in calls

    monkeypatch.setattr("adapters.store.base.CHANGE_LOG", 2)
    for _ in range(2):  # 4 bumps, 2 remembered: a gap the log does not cover
        writer.activate("c", versions["c"])
        writer.activate("d", versions["d"])
    calls.clear()
    assert reader.list_aliases() == FsspecStore(url).list_aliases()
    assert ("list_objects_v2", f"{reader.prefix}/tasks/") in calls

    monkeypatch.setattr("adapters.store.remote.FULL_LIST_EVERY_S", 0.0)
    calls.clear()  # no change at all, but the snapshot is too old to trust: list again
    reader.list_aliases()
    assert ("list_objects_v2", f"{reader.prefix}/tasks/") in calls


def test_generation_object_of_the_first_format_is_read(url, moto_s3, folders):
    """A bucket written before the change log (a bare integer) keeps working."""
    store = open_store(url)
    moto_s3.client().put_object(Bucket=moto_s3.bucket, Key=f"{store.prefix}/generation", Body=b"7")
    assert store.generation() == 7
    v = store.put_version("a", folders[0])
    store.publish("a", v, info(v))
    assert store.generation() == 8 and sorted(store.list_aliases()) == ["a"]


def test_unreadable_alias_is_an_error_not_a_deleted_task(url, folders, monkeypatch):
    store = open_store(url)
    for name in ("a", "b"):
        v = store.put_version(name, folders[0])
        store.publish(name, v, info(v))
    _recording(store, monkeypatch, deny="tasks/b/alias.json")
    with pytest.raises(PermissionError, match="tasks/b/alias.json"):
        store.list_aliases()


def test_version_path_is_cached_by_sha(url, folders, moto_s3):
    store = open_store(url)
    v = store.put_version("sentiment", folders[0])
    first = store.version_path("sentiment", v)
    marker = json.loads((moto_s3.client().get_object(
        Bucket=moto_s3.bucket, Key=f"{store.prefix}/tasks/sentiment/versions/{v}/{MARKER}")["Body"].read()))
    assert set(marker["files"]) == {p.name for p in folders[0].iterdir()}
    calls = []
    store._get = lambda rel: calls.append(rel)  # any S3 read now would be recorded
    assert store.version_path("sentiment", v) == first and calls == []


def test_import_limits(url, folders, moto_s3):
    store = open_store(url)
    client = moto_s3.client()
    client.put_object(Bucket=moto_s3.bucket, Key=f"{store.prefix}/imports/nested/sub/x.json", Body=b"{}")
    with pytest.raises(InvalidAdapter, match="sub-folder"):
        store.resolve_store_path("imports/nested")
    with pytest.raises(InvalidInput, match="outside the import area"):
        store.resolve_store_path("generation")
    small = FsspecStore(url, max_import_bytes=10)
    for p in folders[0].iterdir():
        client.put_object(Bucket=moto_s3.bucket, Key=f"{store.prefix}/imports/big/{p.name}", Body=p.read_bytes())
    with pytest.raises(InvalidAdapter, match="capped at 10"):
        small.resolve_store_path("imports/big")


@pytest.mark.parametrize("bad, match", [
    ("s3://", "names no bucket"),
    ("gs://bucket/x", "only s3://"),
    ("s3://no-such-bucket-here/x", "not reachable"),
])
def test_bad_urls_get_clear_errors(bad, match, moto_s3):
    with pytest.raises(InvalidInput, match=match):
        open_store(bad)
