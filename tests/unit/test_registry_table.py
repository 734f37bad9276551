"""The registry's table of entries per (task, version), table-driven over entry states.

Each step acts on a registry over a real local store (real PEFT LoRA and head folders),
then every live task's ``show()`` state and pin, the resident LoRAs (LRU order, oldest
first) and the number of entries each task keeps are compared with the table. The last
column keeps the bookkeeping honest: a task holds one entry (its active version) plus the
versions still resident or loading, never a trail of old ones.
"""

from __future__ import annotations

import pytest

from adapters.errors import NotFound
from adapters.registry import Registry
from adapters.store import open_store
from support.factories import head_adapter, peft_lora_dir

LABELS = ["neg", "pos"]

# step, task, expected {task: (state, pinned)} for live tasks, resident LoRAs, entries per task
TABLE = [
    ("register", "a", {"a": ("ready", False)}, ["a"], {"a": 1}),
    ("register", "b", {"a": ("evicted", False), "b": ("ready", False)}, ["b"], {"a": 1, "b": 1}),
    ("register", "h", {"h": ("ready", False)}, ["b"], {"h": 1}),         # heads stay resident
    ("resolve", "a", {"a": ("ready", False), "b": ("evicted", False)}, ["a"], {"a": 1, "b": 1}),
    ("pin", "a", {"a": ("ready", True)}, ["a"], {"a": 1}),
    ("resolve", "b", {"a": ("ready", True), "b": ("ready", False)}, ["a", "b"], {}),  # pin holds a
    ("new_version", "a", {"a": ("ready", True), "b": ("evicted", False)}, ["a"], {"a": 1}),  # pin moves
    ("unpin", "a", {"a": ("ready", False), "b": ("evicted", False)}, ["a"], {"a": 1}),  # fits: stays
    ("resolve", "b", {"a": ("evicted", False), "b": ("ready", False)}, ["b"], {"a": 1, "b": 1}),
    ("corrupt", "a", {"a": ("failed", False), "b": ("ready", False)}, ["b"], {"a": 1}),  # reload fails
    ("repair", "a", {"a": ("ready", False), "b": ("evicted", False)}, ["a"], {"a": 1}),  # next request retries
    ("rollback", "a", {"a": ("ready", False)}, ["a"], {"a": 1}),         # old version loads, new one goes
    ("delete", "b", {"a": ("ready", False), "h": ("ready", False)}, ["a"], {"a": 1, "h": 1}),
    ("delete", "h", {"a": ("ready", False)}, ["a"], {"a": 1}),
    ("delete", "a", {}, [], {}),
]


@pytest.fixture
def folders(tmp_path, text_backbone):
    src = str(text_backbone.source_path)
    return {"a": peft_lora_dir(tmp_path / "a", src, seed=1), "b": peft_lora_dir(tmp_path / "b", src, seed=2),
            "a2": peft_lora_dir(tmp_path / "a2", src, seed=3),
            "h": head_adapter(tmp_path / "h", text_backbone, "h", seed=4)}


def test_entry_states_table(tmp_path, backbones, folders):
    reg = Registry(open_store(str(tmp_path / "store")), backbones)
    live: set[str] = set()
    versions: dict[str, list[str]] = {}
    broken: dict = {}
    for step, task, states, resident, entries in TABLE:
        if step == "register":
            loaded = reg.register(folders[task], name=task, labels=LABELS)
            versions[task] = [loaded.version]
            live.add(task)
            if task == "a":  # a budget of exactly one of these LoRAs
                reg.adapter_budget_bytes = loaded.nbytes
        elif step == "new_version":
            versions[task].append(reg.register(folders[task + "2"], name=task).version)
        elif step == "resolve":
            assert reg.resolve(task).version == versions[task][-1]
        elif step in ("pin", "unpin"):
            reg.pin(task, step == "pin")
        elif step == "corrupt":  # the stored weights go bad while the version is evicted
            path = reg.store.version_path(task, versions[task][-1]) / "adapter_model.safetensors"
            broken[path] = path.read_bytes()
            path.write_bytes(b"not a safetensors file")
            with pytest.raises(Exception, match="safetensors|header|adapter"):
                reg.resolve(task)
            assert reg.show(task)["error"]
        elif step == "repair":
            for path, data in broken.items():
                path.write_bytes(data)
            assert reg.resolve(task).version == versions[task][-1]
            assert reg.show(task)["error"] is None
        elif step == "rollback":
            reg.activate(task, versions[task][0])
            versions[task] = versions[task][:1]
        elif step == "delete":
            reg.delete(task)
            live.discard(task)
            with pytest.raises(NotFound):
                reg.show(task)
            with pytest.raises(NotFound):
                reg.resolve(task)
        for name, (state, pinned) in states.items():
            shown = reg.show(name)
            assert (shown["state"], shown["pinned"]) == (state, pinned), (step, task, name)
            assert shown["active_version"] == versions[name][-1], (step, task, name)
        assert [k[0] for k in reg._loras] == resident, (step, task)
        assert sorted(reg._tasks) == sorted(live), (step, task)  # a deleted task leaves no row
        for name, n in entries.items():
            assert len(reg._tasks[name].versions) == n, (step, task, name, reg._tasks[name].versions)
    assert reg.resident_loras() == 0 and reg.loaded_count() == 0


def test_unloaded_until_first_use_on_another_replica(tmp_path, backbones, folders):
    """A LoRA learnt from the store's watcher is ``unloaded`` (explicit, on its entry) until
    its first request; a head learnt the same way loads at once; one whose backbone this
    replica lacks is ``failed`` with the reason, and the others still serve."""
    store = str(tmp_path / "store")
    a = Registry(open_store(store), backbones)
    a.register(folders["a"], name="a", labels=LABELS)
    a.register(folders["h"])
    b = Registry(open_store(store), backbones)
    assert b.sync()
    assert (b.show("a")["state"], b.show("h")["state"]) == ("unloaded", "ready")
    assert b.resident_loras() == 0 and b.loaded_count() == 1
    assert b.resolve("a").version == a.show("a")["active_version"]
    assert b.show("a")["state"] == "ready" and b.loaded_count() == 2
    vision_only = Registry(open_store(store), {"vision": backbones["vision"]})
    vision_only.sync()
    shown = vision_only.show("h")
    assert shown["state"] == "failed" and "text" in shown["error"], shown


def test_failed_new_version_keeps_the_old_one_serving(tmp_path, backbones, text_backbone):
    """The watcher's new head version fails to load here: its entry says ``failed`` with the
    reason, the store's active version is reported, and the previous version keeps answering
    until a later round loads the new one."""
    store = str(tmp_path / "store")
    a = Registry(open_store(store), backbones)
    v1 = a.register(head_adapter(tmp_path / "h1", text_backbone, "h", seed=1)).version
    b = Registry(open_store(store), backbones)
    b.sync()
    assert b.resolve("h").version == v1
    v2 = a.register(head_adapter(tmp_path / "h2", text_backbone, "h", seed=2)).version
    weights = a.store.version_path("h", v2) / "head.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    assert b.sync()
    shown = b.show("h")
    assert (shown["active_version"], shown["state"]) == (v2, "failed") and shown["error"]
    assert b.resolve("h").version == v1 and b.loaded_count() == 1
    weights.write_bytes(good)
    assert b.sync(force=True)
    assert b.resolve("h").version == v2 and b.show("h")["state"] == "ready"
    assert len(b._tasks["h"].versions) == 1  # v1 left with its last request
