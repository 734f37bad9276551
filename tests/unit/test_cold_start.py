"""Cold start that does not grow with the store: a process starting on a store of N tasks
reads the store's index, loads no adapter, lists every task, and loads each task once on
its first use (single flight), even under concurrent first requests. Timings are the
bench's (``python -m bench scale``); these tests count loads and store reads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import httpx
import pytest
import torch

from adapters.errors import AdapterUnavailable
from adapters.format.adapter_dir import manifest_bytes
from adapters.loading import prepare_adapter
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from adapters.store.base import VersionInfo
from support.factories import head_adapter, peft_lora_dir
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (fixture)

N = 40
TEXTS = ["a good film", "a dull plot"]


class Loads:
    """The registry's ``events`` observer: every adapter load, by task name."""

    def __init__(self):
        self.names: list[str] = []
        self.lock = threading.Lock()

    def on_load(self, adapter, seconds):
        with self.lock:
            self.names.append(adapter.name)

    def on_register(self, kind):
        pass


class CountingStore:
    """A store proxy counting the calls that read many or one alias; ``slow_s`` delays
    ``version_path`` (a load's first store read), so concurrent first requests overlap."""

    def __init__(self, store, slow_s: float = 0.0):
        self._store, self.slow_s = store, slow_s
        self.calls: dict[str, int] = {}
        self.rollouts_asked: list[str] = []  # every name list_rollouts was asked about

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == "list_rollouts":
                self.rollouts_asked += list(args[0])
            if name == "version_path" and self.slow_s:
                time.sleep(self.slow_s)
            return attr(*args, **kwargs)
        return counted


def put_task(store, folder, backbones) -> str:
    """Store and publish one adapter folder through the store API (as bench/scale_populate does)."""
    prep = prepare_adapter(folder, backbones, fresh=True)
    version = store.put_version(prep.manifest.name, folder, {"adapter.json": manifest_bytes(prep.manifest)})
    store.publish(prep.manifest.name, version, VersionInfo(
        version=version, kind=prep.manifest.kind, labels=prep.manifest.labels,
        created_at=datetime.now(timezone.utc).isoformat()))
    return version


@pytest.fixture(scope="module")
def filled(tmp_path_factory, text_backbone, vision_backbone):
    """A local store with N head tasks and one LoRA, written without any follower (no index)."""
    root = tmp_path_factory.mktemp("cold")
    store = open_store(str(root / "store"))
    backbones = {"text": text_backbone, "vision": vision_backbone}
    for i in range(N):
        put_task(store, head_adapter(root / f"h{i}", text_backbone, f"task-{i:03d}", seed=i), backbones)
    lora = peft_lora_dir(root / "lora", str(text_backbone.source_path), seed=3)
    Registry(store, backbones).register(lora, name="lora-task", labels=["no", "yes"])
    return str(root / "store"), backbones


def fresh(url: str, backbones: dict, slow_s: float = 0.0) -> tuple[Registry, Loads, CountingStore]:
    loads, store = Loads(), CountingStore(open_store(url), slow_s)
    return Registry(store, backbones, events=loads), loads, store


def test_start_lists_every_task_and_loads_none(filled):
    url, backbones = filled
    reg, loads, store = fresh(url, backbones)
    first = reg.start()
    assert first["source"] == "listing" and first["tasks"] == N + 1 and first["index_written"]
    assert loads.names == [] and reg.loaded_count() == 0
    stored = open_store(url).list_aliases()
    listed, total, _ = reg.page(None, 0, None)
    assert total == N + 1 and [t["name"] for t in listed] == sorted(stored)
    for task in listed:
        alias = stored[task["name"]]
        assert task["active_version"] == alias.active and task["state"] == "unloaded"
        assert [v["version"] for v in task["versions"]] == [v.version for v in alias.versions]
        assert task["kind"] == alias.versions[-1].kind and task["labels"] == alias.versions[-1].labels

    # the next process reads the index: one document, no alias listing, nothing loaded
    again, loads2, store2 = fresh(url, backbones)
    second = again.start()
    assert (second["source"], second["replayed"], second["tasks"]) == ("index", 0, N + 1)
    assert store2.calls.get("list_aliases", 0) == 0 and store2.rollouts_asked == []
    assert loads2.names == [] and again.page(None, 0, None)[0] == listed


