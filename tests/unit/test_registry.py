"""Registry lifecycle over a real local store: register, replace, roll back, delete, restart."""

import json
import os

import pytest

from adapters.errors import IncompatibleAdapter, InvalidInput, NotFound
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.factories import head_adapter, peft_lora_dir

TEXTS = ["good movie", "awful plot"]


def predict(reg, task, texts=TEXTS):
    rt = Runtime(reg)
    return rt.run([rt.prepare([task], texts, "text")])[0][0]


def test_lifecycle_table(tmp_path, registry, text_backbone):
    """Each step: (action, expected active version key, expected versions count)."""
    v = {}
    steps = [
        ("register v1", "v1", 1),
        ("register v2", "v2", 2),
        ("activate v1", "v1", 2),
        ("register v1 again", "v1", 2),  # same bytes: same version, idempotent
        ("activate v2", "v2", 2),
    ]
    folders = {"v1": head_adapter(tmp_path / "v1", text_backbone, "sent", seed=1),
               "v2": head_adapter(tmp_path / "v2", text_backbone, "sent", seed=2)}
    for action, active, n in steps:
        verb, key = action.split()[0], action.split()[1]
        if verb == "register":
            v[key] = registry.register(folders[key]).version
        else:
            registry.activate("sent", v[key][:10])  # a prefix works
        shown = registry.show("sent")
        assert shown["active_version"] == v[active], action
        assert len(shown["versions"]) == n, action
        assert predict(registry, "sent").version == v[active], action
    assert v["v1"] != v["v2"]
    registry.delete("sent")
    with pytest.raises(NotFound, match="not registered"):
        registry.resolve("sent")
    with pytest.raises(NotFound):
        registry.delete("sent")


def test_restart_keeps_adapters_and_active_versions(tmp_path, backbones, text_backbone):
    store = str(tmp_path / "store")
    reg = Registry(open_store(store), backbones)
    v1 = reg.register(head_adapter(tmp_path / "a", text_backbone, "a", seed=1)).version
    reg.register(head_adapter(tmp_path / "a2", text_backbone, "a", seed=2))
    reg.activate("a", v1)
    lora = reg.register(peft_lora_dir(tmp_path / "l", str(text_backbone.source_path)), name="l")
    before = {t: predict(reg, t) for t in ("a", "l")}
    again = Registry(open_store(store), backbones)
    again.sync()
    assert {x["name"]: x["active_version"] for x in again.list()} == {"a": v1, "l": lora.version}
    for t, res in before.items():
        after = predict(again, t)
        assert after.version == res.version
        assert [r.scores for r in after.rows] == [r.scores for r in res.rows]


def test_second_registry_converges_through_the_store(tmp_path, backbones, text_backbone):
    store = str(tmp_path / "store")
    a, b = Registry(open_store(store), backbones), Registry(open_store(store), backbones)
    a.sync(); b.sync()
    v = a.register(head_adapter(tmp_path / "x", text_backbone, "x")).version
    assert predict(b, "x").version == v  # lazy sync on a miss
    v2 = a.register(head_adapter(tmp_path / "x2", text_backbone, "x", seed=5)).version
    assert b.sync() and predict(b, "x").version == v2
    a.delete("x")
    b.sync()
    with pytest.raises(NotFound):
        b.resolve("x")


def test_fingerprint_mismatch_is_refused(tmp_path, registry, text_backbone):
    folder = head_adapter(tmp_path / "a", text_backbone, "a")
    m = json.loads((folder / "adapter.json").read_text())
    m["backbone"]["fingerprint"] = "sha256:" + "0" * 64
    (folder / "adapter.json").write_text(json.dumps(m))
    with pytest.raises(IncompatibleAdapter, match="fingerprint"):
        registry.register(folder)


