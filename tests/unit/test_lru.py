"""The LoRA residency LRU: budget, order, pinning, stale versions, reloads, single flight.

Table-driven like vLLM's LRU manager tests: each step acts on the registry, then the
resident set (in LRU order, oldest first) is compared with the table, and every
prediction along the way must equal the adapter's answer when it was first loaded —
eviction and reload never change a score.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from adapters.lora import batch as lora_batch
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.factories import peft_lora_dir

TEXTS = ["good movie", "the plot was awful and boring", "fun"]


class Loads:
    """Registry observer: counts loads per task."""

    def __init__(self):
        self.loads: dict[str, int] = {}
        self.lock = threading.Lock()

    def on_register(self, kind):
        pass

    def on_load(self, adapter, seconds):
        with self.lock:
            self.loads[adapter.name] = self.loads.get(adapter.name, 0) + 1


def scores(reg: Registry, task: str) -> list[dict]:
    rt = Runtime(reg)
    return [r.scores for r in rt.run([rt.prepare([task], TEXTS, "text")])[0][0].rows]


def resident(reg: Registry) -> list[str]:
    """Resident LoRAs oldest first, as ``name`` (``name@2`` for a task's second version)."""
    return [k[0] for k in reg._loras]


@pytest.fixture
def lora_dirs(tmp_path, text_backbone):
    """Five same-sized PEFT LoRA folders (rank 4), plus a second version of ``c``."""
    src = str(text_backbone.source_path)
    dirs = {n: peft_lora_dir(tmp_path / n, src, seed=i) for i, n in enumerate("abcde")}
    dirs["c2"] = peft_lora_dir(tmp_path / "c2", src, seed=99)
    return dirs


# step, task, resident LoRAs afterwards (LRU order, oldest first)
TABLE = [
    ("register", "a", ["a"]),
    ("register", "b", ["a", "b"]),
    ("register", "c", ["b", "c"]),          # budget of two: the least recently used goes
    ("predict", "b", ["c", "b"]),           # a hit moves it to the back
    ("register", "d", ["b", "d"]),
    ("predict", "a", ["d", "a"]),           # evicted a reloads from the store, b goes
    ("pin", "d", ["d", "a"]),               # pinning a resident adapter keeps its place
    ("predict", "b", ["d", "b"]),           # d is pinned, so a goes although d is older
    ("predict", "c", ["d", "c"]),
    ("unpin", "d", ["d", "c"]),             # within budget: nothing to evict yet
    ("predict", "a", ["c", "a"]),           # d is evictable again
    ("new_version", "c", ["a", "c"]),       # the replaced version leaves at once
    ("rollback", "c", ["a", "c"]),          # v1 reloads and replaces v2, a stays
    ("register", "e", ["c", "e"]),
    ("pin", "e", ["c", "e"]),
    ("pin", "a", ["e", "a"]),               # pinning an evicted adapter loads it now
    ("predict", "b", ["e", "a", "b"]),      # pinned ones may hold the budget: b still loads
    ("delete", "b", ["e", "a"]),
    ("unpin", "a", ["e", "a"]),
    ("predict", "c", ["e", "c"]),           # the rolled-back version answers as it first did
    ("unpin", "e", ["e", "c"]),
]


def test_lru_table(tmp_path, backbones, lora_dirs):
    obs = Loads()
    reg = Registry(open_store(str(tmp_path / "store")), backbones, events=obs)
    first: dict[str, list[dict]] = {}
    versions: dict[str, list[str]] = {}
    deleted: set[str] = set()
    for step, task, expected in TABLE:
        if step == "register":
            loaded = reg.register(lora_dirs[task], name=task, labels=["neg", "pos"])
            versions[task] = [loaded.version]
            if len(versions) == 1:  # size the budget on the first: exactly two adapters fit
                reg.adapter_budget_bytes = 2 * loaded.nbytes
            first[task] = scores(reg, task)  # the newest is already the most recent: no reorder
        elif step == "predict":
            assert scores(reg, task) == first[task], f"{task} answers differently after reload"
        elif step in ("pin", "unpin"):
            reg.pin(task, step == "pin")
        elif step == "new_version":
            versions[task].append(reg.register(lora_dirs[task + "2"], name=task).version)
            assert scores(reg, task) != first[task]  # the new version really serves
        elif step == "rollback":
            reg.activate(task, versions[task][0])
        elif step == "delete":
            reg.delete(task)
            deleted.add(task)
        assert resident(reg) == expected, (step, task, resident(reg))
        assert [k[1] for k in reg._loras] == [reg.show(n)["active_version"] for n in expected]
        for n in set(versions) - deleted:
            state = reg.show(n)["state"]
            assert state == ("ready" if n in expected else "evicted"), (step, n, state)
    assert obs.loads["a"] == 4  # registered, reloaded twice after eviction, loaded by pin


def test_evicted_lora_is_freed(tmp_path, backbones, lora_dirs):
    """Eviction really releases the tensors (no reference left in the registry)."""
    reg = Registry(open_store(str(tmp_path / "store")), backbones, adapter_budget_bytes=1)
    a = reg.register(lora_dirs["a"], name="a", labels=["neg", "pos"])
    scores(reg, "a")
    ref = weakref.ref(a.lora)
    del a
    reg.register(lora_dirs["b"], name="b", labels=["neg", "pos"])
    lora_batch.LORA_STACKS.clear()  # the runtime's small caches may hold the last batches' adapters
    lora_batch.MERGED.clear()
    gc.collect()
    assert ref() is None, "an evicted LoRA's weights are still referenced"
    assert reg.show("a")["state"] == "evicted" and reg.resident_loras() == 1
    assert reg.loaded_count() == 1


def test_reload_is_single_flight(tmp_path, backbones, lora_dirs):
    obs = Loads()
    reg = Registry(open_store(str(tmp_path / "store")), backbones, adapter_budget_bytes=1, events=obs)
    reg.register(lora_dirs["a"], name="a", labels=["neg", "pos"])
    reg.register(lora_dirs["b"], name="b", labels=["neg", "pos"])  # evicts a
    assert obs.loads == {"a": 1, "b": 1}
    barrier = threading.Barrier(8)
    got, errors = [], []

    def worker():
        try:
            barrier.wait(timeout=10)
            got.append(reg.resolve("a"))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(got) == 8 and len({id(x) for x in got}) == 1
    assert obs.loads["a"] == 2  # one reload for eight concurrent misses


def test_many_registered_few_resident(tmp_path, backbones, text_backbone):
    """Hundreds of LoRA tasks registered, residency stays within the budget, all answer."""
    folder = peft_lora_dir(tmp_path / "l", str(text_backbone.source_path), seed=3)
    reg = Registry(open_store(str(tmp_path / "store")), backbones)
    one = reg.register(folder, name="t-000", labels=["neg", "pos"])
    reg.adapter_budget_bytes = 3 * one.nbytes
    expected = scores(reg, "t-000")
    for i in range(1, 200):
        reg.register(folder, name=f"t-{i:03d}", labels=["neg", "pos"])
        assert reg.resident_loras() <= 3
    for i in range(0, 200, 37):
        assert scores(reg, f"t-{i:03d}") == expected
        assert reg.resident_loras() <= 3
    assert len(reg.list()) == 200
    assert sum(1 for a in reg._active.values() if a.kind == "lora") <= 3