def test_start_replays_changes_logged_after_the_index(filled, tmp_path, text_backbone):
    url, backbones = filled
    Registry(open_store(url), backbones).start()  # writes the index
    writer = Registry(open_store(url), backbones)
    writer.register(head_adapter(tmp_path / "new", text_backbone, "zz-new", seed=99))
    v2 = writer.register(head_adapter(tmp_path / "v2", text_backbone, "task-001", seed=101)).version
    writer.delete("task-002")
    reg, loads, store = fresh(url, backbones)
    got = reg.start()
    assert got["source"] == "index" and got["replayed"] == 3 and store.calls.get("list_aliases", 0) == 0
    assert sorted(store.rollouts_asked) == ["task-001", "zz-new"]  # only the changed tasks' policies
    names = [t["name"] for t in reg.page(None, 0, None)[0]]
    assert names == sorted(open_store(url).list_aliases()) and "zz-new" in names and "task-002" not in names
    assert reg.show("task-001")["active_version"] == v2 and loads.names == []
    assert reg.resolve("task-001").version == v2
    writer.delete("zz-new")


def test_first_use_loads_once_under_concurrent_first_requests(filled):
    url, backbones = filled
    Registry(open_store(url), backbones).start()
    reg, loads, _ = fresh(url, backbones, slow_s=0.3)
    reg.start()
    rt = Runtime(reg)
    warm = Registry(open_store(url), backbones)
    warm.sync()  # an eager follower: every head loaded the old way
    expected = Runtime(warm).run([Runtime(warm).prepare(["task-007"], TEXTS, "text")])
    gate = threading.Barrier(8)

    def first_request(_):
        gate.wait()
        return rt.run([rt.prepare(["task-007"], TEXTS, "text")])
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(first_request, range(8)))
    assert loads.names == ["task-007"], loads.names  # one load, seven waited on it
    assert reg.show("task-007")["state"] == "ready" and reg.loaded_count() == 1
    want = expected[0][0]
    for got in answers:
        assert got[0][0].version == want.version
        for row, ref in zip(got[0][0].rows, want.rows, strict=True):
            assert row.label == ref.label
            assert torch.allclose(torch.tensor(list(row.scores.values())), torch.tensor(list(ref.scores.values())))
    reg.resolve("task-008")
    assert loads.names == ["task-007", "task-008"]
    reg.sync(force=True)  # a full listing over a lazily started table loads nothing more
    assert loads.names == ["task-007", "task-008"] and reg.last_sync["full"]


def test_a_failed_first_load_fails_that_task_only_and_is_retried(filled):
    url, backbones = filled
    reg, loads, _ = fresh(url, backbones)
    reg.start()
    store = open_store(url)
    weights = store.version_path("task-011", store.get_alias("task-011").active) / "head.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    try:
        with pytest.raises(AdapterUnavailable, match="task-011.*could not be loaded on this replica"):
            reg.resolve("task-011")
        shown = reg.show("task-011")
        assert shown["state"] == "failed" and shown["error"]
        assert reg.resolve("task-012").name == "task-012"  # the others are unaffected
    finally:
        weights.write_bytes(good)
    assert reg.resolve("task-011").name == "task-011" and reg.show("task-011")["state"] == "ready"


def test_an_unusable_index_costs_one_listing(filled):
    url, backbones = filled
    root = open_store(url).root
    (root / "index.json").write_bytes(b"{not json")
    reg, loads, store = fresh(url, backbones)
    assert reg.start()["source"] == "listing" and store.calls["list_aliases"] == 1
    assert reg.count() == len(open_store(url).list_aliases()) and loads.names == []
    assert open_store(url).read_index() is not None  # rewritten whole


# ---- over HTTP ---------------------------------------------------------------------------------
def _loads(srv) -> float:
    total = 0.0
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith("taskswap_adapter_loads_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.server
def test_a_server_on_many_tasks_is_ready_without_loading_them(server_factory, tiny_dir, filled):
    url, _ = filled
    srv = server_factory.start(store=url, backbones=tiny_backbones_env(tiny_dir))
    assert srv.get("/readyz").status_code == 200 and _loads(srv) == 0
    listing = srv.get("/adapters").json()
    assert listing["total"] == len(open_store(url).list_aliases())
    assert {a["state"] for a in listing["adapters"]} == {"unloaded"}

    def first_request(_):
        with srv.new_client() as c:
            return c.post("/predict", json={"task": "task-020", "texts": TEXTS})
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(first_request, range(8)))
    assert [r.status_code for r in answers] == [200] * 8, answers[0].text
    assert len({r.json()["results"][0]["version"] for r in answers}) == 1
    assert _loads(srv) == 1  # the one task, once

    store = open_store(url)
    weights = store.version_path("task-021", store.get_alias("task-021").active) / "head.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    try:
        r = srv.predict("task-021", texts=TEXTS)
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        assert r.json()["error"] == "adapter_unavailable" and "task-021" in r.json()["message"]
        assert srv.predict("task-022", texts=TEXTS).status_code == 200
        assert srv.get("/adapters/task-021").json()["state"] == "failed"
    finally:
        weights.write_bytes(good)
    assert srv.predict("task-021", texts=TEXTS).status_code == 200  # retried on the next request
    assert srv.internal_errors() == []
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/readyz").status_code == 200
    srv.stop()