def test_head_shape_mismatch_is_refused(tmp_path, registry, text_backbone, vision_backbone):
    folder = head_adapter(tmp_path / "a", vision_backbone, "a")  # 320-d head ...
    m = json.loads((folder / "adapter.json").read_text())
    m["backbone"] = {"name": "text"}  # ... claimed for the 32-d text backbone
    (folder / "adapter.json").write_text(json.dumps(m))
    with pytest.raises(IncompatibleAdapter, match="input_dim"):
        registry.register(folder)


def test_image_size_mismatch_is_refused(tmp_path, registry, vision_backbone):
    folder = head_adapter(tmp_path / "a", vision_backbone, "a")
    m = json.loads((folder / "adapter.json").read_text())
    m["preprocessing"] = {"image_size": 224}
    (folder / "adapter.json").write_text(json.dumps(m))
    with pytest.raises(IncompatibleAdapter, match="image_size"):
        registry.register(folder)


def test_wrong_modality_and_unknown_task(tmp_path, registry, text_backbone):
    registry.register(head_adapter(tmp_path / "a", text_backbone, "a"))
    rt = Runtime(registry)
    with pytest.raises(InvalidInput, match="takes texts"):
        rt.prepare(["a"], ["x"], "image")
    with pytest.raises(NotFound, match="'nope' is not registered"):
        rt.prepare(["nope"], ["x"], "text")
    with pytest.raises(InvalidInput, match="empty"):
        rt.prepare(["a"], [], "text")


def test_adapter_budget_evicts_and_reloads(tmp_path, backbones, text_backbone):
    reg = Registry(open_store(str(tmp_path / "store")), backbones, adapter_budget_bytes=1)
    src = str(text_backbone.source_path)
    first = {}
    for i in range(3):
        reg.register(peft_lora_dir(tmp_path / f"l{i}", src, seed=i), name=f"l{i}")
        first[f"l{i}"] = predict(reg, f"l{i}")
    assert reg.resident_loras() == 1  # budget of 1 byte: only the latest stays
    assert reg.show("l0")["state"] == "evicted"
    again = predict(reg, "l0")  # reloads from the store instead of failing
    assert [r.scores for r in again.rows] == [r.scores for r in first["l0"].rows]
    reg.pin("l1")
    predict(reg, "l1"); predict(reg, "l2")
    assert reg.show("l1")["state"] == "ready" and reg.show("l1")["pinned"]


def test_crash_leftovers_are_invisible_and_collected(tmp_path, backbones, text_backbone):
    store = open_store(str(tmp_path / "store"))
    reg = Registry(store, backbones)
    reg.register(head_adapter(tmp_path / "a", text_backbone, "a"))
    # a crash after staging, and one after the rename but before the alias was written
    (store.root / "staging" / "deadbeef").mkdir()
    (store.root / "staging" / "deadbeef" / "adapter.json").write_text("{half")
    orphan = store.root / "tasks" / "b" / "versions" / ("f" * 64)
    orphan.mkdir(parents=True)
    assert [x["name"] for x in Registry(store, backbones).list()] == []  # before sync
    fresh = Registry(store, backbones); fresh.sync()
    assert [x["name"] for x in fresh.list()] == ["a"]
    old = 0  # pretend both leftovers are older than the grace period
    for p in [store.root / "staging" / "deadbeef", orphan]:
        os.utime(p, (old, old))
    removed = store.gc(grace_s=60)
    assert any("deadbeef" in r for r in removed) and any("f" * 64 in r for r in removed)
    assert not (store.root / "tasks" / "b").exists()
    assert [x["name"] for x in fresh.list()] == ["a"]


def test_stale_sync_snapshot_never_rolls_back_a_local_registration(tmp_path, registry, text_backbone):
    """A watcher's snapshot taken just before a local registration must not undo it."""
    v1 = registry.register(head_adapter(tmp_path / "a", text_backbone, "a", seed=1)).version
    store = registry.store
    real_list = store.list_aliases
    v2 = {}

    def racing_list():
        snapshot = real_list()  # still names v1 (and nothing of task "b")
        v2["a"] = registry.register(head_adapter(tmp_path / "a2", text_backbone, "a", seed=2)).version
        v2["b"] = registry.register(head_adapter(tmp_path / "b", text_backbone, "b")).version
        return snapshot

    store.list_aliases = racing_list
    registry.sync(force=True)
    store.list_aliases = real_list
    assert v2["a"] != v1
    assert predict(registry, "a").version == v2["a"]
    assert predict(registry, "b").version == v2["b"]
    registry.sync(force=True)
    assert predict(registry, "a").version == v2["a"]


