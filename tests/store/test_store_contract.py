"""One contract, two stores: every test here runs on the local folder store AND on the
S3 store (a real moto server on loopback), so their semantics cannot drift apart."""

from __future__ import annotations

import threading

import pytest

from adapters.errors import InvalidInput, NotFound
from adapters.format.adapter_dir import content_hash
from adapters.registry import Registry
from adapters.store import LocalStore, open_store
from adapters.store.base import StoreIndex
from support.s3 import moto_s3  # noqa: F401  (session fixture)
from support.store_fixtures import adapter, info, kind, make_store, put_import, register, store  # noqa: F401 (fixtures)


# ---- the contract -------------------------------------------------------------------

def test_empty_store(store):
    assert store.generation() == 0
    assert store.list_aliases() == {}
    assert store.get_alias("sentiment") is None


def test_put_version_is_content_addressed_and_idempotent(store, adapter):
    v1 = store.put_version("sentiment", adapter(0))
    assert v1 == content_hash(adapter(0)) and len(v1) == 64
    assert store.put_version("sentiment", adapter(0)) == v1  # same bytes, same version
    v2 = store.put_version("sentiment", adapter(1))
    assert v2 != v1
    path = store.version_path("sentiment", v1)
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in adapter(0).iterdir())
    assert content_hash(path) == v1
    assert store.generation() == 0  # storing a version changes no alias
    assert store.get_alias("sentiment") is None  # and makes nothing visible


def test_bad_names_and_versions_are_refused(store, adapter):
    with pytest.raises(InvalidInput, match="task name"):
        store.put_version("../etc", adapter(0))
    with pytest.raises(InvalidInput, match="version"):
        store.version_path("sentiment", "not-hex")
    with pytest.raises(NotFound, match="not in the store"):
        store.version_path("sentiment", "ab" * 32)


def test_publish_activate_history(store, adapter):
    v1 = register(store, adapter(0))
    alias = store.get_alias("sentiment")
    assert (alias.active, [v.version for v in alias.versions], store.generation()) == (v1, [v1], 1)

    v2 = register(store, adapter(1))
    alias = store.get_alias("sentiment")
    assert (alias.active, [v.version for v in alias.versions], store.generation()) == (v2, [v1, v2], 2)

    assert store.activate("sentiment", v1[:10]).active == v1  # rollback by unique prefix
    assert store.get_alias("sentiment").active == v1 and store.generation() == 3

    with pytest.raises(NotFound, match="does not exist"):
        store.activate("sentiment", "0" * 64)
    with pytest.raises(NotFound, match="not registered"):
        store.activate("other", v1)
    assert store.generation() == 3  # a refused change bumps nothing

    register(store, adapter(0))  # re-publishing an old version moves it to the end, active
    alias = store.get_alias("sentiment")
    assert (alias.active, [v.version for v in alias.versions]) == (v1, [v2, v1])
    assert set(store.list_aliases()) == {"sentiment"}


def test_publish_requires_a_stored_version(store):
    with pytest.raises(NotFound):
        store.publish("sentiment", "cd" * 32, info("cd" * 32))
    assert store.get_alias("sentiment") is None and store.generation() == 0


def test_delete(store, adapter):
    v1 = register(store, adapter(0))
    register(store, adapter(0, name="topic"), name="topic")
    store.delete("sentiment")
    assert store.get_alias("sentiment") is None
    assert set(store.list_aliases()) == {"topic"}
    assert store.generation() == 3
    with pytest.raises(NotFound):
        store.delete("sentiment")
    with pytest.raises(NotFound):
        store.activate("sentiment", v1)
    assert store.generation() == 3
    assert register(store, adapter(0)) == v1  # the same bytes can come back under the name
    assert content_hash(store.version_path("sentiment", v1)) == v1
    assert store.get_alias("sentiment").versions[0].version == v1


def test_gc_keeps_referenced_and_recent_versions(store, adapter):
    live = register(store, adapter(0))
    orphan = store.put_version("sentiment", adapter(1))  # stored, never published
    register(store, adapter(2, name="gone"), name="gone")
    gone = store.get_alias("gone").active
    store.delete("gone")

    store.gc(grace_s=3600)
    assert content_hash(store.version_path("sentiment", orphan)) == orphan  # recent: kept

    store.gc(grace_s=0)
    assert content_hash(store.version_path("sentiment", live)) == live  # referenced: kept
    with pytest.raises(NotFound):
        store.version_path("sentiment", orphan)
    with pytest.raises(NotFound):
        store.version_path("gone", gone)
    assert store.get_alias("sentiment").active == live


def test_a_second_handle_sees_every_change(make_store, adapter):
    """Two replicas = two store objects on one root; the generation tells them to look."""
    a, b = make_store(), make_store()
    v1 = register(a, adapter(0))
    assert b.generation() == 1 and b.get_alias("sentiment").active == v1
    assert content_hash(b.version_path("sentiment", v1)) == v1
    v2 = register(b, adapter(1))
    a.activate("sentiment", v1)
    assert b.get_alias("sentiment").active == v1 and b.generation() == 3
    assert [v.version for v in a.get_alias("sentiment").versions] == [v1, v2]
    b.delete("sentiment")
    assert a.get_alias("sentiment") is None and a.generation() == 4


