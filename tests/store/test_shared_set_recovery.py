"""Recovery at start-up of a shared adaptation's set that a dead replica left half switched:
some tasks on the new shared version, some on the old, ``pending`` in the set document. The
state is written by hand on the store (local folder and S3 on moto); a new process's
``Registry.start`` puts every alias back on one consistent set (the document's ``active``)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from adapters.errors import Conflict

from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.shared_sets import SWITCH_LEASE_S, set_key
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


# ---- a live switch stalled between two store writes, and a second process ---------------
@pytest.fixture
def one_set(make_store, backbones, text_backbone, tmp_path, one_torch_thread):
    """``(registry, old set, stall)``: ``base`` with two tasks riding on it; ``stall`` makes the
    registry's second alias activation wait (the adaptation has moved, no task yet) until
    ``stall.go`` is set, and sets ``stall.reached`` when it gets there."""
    reg = Registry(make_store(), backbones)
    reg.sync()
    base = reg.register(shared_lora_dir(tmp_path / "old", text_backbone, "base", seed=1)).version
    tasks = {}
    for i, task in enumerate(("sentiment", "subjective")):
        tasks[task] = reg.register(multitask_task_dir(tmp_path / f"t{i}", text_backbone, task, "base", base,
                                                      TASKS[task], seed=10 + i)).version

    class Stall:
        reached, go, calls = threading.Event(), threading.Event(), []

    real = reg.lifecycle.activate

    def activate(task, version, expected=None):
        Stall.calls.append(task)
        if len(Stall.calls) == 2:
            Stall.reached.set()
            assert Stall.go.wait(120), "the test never let the stalled switch go on"
        return real(task, version, expected)

    reg.lifecycle.activate = activate
    return reg, {"adaptation": base, "tasks": tasks}, Stall


def _switch_in_thread(reg, folder) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run():
        try:
            outcome.append(reg.shared_sets.register(folder))
        except Exception as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)
    t = threading.Thread(target=run)
    t.start()
    return t, outcome


def test_a_replica_starting_beside_a_live_stalled_switch_leaves_it_and_it_completes(
        one_set, make_store, backbones, text_backbone, tmp_path):
    reg, old, stall = one_set
    names = ["base", *old["tasks"]]
    t, outcome = _switch_in_thread(reg, shared_lora_dir(tmp_path / "new", text_backbone, "base", seed=2))
    try:
        assert stall.reached.wait(120)
        other = Registry(make_store(), backbones)  # another replica, its own store client
        started = other.start()
        assert started["shared_sets"] == {"recovered": [], "deferred": ["base"]}  # its lease runs: left alone
        doc = other.store.get_document(set_key("base"))
        assert doc["pending"] is not None and doc["pending_owner"] and doc["pending_lease_until"]
        with pytest.raises(Conflict, match="in progress"):
            other.shared_sets.rollback("base")  # a set operation elsewhere waits for it too
        assert other.store.get_alias("base").active != old["adaptation"]  # nothing undone
    finally:
        stall.go.set()
        t.join(120)
    assert isinstance(outcome[0], dict), outcome
    store = make_store()
    doc = store.get_document(set_key("base"))
    assert doc["pending"] is None and doc["pending_owner"] is None and doc["previous"] == old
    assert actives(store, names) == {"base": doc["active"]["adaptation"], **doc["active"]["tasks"]}
    assert all(actives(store, names)[n] != (old["tasks"].get(n) or old["adaptation"]) for n in names)


def test_a_switch_stalled_past_its_lease_is_recovered_and_cannot_complete_over_the_recovery(
        one_set, make_store, backbones, text_backbone, tmp_path):
    reg, old, stall = one_set
    names = ["base", *old["tasks"]]
    t, outcome = _switch_in_thread(reg, shared_lora_dir(tmp_path / "new", text_backbone, "base", seed=3))
    try:
        assert stall.reached.wait(120)
        generation = make_store().get_document(set_key("base"))["generation"]
        other = Registry(make_store(), backbones)
        later = datetime.now(timezone.utc) + timedelta(seconds=SWITCH_LEASE_S + 5)
        other.shared_sets.clock = lambda: later  # the stalled switch's lease has run out
        assert other.start()["shared_sets"] == {"recovered": ["base"], "deferred": []}
        assert actives(other.store, names) == {"base": old["adaptation"], **old["tasks"]}
        doc = other.store.get_document(set_key("base"))
        assert doc["pending"] is None and doc["active"] == old and doc["generation"] > generation
    finally:
        stall.go.set()  # the late writer wakes up: its alias write lands, then it finds the set lost
        t.join(120)
    assert isinstance(outcome[0], Conflict) and "lost its lease" in str(outcome[0]), outcome
    store = make_store()
    assert actives(store, names) == {"base": old["adaptation"], **old["tasks"]}  # it put its move back
    doc = store.get_document(set_key("base"))
    assert doc["pending"] is None and doc["active"] == old  # it never settled over the recovery