def test_follower_reads_only_the_changed_tasks(tmp_path, registry, backbones, text_backbone, monkeypatch):
    """After its first (full) sync, a follower applies the store's change log: one change
    reads one alias, a delete drops the task; too far behind, it lists everything again."""
    for name in ("a", "b", "c"):
        registry.register(head_adapter(tmp_path / name, text_backbone, name, seed=ord(name)))
    follower = Registry(open_store(str(registry.store.root)), backbones)
    assert follower.sync() and follower.last_sync["full"] and follower.last_sync["tasks_read"] == 3
    listed = []
    real_list = follower.store.list_aliases
    monkeypatch.setattr(follower.store, "list_aliases", lambda: listed.append(1) or real_list())
    b2 = registry.register(head_adapter(tmp_path / "b2", text_backbone, "b", seed=99)).version
    assert follower.sync() and not listed
    assert follower.last_sync == {"full": False, "tasks_read": 1, "names": ["b"]}
    assert predict(follower, "b").version == b2
    registry.delete("c")
    assert follower.sync() and follower.last_sync == {"full": False, "tasks_read": 1, "names": ["c"]}
    assert [t["name"] for t in follower.list()] == ["a", "b"] and not listed
    assert follower.sync() is False  # nothing changed: nothing read

    monkeypatch.setattr("adapters.store.base.CHANGE_LOG", 2)
    for i in range(3):  # more changes than the log keeps
        registry.register(head_adapter(tmp_path / f"d{i}", text_backbone, f"d{i}", seed=i))
    assert follower.sync() and follower.last_sync["full"] and listed
    assert [t["name"] for t in follower.list()] == ["a", "b", "d0", "d1", "d2"]
    assert predict(follower, "d2").version == registry.resolve("d2").version


def test_page_describes_only_its_window(tmp_path, registry, text_backbone, monkeypatch):
    for name in ("pager-2", "pager-0", "other", "pager-1"):
        registry.register(head_adapter(tmp_path / name, text_backbone, name))
    described = []
    real = registry._describe
    monkeypatch.setattr(registry, "_describe", lambda n, row: described.append(n) or real(n, row))
    items, total, nxt = registry.page("PAGER", 1, 1)
    assert [i["name"] for i in items] == ["pager-1"] and (total, nxt) == (3, 2) and described == ["pager-1"]
    assert registry.page(None, 0, None)[0] == registry.list()
    registry.delete("pager-1")
    assert [i["name"] for i in registry.page("pager", 0, 5)[0]] == ["pager-0", "pager-2"]


def test_a_change_the_log_never_named_is_found_on_a_miss(tmp_path, registry, backbones, text_backbone):
    """A writer that died between its alias write and its generation bump: followers'
    incremental syncs cannot see it, but a request for that task reads its alias once."""
    from datetime import datetime, timezone
    from adapters.store import VersionInfo
    follower = Registry(open_store(str(registry.store.root)), backbones)
    follower.sync()
    store = registry.store
    version = store.put_version("ghost", head_adapter(tmp_path / "ghost", text_backbone, "ghost"))
    bump, store._bump = store._bump, (lambda name=None: None)  # dies before the bump
    try:
        store.publish("ghost", version, VersionInfo(version=version, kind="head", labels=["neg", "pos"],
                                                    created_at=datetime.now(timezone.utc).isoformat()))
    finally:
        store._bump = bump
    assert follower.sync() is False  # the generation never moved
    assert predict(follower, "ghost").version == version
    with pytest.raises(NotFound):
        follower.resolve("never-registered")