def test_change_log_names_only_what_changed(make_store, adapter):
    """A follower at generation g learns which tasks changed since g, with their aliases
    as they are now (None: deleted), without reading any other task's alias."""
    a, follower = make_store(), make_store()
    versions = {n: register(a, adapter(0, n), n) for n in ("keep", "moved", "gone")}
    seen = follower.generation()
    assert follower.changes_since(seen) == (seen, {})  # up to date: nothing to read
    v2 = register(a, adapter(1, "moved"), "moved")
    a.activate("moved", versions["moved"])  # two changes of one task: named once
    a.delete("gone")
    register(a, adapter(0, "new"), "new")
    gen, changed = follower.changes_since(seen)
    assert gen == a.generation() == seen + 4
    assert sorted(changed) == ["gone", "moved", "new"] and changed["gone"] is None
    assert changed["moved"].active == versions["moved"] and [v.version for v in changed["moved"].versions] == [
        versions["moved"], v2]
    assert changed["new"] == a.get_alias("new")
    partial = follower.changes_since(seen + 3)  # only the last change
    assert partial[0] == gen and sorted(partial[1]) == ["new"]


def test_index_round_trip_and_a_follower_starting_from_it(make_store, adapter, text_backbone):
    """The index holds every alias and policy at a generation; a second handle reads it
    whole; a registry started on the store reads it and replays only the changes logged
    since, and lists exactly what the store holds, loading nothing."""
    a, other = make_store(), make_store()
    assert a.read_index() is None
    for n in ("x", "y", "z"):
        register(a, adapter(0, n), n)
    a.update_rollout("y", lambda _old: {"task": "y", "candidate": a.get_alias("y").active, "mode": "shadow",
                                        "fraction": 0.0, "updated_at": "2026-01-01T00:00:00+00:00"})
    index = StoreIndex(generation=a.generation(), tasks=a.list_aliases(), rollouts=a.list_rollouts(["x", "y", "z"]))
    a.write_index(index)
    assert other.read_index() == index and set(index.rollouts) == {"y"}
    register(a, adapter(1, "x"), "x")
    a.delete("z")
    reg = Registry(other, {"text": text_backbone})
    got = reg.start()
    assert (got["source"], got["replayed"], got["tasks"]) == ("index", 2, 2)
    listed = {t["name"]: t["active_version"] for t in reg.page(None, 0, None)[0]}
    assert listed == {n: al.active for n, al in a.list_aliases().items()} and reg.loaded_count() == 0
    assert reg.table.get("y").policy is not None  # the policy came with the index


def _write_generation(store, kind: str, body: bytes, request) -> None:
    """Overwrite the generation document as an older or foreign writer would."""
    if kind == "local":
        (store.root / "generation").write_bytes(body)
    else:
        client = request.getfixturevalue("moto_s3").client()
        client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/generation", Body=body)


def test_change_log_cannot_tell_so_the_follower_lists_everything(make_store, adapter, kind, request,
                                                                monkeypatch):
    """Too far behind (the log was compacted past the follower's generation), an unnamed
    change, a counter that went back, a log of the first format (a bare integer): None,
    and the full listing still gives the truth."""
    monkeypatch.setattr("adapters.store.base.CHANGE_LOG", 3)
    a, follower = make_store(), make_store()
    register(a, adapter(0, "t0"), "t0")
    seen = follower.generation()
    for i in range(1, 5):  # 4 changes, 3 remembered
        register(a, adapter(0, f"t{i}"), f"t{i}")
    assert follower.changes_since(seen) is None
    assert sorted(follower.list_aliases()) == [f"t{i}" for i in range(5)]
    assert sorted(follower.changes_since(seen + 1)[1]) == ["t2", "t3", "t4"]  # within the log
    assert follower.changes_since(a.generation() + 1) is None  # the counter went back
    assert follower.changes_since(-1) is None  # never synced
    a._bump()  # a change nobody named
    assert follower.changes_since(a.generation() - 1) is None
    _write_generation(a, kind, b"7", request)  # the first format: a number, no log
    assert follower.generation() == 7 and follower.changes_since(6) is None
    register(a, adapter(0, "t5"), "t5")  # the next change starts a log again
    assert follower.generation() == 8 and follower.changes_since(7) == (8, {"t5": a.get_alias("t5")})


def test_concurrent_writers_lose_no_update(make_store, adapter):
    """Four writers (separate handles, as separate replicas would be) publish different
    versions of one task at once: every version lands in the history, and the generation
    counts every change exactly once."""
    folders = [adapter(seed) for seed in range(8)]
    stores = [make_store() for _ in range(4)]
    versions = [stores[0].put_version("sentiment", f) for f in folders]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def writer(i: int) -> None:
        try:
            start.wait()
            for v in versions[i::len(stores)]:
                stores[i].publish("sentiment", v, info(v))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    alias = stores[0].get_alias("sentiment")
    assert sorted(v.version for v in alias.versions) == sorted(versions)
    assert alias.active in versions
    assert stores[0].generation() == len(versions)


