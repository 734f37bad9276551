"""Many head tasks in one registry (5,000 by default; ``TASKSWAP_SCALE_TASKS`` to change):
behaviour at scale, never timings (those are bench/scale.py's)."""

from __future__ import annotations

import os
import random

import pytest
import torch

from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.factories import head_adapter

N = int(os.environ.get("TASKSWAP_SCALE_TASKS", "5000"))


@pytest.fixture(scope="module")
def many(tmp_path_factory, text_backbone):
    root = tmp_path_factory.mktemp("scale")
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reg = Registry(open_store(str(root / "store")), {"text": text_backbone})
    names = []
    for i in range(N):
        name = f"task-{i:05d}"
        folder = head_adapter(root / "folder", text_backbone, name, seed=i,
                              labels=tuple(f"l{k}" for k in range(2 + i % 9)))
        reg.register(folder)
        names.append(name)
        for f in folder.iterdir():  # one scratch folder reused: N folders would be N x disk
            f.unlink()
    yield reg, root, names
    torch.set_num_threads(n_threads)


def test_every_task_is_listed_once_and_resolves(many):
    reg, _, names = many
    listed = [a["name"] for a in reg.list()]
    assert listed == sorted(names)
    for name in random.Random(0).sample(names, min(200, len(names))):
        a = reg.resolve(name)
        assert a.name == name and len(a.labels) == 2 + int(name[-5:]) % 9


def test_cold_start_loads_every_task_at_the_same_version(many, text_backbone):
    reg, root, names = many
    fresh = Registry(open_store(str(root / "store")), {"text": text_backbone})
    assert fresh.sync() is True
    assert [a["name"] for a in fresh.list()] == sorted(names)
    for name in names[:: max(1, N // 500)]:
        assert fresh.resolve(name).version == reg.resolve(name).version
    assert fresh.sync() is False  # nothing changed: nothing to do


class _Loads:
    """A registry ``events`` observer recording the name of every adapter it loads."""

    def __init__(self):
        self.names: list[str] = []

    def on_load(self, adapter, seconds):
        self.names.append(adapter.name)

    def on_register(self, kind):
        pass


def test_start_lists_every_task_and_loads_each_on_first_use(many, text_backbone):
    reg, root, names = many
    Registry(open_store(str(root / "store")), {"text": text_backbone}).start()  # an index, if none yet
    loads = _Loads()
    fresh = Registry(open_store(str(root / "store")), {"text": text_backbone}, events=loads)
    got = fresh.start()
    assert (got["source"], got["tasks"]) == ("index", N) and loads.names == [] and fresh.loaded_count() == 0
    seen, offset = [], 0
    while offset is not None:
        items, total, offset = fresh.page(None, offset, 997)
        seen += [(a["name"], a["active_version"]) for a in items]
    assert seen == [(n, reg.show(n)["active_version"]) for n in sorted(names)]
    sample = random.Random(2).sample(names, min(50, len(names)))
    for name in sample + sample:
        assert fresh.resolve(name).version == reg.resolve(name).version
    assert loads.names == sample and fresh.loaded_count() == len(sample)  # each once, on first use


def test_batch_spread_over_many_tasks_equals_each_alone(many):
    reg, _, names = many
    rt = Runtime(reg)
    rng = random.Random(1)
    picked = rng.sample(names, min(64, len(names)))
    texts = [" ".join(["word"] * rng.randint(1, 20)) for _ in picked]
    mixed = rt.run([rt.prepare([t], [x], "text") for t, x in zip(picked, texts)])
    for task, text, res in zip(picked, texts, mixed):
        alone = rt.run([rt.prepare([task], [text], "text")])[0][0]
        assert res[0].task == task and res[0].version == alone.version
        got = torch.tensor(list(res[0].rows[0].scores.values()))
        ref = torch.tensor(list(alone.rows[0].scores.values()))
        assert torch.allclose(got, ref, atol=1e-5), task


def test_follower_sees_one_change_among_many(many, text_backbone, tmp_path):
    reg, root, names = many
    follower = Registry(open_store(str(root / "store")), {"text": text_backbone})
    follower.sync()
    reg.register(head_adapter(tmp_path / "late", text_backbone, "task-late", seed=7))
    assert follower.sync() is True
    assert follower.last_sync == {"full": False, "tasks_read": 1, "names": ["task-late"]}  # the change log
    assert follower.resolve("task-late").version == reg.resolve("task-late").version
    assert follower.count() == N + 1
    reg.delete("task-late")
    assert follower.sync() is True and follower.count() == N and not follower.last_sync["full"]
    assert follower.page("task-late")[1] == 0


def test_listing_pages_cover_every_task_once(many):
    reg, _, names = many
    seen, offset = [], 0
    while offset is not None:
        items, total, offset = reg.page(None, offset, 997)
        assert total == N
        seen += [a["name"] for a in items]
    assert seen == sorted(names)
    items, total, nxt = reg.page("TASK-0004", 0, 3)
    want = sorted(n for n in names if "task-0004" in n)
    assert total == len(want) and [a["name"] for a in items] == want[:3] and nxt == (3 if total > 3 else None)
