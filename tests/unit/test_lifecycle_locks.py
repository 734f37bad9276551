"""The lifecycle's lock order, checked: a slow store write delays no prediction.

``adapters/lifecycle.py`` states the order (writer lock, then the follower's sync lock,
then the table lock, never the table lock across store I/O). Here every store write
blocks until the test lets it go, and while an activate or a delete sits in that write,
predictions (a head: lock-free reads; a LoRA: an LRU touch under the table lock), the
listing and the loaded count must all answer. Then the write finishes and the change
serves.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.errors import NotFound
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.factories import head_adapter, peft_lora_dir

TEXTS = ["a good film", "dull and long"]
WRITES = ("put_version", "publish", "activate", "delete", "add_version", "update_rollout")
ANSWER_S = 20  # generous on a loaded 2-core machine; a lock held across the write blocks forever


class SlowWrites:
    """A store whose writes wait until ``gate`` opens (reads pass straight through)."""

    def __init__(self, store):
        self._store = store
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name not in WRITES:
            return attr

        def slow(*a, **kw):
            self.entered.set()
            assert self.gate.wait(60), "the test never let the write finish"
            return attr(*a, **kw)
        return slow


@pytest.fixture
def setup(tmp_path, text_backbone):
    store = SlowWrites(open_store(str(tmp_path / "store")))
    reg = Registry(store, {"text": text_backbone})
    src = str(text_backbone.source_path)
    v = [reg.register(head_adapter(tmp_path / f"h{s}", text_backbone, "h", seed=s)).version for s in (1, 2)]
    reg.register(peft_lora_dir(tmp_path / "l", src, seed=3), name="l", labels=["neg", "pos"])
    reg.register(head_adapter(tmp_path / "gone", text_backbone, "gone", seed=4))
    return store, reg, v


def _predict(rt: Runtime, task: str):
    return rt.run([rt.prepare([task], TEXTS, "text")])[0][0]


def _while_stuck(store: SlowWrites, change, check) -> None:
    """Run ``change`` in a thread with the store's writes held; ``check`` must finish meanwhile."""
    store.gate.clear()
    store.entered.clear()
    with ThreadPoolExecutor(2) as pool:
        job = pool.submit(change)
        try:
            assert store.entered.wait(ANSWER_S), "the change never reached the store"
            for _ in range(3):
                pool.submit(check).result(timeout=ANSWER_S)  # a TimeoutError here: a prediction waited
            assert not job.done(), "the write was not held"
        finally:
            store.gate.set()
        job.result(timeout=60)


@pytest.mark.parametrize("verb", ["activate", "delete"])
def test_a_slow_store_write_delays_no_prediction(setup, verb):
    store, reg, v = setup
    rt = Runtime(reg)

    def check():
        assert _predict(rt, "h").version == v[1]  # the old state answers until the change lands
        assert _predict(rt, "l").task == "l"       # an LRU touch takes the table lock
        assert reg.loaded_count() >= 2 and [t["name"] for t in reg.page(None, 0, None)[0]] == ["gone", "h", "l"]

    if verb == "activate":
        _while_stuck(store, lambda: reg.activate("h", v[0]), check)
        assert _predict(rt, "h").version == v[0]
    else:
        _while_stuck(store, lambda: reg.delete("gone"), check)
        with pytest.raises(NotFound):
            _predict(rt, "gone")
    assert [t["name"] for t in reg.list()] == (["gone", "h", "l"] if verb == "activate" else ["h", "l"])


def test_a_miss_catches_up_on_one_task_without_the_writer_lock(setup, tmp_path, text_backbone):
    """A request for a task registered by another process reads that task's alias, even
    while this process's writer lock is held by a registration stuck in the store."""
    store, reg, _ = setup
    other = Registry(open_store(str(store.root)), {"text": text_backbone})
    late = other.register(head_adapter(tmp_path / "late", text_backbone, "late", seed=5)).version
    rt = Runtime(reg)
    stuck = head_adapter(tmp_path / "h3", text_backbone, "h", seed=6)
    _while_stuck(store, lambda: reg.register(stuck),
                 lambda: _predict(rt, "late").version == late or pytest.fail("the miss found nothing"))
    assert reg.show("late")["active_version"] == late


def test_a_miss_on_a_task_deleted_elsewhere_drops_it(setup, text_backbone):
    """A follower knows LoRA task ``l`` (not loaded yet); another process deletes it; the
    follower's next request for it catches up on that one task: not registered."""
    store, reg, _ = setup
    other = Registry(open_store(str(store.root)), {"text": text_backbone})
    assert other.sync() and other.show("l")["state"] == "unloaded"
    reg.delete("l")
    with pytest.raises(NotFound):
        other.resolve("l")
    assert [t["name"] for t in other.list()] == ["gone", "h"]
