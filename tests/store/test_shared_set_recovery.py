"""Recovery at start-up of a shared adaptation's set that a dead replica left half switched:
some tasks on the new shared version, some on the old, ``pending`` in the set document. The
state is written by hand on the store (local folder and S3 on moto); a new process's
``Registry.start`` puts every alias back on one consistent set (the document's ``active``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.shared_sets import set_key
from support.multitask_factories import multitask_task_dir, shared_lora_dir
from support.replica_helpers import wait_for
from support.store_fixtures import kind, make_store, moto_s3  # noqa: F401  (fixtures)

TASKS = {"sentiment": ("neg", "pos"), "subjective": ("obj", "subj"), "team/topic": ("film", "food", "news")}
TEXTS = ["good movie", "the plot was awful", "a very sad film"]


def actives(store, names) -> dict[str, str]:
    return {n: store.get_alias(n).active for n in names}


@pytest.fixture
def half_switched(make_store, backbones, text_backbone, tmp_path, one_torch_thread):
    """``(old set, new set)`` after writing by hand what a replica killed in the middle of a
    switch leaves: new versions stored, the document's ``pending`` naming them, the
    adaptation moved and ``base``'s first task, its second and ``team/base``'s one not."""
    reg = Registry(make_store(), backbones)
    reg.sync()
    names = {}
    for ns, base in (("", "base"), ("team/", "team/base")):
        old = reg.register(shared_lora_dir(tmp_path / f"{ns}old", text_backbone, base, seed=1)).version
        names[base] = old
    old = {"adaptation": names["base"], "tasks": {}}
    for i, (task, labels) in enumerate(TASKS.items()):
        base = "team/base" if task.startswith("team/") else "base"
        v = reg.register(multitask_task_dir(tmp_path / f"t{i}", text_backbone, task, base, names[base], labels,
                                            seed=10 + i)).version
        if base == "base":
            old["tasks"][task] = v
    # the namespaced set is half switched, the bare one too: both must be found and repaired
    sets = {}
    for base in ("base", "team/base"):
        before = {"adaptation": names[base],
                  "tasks": {t: reg.store.get_alias(t).active for t in TASKS
                            if (t.startswith("team/")) == (base == "team/base")}}
        new_version = reg.lifecycle.register(shared_lora_dir(tmp_path / f"{base}-new", text_backbone, base, seed=2),
                                             activate=False).loaded.version
        after = {"adaptation": new_version, "tasks": {}}
        for i, task in enumerate(before["tasks"]):
            after["tasks"][task] = reg.lifecycle.register(
                multitask_task_dir(tmp_path / f"{task.replace('/', '-')}-new", text_backbone, task, base, new_version,
                                   TASKS[task], seed=30 + i), activate=False).loaded.version
        long_ago = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
        reg.store.update_document(set_key(base), lambda d, b=base, o=before, n=after: {
            "name": b, "active": o, "previous": None, "pending": n, "pending_since": long_ago})
        reg.activate(base, new_version)  # the adaptation moved ...
        if len(after["tasks"]) > 1:
            first = sorted(after["tasks"])[0]
            reg.activate(first, after["tasks"][first])  # ... and one of two tasks; then the process died
        sets[base] = (before, after)
    return sets


def test_start_puts_a_half_switched_set_back_on_one_set(half_switched, make_store, backbones):
    store = make_store()  # another process's handle on the same store
    for base, (before, after) in half_switched.items():
        names = [base, *before["tasks"]]
        moved = [n for n in names if store.get_alias(n).active != (before["tasks"].get(n) or before["adaptation"])]
        assert 0 < len(moved) < len(names)  # half: some moved, some not
    restarted = Registry(store, backbones)
    started = restarted.start()
    assert sorted(started["shared_sets"]["recovered"]) == ["base", "team/base"]
    for base, (before, _) in half_switched.items():
        assert actives(store, [base]) == {base: before["adaptation"]}
        assert actives(store, list(before["tasks"])) == before["tasks"]
        doc = store.get_document(set_key(base))
        assert doc["pending"] is None and doc["active"] == before
    rt = Runtime(restarted)  # the tasks answer from their old versions, each on the old adaptation
    for task in ("sentiment", "subjective"):
        loaded = restarted.resolve(task)
        assert loaded.manifest.shared.version == half_switched["base"][0]["adaptation"]
    assert rt.prepare(["sentiment", "subjective"], TEXTS, "text").rows == len(TEXTS)  # one row per input again
    assert restarted.start()["shared_sets"] == {"recovered": [], "deferred": []}  # nothing left to do


def test_a_recent_switch_is_left_to_its_replica_then_repaired_when_old(half_switched, make_store, backbones):
    """A ``pending`` younger than the grace may be a switch still running elsewhere: start-up
    leaves it, and repairs it once it is that old if nobody finished it."""
    store = make_store()
    now = datetime.now(timezone.utc).isoformat()
    store.update_document(set_key("base"), lambda d: {**d, "pending_since": now})
    before = half_switched["base"][0]
    restarted = Registry(store, backbones)
    started = restarted.start(set_grace_s=1.0)
    assert started["shared_sets"]["deferred"] == ["base"] and started["shared_sets"]["recovered"] == ["team/base"]
    wait_for(lambda: store.get_document(set_key("base"))["pending"] is None, "the deferred repair")
    assert actives(store, ["base", *before["tasks"]]) == {"base": before["adaptation"], **before["tasks"]}