def test_resolve_store_path(store, kind, adapter, request):
    moto = request.getfixturevalue("moto_s3") if kind == "s3" else None
    put_import(store, kind, adapter(0), "imports/team-a/sentiment", moto)
    path = store.resolve_store_path("imports/team-a/sentiment")
    assert content_hash(path) == content_hash(adapter(0))

    v = register(store, adapter(1))
    assert content_hash(store.resolve_store_path(f"tasks/sentiment/versions/{v}")) == v

    for bad in ("../outside", "/etc", "imports/../../x"):
        with pytest.raises(InvalidInput):
            store.resolve_store_path(bad)
    with pytest.raises(NotFound):
        store.resolve_store_path("imports/nothing-here")


def test_open_store_picks_the_backend(tmp_path, moto_s3):
    assert isinstance(open_store(str(tmp_path / "s")), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path / 's2'}"), LocalStore)
    from adapters.store.remote import FsspecStore
    assert isinstance(open_store(moto_s3.new_store_url()), FsspecStore)


# ---- registering with an expectation, through the registry ----------------------------------
def _versions_in_store(store) -> list[str]:
    """Unreferenced version folders/objects: what ``gc(0)`` would remove under tasks/."""
    return [p for p in store.gc(grace_s=0) if "/versions/" in p and not p.startswith("cache:")]


def test_a_stale_expected_version_is_refused_before_anything_is_written(store, adapter, text_backbone):
    from adapters.errors import Conflict
    from adapters.registry import Registry
    reg = Registry(store, {"text": text_backbone})
    v1 = reg.register(adapter(0)).version
    v2 = reg.register(adapter(1), expected=v1[:12]).version  # the right expectation: it lands
    gen = store.generation()
    with pytest.raises(Conflict, match="not the expected"):
        reg.register(adapter(2), expected=v1[:12])  # stale: v2 is active now
    assert store.generation() == gen and store.get_alias("sentiment").active == v2
    assert _versions_in_store(store) == []  # the refused version was never stored


def test_a_race_past_the_check_leaves_an_orphan_that_gc_collects(make_store, adapter, text_backbone):
    """The compare-and-swap stays the arbiter: another replica publishing between the early
    check and the swap makes this one a 409, and its already stored version an orphan for gc."""
    from adapters.errors import Conflict
    from adapters.registry import Registry
    store, other = make_store(), make_store()
    reg = Registry(store, {"text": text_backbone})
    v1 = reg.register(adapter(0)).version
    put = store.put_version

    def put_then_lose_the_race(name, folder, replace=None):
        version = put(name, folder, replace)
        register(other, adapter(1))  # lands after the early check, before the swap
        return version
    store.put_version = put_then_lose_the_race
    with pytest.raises(Conflict):
        reg.register(adapter(2), expected=v1)
    del store.put_version
    assert store.get_alias("sentiment").active != v1
    orphans = _versions_in_store(store)
    assert len(orphans) == 1 and orphans[0].startswith("tasks/sentiment/versions/")
    assert _versions_in_store(store) == []


def test_documents_round_trip_and_concurrent_updates_lose_nothing(make_store):
    a, b = make_store(), make_store()  # two handles: two replicas on one store
    assert a.get_document("quotas/team") is None and a.list_documents("quotas") == []
    assert a.update_document("quotas/team", lambda d: {"tasks": 3}) == {"tasks": 3}
    assert b.get_document("quotas/team") == {"tasks": 3}

    def bump(store):
        for _ in range(10):
            store.update_document("counters/n", lambda d: {"n": (d or {"n": 0})["n"] + 1})
    threads = [threading.Thread(target=bump, args=(s,)) for s in (a, b)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert a.get_document("counters/n") == {"n": 20}

    with pytest.raises(ValueError):  # an exception in change writes nothing
        a.update_document("quotas/team", lambda d: (_ for _ in ()).throw(ValueError("no")))
    assert b.get_document("quotas/team") == {"tasks": 3}
    assert a.update_document("quotas/team", lambda d: None) is None
    assert b.get_document("quotas/team") is None


def test_documents_created_once_and_listed(make_store):
    a, b = make_store(), make_store()
    assert a.create_document("audit/0001", {"who": "x"}) is True
    assert b.create_document("audit/0001", {"who": "y"}) is False  # append-only: never overwritten
    assert b.create_document("audit/0002", {"who": "y"}) is True
    a.create_document("audit/deeper/0003", {"who": "z"})
    assert a.list_documents("audit") == b.list_documents("audit") == ["audit/0001", "audit/0002"]
    assert a.get_document("audit/0001") == {"who": "x"}
    for bad in ("../x", "Audit/1", "a/../b", ".hidden", "a//b", ""):
        with pytest.raises(InvalidInput, match="document key"):
            a.get_document(bad)
