"""Namespaces as the first level of fair sharing, and quotas as store documents (issue 32,
items 3-4): the deficit round-robin order over two namespaces, clients' fairness inside
one, quota documents on the real folder and S3 stores seen by a second handle (another
replica) within the cache's time to live, per-namespace rate buckets and usage counts.
Orders and counts only: every clock here is a fake one the test moves."""

from __future__ import annotations

import random
import threading
import time

import pytest

from adapters.batching import Batcher
from adapters.cost import estimate
from adapters.errors import QuotaExceeded, RateLimited
from adapters.fair_queue import FairQueue
from adapters.namespace_queue import NamespaceQueue
from adapters.quota_checks import RegistrationQuota, usage, usage_by_namespace
from adapters.quotas import Quota, QuotaBook
from adapters.rate_limits import RateLimits
from adapters.runtime import Runtime
from adapters.store.base import Alias, VersionInfo
from support.factories import head_adapter
from support.s3 import moto_s3  # noqa: F401  (session fixture)
from support.store_fixtures import kind, make_store  # noqa: F401  (fixtures: local and S3 stores)


def drain(q) -> list:
    out = []
    while len(q):
        assert q.peek() == (nxt := q.pop())  # peek always names what pop returns
        out.append(nxt)
    return out


# ---- deficit round-robin over namespaces ----------------------------------------------------
def test_a_flood_from_one_namespace_does_not_starve_another():
    q = NamespaceQueue(quantum=2.0)
    for i in range(100):
        q.push("team-a", "a-client", 1.0, f"a{i}")
    for i in range(10):
        q.push("team-b", "b-client", 1.0, f"b{i}")
    order = drain(q)
    assert order[:8] == ["a0", "a1", "b0", "b1", "a2", "a3", "b2", "b3"]
    assert max(order.index(f"b{i}") for i in range(10)) == 19  # B's ten within the first twenty
    assert order[20:] == [f"a{i}" for i in range(10, 100)]


def test_a_namespace_arriving_behind_a_backlog_waits_at_most_one_turn():
    q = NamespaceQueue(quantum=4.0)
    for i in range(1000):
        q.push("team-a", "a", 1.0, f"a{i}")
    assert [q.pop() for _ in range(3)] == ["a0", "a1", "a2"]
    q.push("team-b", "b", 1.0, "b0")
    assert q.pop() == "b0"  # not even one turn: team-a was served alone, team-b is new


def test_a_namespace_arriving_beside_a_flood_is_served_next():
    q = NamespaceQueue(quantum=4.0)
    for i in range(1000):
        q.push("team-a", "a", 1.0, f"a{i}")
    for i in range(100):
        q.push("team-c", "c", 1.0, f"c{i}")  # two backlogged namespaces in their rounds
    [q.pop() for _ in range(9)]
    q.push("team-b", "b", 3.0, "b0")  # light, nothing waiting: its first turn is the next one
    assert q.pop() == "b0"
    [q.pop() for _ in range(20)]
    q.push("team-b", "b", 3.0, "b1")  # and again, once its empty turn has come round
    assert q.pop() == "b1"


def test_sending_one_item_at_a_time_buys_no_more_than_a_share():
    """A namespace that pushes its next item as soon as the last is taken is new only when its
    empty turn has come round: it gets its quantum per round like a backlogged one, not one
    extra each time it empties."""
    for alone_first in (False, True):
        q = NamespaceQueue(quantum=4.0)
        for i in range(2000):
            q.push("team-a", "a", 1.0, ("a", 1.0))
        if alone_first:
            [q.pop() for _ in range(3)]
        q.push("team-b", "b", 4.0, ("b", 4.0))
        served = {"a": 0.0, "b": 0.0}
        for _ in range(400):
            ns, cost = q.pop()
            served[ns] += cost
            if ns == "b":
                q.push("team-b", "b", 4.0, ("b", 4.0))
        assert abs(served["a"] - served["b"]) <= 8.0, served  # equal work, within one quantum each


def test_weights_share_the_work_in_proportion():
    q = NamespaceQueue(quantum=1.0)
    for i in range(300):
        q.push("team-a", "a", 1.0, ("a", i), weight=3.0)
        q.push("team-b", "b", 1.0, ("b", i), weight=1.0)
    first = [q.pop()[0] for _ in range(200)]
    assert first.count("a") == 150 and first.count("b") == 50


def test_shares_count_cost_not_items():
    q = NamespaceQueue(quantum=1.0)
    for i in range(50):
        q.push("team-a", "a", 5.0, ("a", 5.0))
        q.push("team-b", "b", 1.0, ("b", 1.0))
    served = {"a": 0.0, "b": 0.0}
    for _ in range(60):  # both still backlogged throughout
        ns, cost = q.pop()
        served[ns] += cost
    assert abs(served["a"] - served["b"]) <= 5.0  # equal work, within one item


def test_clients_inside_a_namespace_keep_start_time_fair_order():
    rng = random.Random(7)
    ops = [(rng.choice("xyz"), rng.choice([1.0, 2.0, 7.0])) for _ in range(300)]
    alone, two = FairQueue(), NamespaceQueue(quantum=3.0)
    order_alone, order_a = [], []
    for i, (client, cost) in enumerate(ops):
        alone.push(client, cost, i)
        two.push("team-a", client, cost, ("a", i))
        two.push("team-b", "b", 1.0, ("b", i))
        if i % 3 == 2:  # some pops between the pushes
            order_alone.append(alone.pop())
            for _ in range(2):
                ns, item = two.pop()
                if ns == "a":
                    order_a.append(item)
    order_alone += drain(alone)
    order_a += [item for ns, item in drain(two) if ns == "a"]
    assert order_a == sorted(order_a, key=order_alone.index)  # team-a's own order: the fair queue's
    assert sorted(order_a) == list(range(300))


def test_one_namespace_alone_is_exactly_todays_fair_queue():
    rng = random.Random(3)
    old, new = FairQueue(), NamespaceQueue(quantum=1.0)
    got_old, got_new = [], []
    for i in range(500):
        client, cost = rng.choice("abcd"), rng.choice([0.5, 1.0, 4.0, 30.0])
        assert old.push(client, cost, i) == new.push("default", client, cost, i)
        if rng.random() < 0.4:
            got_old.append(old.pop())
            got_new.append(new.pop())
    assert got_old + drain(old) == got_new + drain(new)
    with pytest.raises(IndexError):
        new.pop()
    with pytest.raises(ValueError):
        new.push("default", "a", 1.0, "x", weight=0)


# ---- quota documents, two replicas -------------------------------------------------------
def test_a_quota_set_through_one_replica_is_seen_by_another_within_the_ttl(make_store):
    clock = [0.0]
    here, there = QuotaBook(make_store(), ttl_s=5.0), QuotaBook(make_store(), ttl_s=5.0, clock=lambda: clock[0])
    there.refresh(force=True)
    here.set("team-a", Quota(max_tasks=3, weight=2.0))
    assert here.get("team-a").max_tasks == 3  # in force at once where it was set
    assert there.get("team-a").max_tasks is None and not there.refresh()  # cached until the ttl
    clock[0] = 5.0
    assert there.refresh() and there.get("team-a").max_tasks == 3 and there.weight("team-a") == 2.0
    assert there.get("team-b") == Quota()  # no document: no limits, weight 1
    assert here.read("team-a") == Quota(max_tasks=3, weight=2.0) and here.read("team-b") is None
    assert here.clear("team-a") and not here.clear("team-a")
    clock[0] = 10.0
    assert there.refresh() and there.get("team-a") == Quota()


def test_an_invalid_quota_document_is_ignored_not_fatal(make_store):
    store = make_store()
    store.update_document("quotas/team-a", lambda _: {"namespace": "team-a", "quota": {"max_tasks": "lots"}})
    store.update_document("quotas/team-b", lambda _: {"namespace": "team-b", "quota": {"max_tasks": 1}})
    book = QuotaBook(store)
    assert book.refresh(force=True)
    assert book.get("team-a") == Quota() and book.get("team-b").max_tasks == 1


# ---- usage, size checks and rates per namespace ---------------------------------------------
def alias(name: str, *sizes: int | None) -> tuple[str, Alias]:
    versions = [VersionInfo(version=f"{i:064x}", kind="head", created_at="", size=s) for i, s in enumerate(sizes)]
    return name, Alias(name=name, active=versions[-1].version, versions=versions, updated_at="")


ALIASES = [alias("team-a/x", 100, 50), alias("team-a/y", 10), alias("team-b/z", 1000), alias("bare", None, 7)]


def test_usage_counts_each_namespace_alone():
    assert usage(ALIASES, "team-a") == (2, 160)
    assert usage(ALIASES, "team-b") == (1, 1000)
    assert usage(ALIASES, "default") == (1, 7)  # a version stored before sizes were recorded counts 0
    assert usage_by_namespace(ALIASES) == {"team-a": (2, 160), "team-b": (1, 1000), "default": (1, 7)}


class _Adapter:  # what the check reads of a loaded adapter: its bytes and whether it is evictable
    def __init__(self, nbytes: int, evictable: bool):
        self.nbytes = nbytes
        self.impl = type("Kind", (), {"evictable": evictable})()


def test_a_namespace_at_its_quota_does_not_limit_another(make_store):
    book = QuotaBook(make_store())
    book.set("team-a", Quota(max_tasks=2, max_stored_bytes=200, max_resident_bytes=64))
    admit = RegistrationQuota(book, lambda: ALIASES)
    with pytest.raises(QuotaExceeded, match=r"'team-a' is at its max_tasks quota: it holds 2 tasks of 2"):
        admit("team-a/new", 10, _Adapter(8, False), is_new=True)
    admit("team-a/x", 40, _Adapter(8, False), is_new=False)  # a new version of a task it holds
    with pytest.raises(QuotaExceeded, match=r"max_stored_bytes quota: 160 bytes stored \+ 41"):
        admit("team-a/x", 41, _Adapter(8, False), is_new=False)
    with pytest.raises(QuotaExceeded, match="max_resident_bytes"):
        admit("team-a/x", 1, _Adapter(65, True), is_new=False)
    admit("team-a/x", 1, _Adapter(65, False), is_new=False)  # a head is not in the eviction budget
    admit("team-b/new", 10**6, _Adapter(10**6, True), is_new=True)  # team-b has no quota


def test_rate_buckets_are_per_namespace():
    clock = [0.0]
    rates = RateLimits(clock=lambda: clock[0])
    tight = Quota(requests_per_s=1.0, burst_s=2.0)
    rates.admit("team-a", tight, 1)
    rates.admit("team-a", tight, 1)
    with pytest.raises(RateLimited) as refused:
        rates.admit("team-a", tight, 1)
    assert refused.value.retry_after_s == pytest.approx(1.0) and "team-a" in refused.value.message
    for _ in range(50):
        rates.admit("team-b", Quota(), 64)  # another namespace, no limits: never refused
    clock[0] = 1.0
    rates.admit("team-a", tight, 1)  # refilled at its rate
    rows = Quota(rows_per_s=10.0)
    rates.admit("team-a", rows, 10)
    with pytest.raises(RateLimited, match="rows_per_s 10"):
        rates.admit("team-a", rows, 1)
    rates.admit("team-a", Quota(rows_per_s=20.0), 20)  # a changed quota: a full bucket of its shape


# ---- the resident share, two namespaces ------------------------------------------------------
def test_a_namespace_over_its_resident_share_evicts_its_own_adapters_not_anothers(
        registry, backbones, text_backbone, tmp_path):
    from adapters.registry import Registry
    from adapters.store import open_store
    from support.factories import peft_lora_dir
    src = str(text_backbone.source_path)
    # real LoRA versions, stored and loaded under bare names (the store refuses qualified ones)
    loras = [registry.register(peft_lora_dir(tmp_path / f"l{i}", src, seed=i), name=f"l{i}") for i in range(4)]
    size = max(a.nbytes for a in loras)
    # a second process's table holding them as tasks of two namespaces
    other = Registry(open_store(str(tmp_path / "other")), backbones, adapter_budget_bytes=10 * size)
    other.residency.share = {"team-a": 2 * size}.get  # team-b: no share of its own
    names = ["team-b/x", "team-a/x", "team-a/y", "team-a/z"]
    with other.table.lock:
        for name, loaded in zip(names, loras):
            alias = Alias(name=name, active=loaded.version, updated_at="",
                          versions=[VersionInfo(version=loaded.version, kind=loaded.kind, created_at="")])
            other.residency.install(name, alias, loaded)
    held = [k[0] for k in other.residency.cache]
    assert held == ["team-b/x", "team-a/y", "team-a/z"]  # team-a's least recently used went, not team-b's
    assert other.residency.namespace_bytes()["team-a"] <= 2 * size
    with other.table.lock:
        other.residency.touch(("team-a/y", loras[2].version))
        other.residency.share = {"team-a": size}.get  # a smaller share: fitted at the next fit
        other.residency.fit(keep=None)
    assert [k[0] for k in other.residency.cache] == ["team-b/x", "team-a/y"]
    assert other.table.get("team-a/z").versions[loras[3].version].state == "evicted"


# ---- the batcher: namespaces first, over a real runtime -------------------------------------
class Gated:
    """A real runtime that records each batch's inputs and holds the first batch until
    released, so everything submitted meanwhile is queued together."""

    def __init__(self, runtime):
        self.runtime, self.batches = runtime, []
        self.release, self.started = threading.Event(), threading.Event()

    def run(self, reqs):
        self.batches.append([x for r in reqs for x in r.inputs])
        if len(self.batches) == 1:
            self.started.set()
            self.release.wait(60)
        return self.runtime.run(reqs)


def test_the_batcher_serves_a_namespace_of_one_client_beside_a_namespace_of_eight(
        registry, text_backbone, tmp_path, one_torch_thread):
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h"))
    rt = Runtime(registry)
    a_texts = {c: [f"a{c}{i} the same number of words" for i in range(3)] for c in range(8)}
    b_texts = [f"b{i} the same number of words" for i in range(3)]
    budget = max(estimate(rt.prepare(["h"], [t], "text")).total
                 for t in [*b_texts, *(t for ts in a_texts.values() for t in ts)])
    gated = Gated(rt)
    b = Batcher(gated, max_batch_rows=64, max_wait_ms=0, slice_cost=budget)  # a slice = an input = a batch
    try:
        gate = b.submit(rt.prepare(["h"], ["gate"], "text"), "gate")
        gated.started.wait(60)
        futures = []
        for c, texts in a_texts.items():  # namespace A: eight clients, three inputs each
            req = rt.prepare(["h"], texts, "text")
            futures.append(b.submit(req, f"a-client-{c}", estimate(req), namespace="team-a"))
        req = rt.prepare(["h"], b_texts, "text")  # namespace B: one client, three inputs
        futures.append(b.submit(req, "b-client", estimate(req), namespace="team-b"))
        gated.release.set()
        for f in [gate, *futures]:
            f.result(timeout=120)
    finally:
        b.close()
    order = [x for batch in gated.batches[1:] for x in batch]
    assert sorted(order) == sorted([*b_texts, *(t for ts in a_texts.values() for t in ts)])
    last_b = max(order.index(t) for t in b_texts)
    # B holds half the worker while both wait: its three inputs within the first seven
    # (by clients alone it would be one in nine, its last input near the end of A's 24)
    assert last_b <= 6, order
    assert b.queued_rows == 0


def test_batches_shrink_to_one_grain_while_namespaces_compete(registry, text_backbone, tmp_path,
                                                              one_torch_thread):
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h"))
    rt = Runtime(registry)
    texts = [f"{i} the same number of words here" for i in range(16)]
    one = max(estimate(rt.prepare(["h"], [t], "text")).total for t in texts)

    def batches(namespaces: list[str]) -> list[list[str]]:
        gated = Gated(rt)
        b = Batcher(gated, max_batch_rows=64, max_wait_ms=0, slice_cost=8 * one, slice_split=4)
        try:
            gate = b.submit(rt.prepare(["h"], ["gate"], "text"), "gate", namespace=namespaces[0])
            gated.started.wait(60)
            futures = []
            for k, ns in enumerate(namespaces):
                req = rt.prepare(["h"], texts[8 * k:8 * k + 8], "text")
                futures.append(b.submit(req, f"{ns}-client", estimate(req), namespace=ns))
            gated.release.set()
            for f in [gate, *futures]:
                f.result(timeout=120)
        finally:
            b.close()
        return gated.batches[1:]

    alone = batches(["team-a", "team-a"])  # one namespace: full batches of 8 inputs, as before
    assert [len(x) for x in alone] == [8, 8], alone
    both = batches(["team-a", "team-b"])  # two compete: batches of one grain (2 inputs), turns
    assert [len(x) for x in both] == [2] * 8, both
    owners = ["a" if x[0] in texts[:8] else "b" for x in both]
    # one batch each in turn; team-b first: team-a's gate request was served, team-b is new
    assert owners == ["b", "a"] * 4, both


def test_while_namespaces_compete_a_batch_holds_one_namespace_s_slices(registry, text_backbone, tmp_path,
                                                                         one_torch_thread):
    """A light namespace's batch is its own: no other namespace's slice rides in it, even one
    that would fit the grain, so its batch costs its own work."""
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h"))
    rt = Runtime(registry)
    a_texts = [f"a{i} the same number of words here" for i in range(6)]
    b_texts = ["b0 the same number of words here"]
    one = max(estimate(rt.prepare(["h"], [t], "text")).total for t in a_texts + b_texts)
    gated = Gated(rt)
    b = Batcher(gated, max_batch_rows=64, max_wait_ms=0, slice_cost=8 * one, slice_split=4)  # grain: 2 inputs
    try:
        gate = b.submit(rt.prepare(["h"], ["gate"], "text"), "gate", namespace="team-a")
        gated.started.wait(60)
        futures = []
        for c, text in enumerate(a_texts):  # team-a: six clients of one input each
            req = rt.prepare(["h"], [text], "text")
            futures.append(b.submit(req, f"a{c}", estimate(req), namespace="team-a"))
        req = rt.prepare(["h"], b_texts, "text")
        futures.append(b.submit(req, "b", estimate(req), namespace="team-b"))
        gated.release.set()
        answers = [f.result(timeout=120) for f in [gate, *futures]]
    finally:
        b.close()
    owners = [{x[0] for x in batch} for batch in gated.batches[1:]]
    assert all(len(o) == 1 for o in owners), gated.batches  # never a mixed batch
    assert gated.batches[1] == b_texts  # team-b (new) first and alone, though an 'a' input would fit the grain
    assert sorted(len(x) for x in gated.batches[2:]) == [2, 2, 2]  # team-a's in batches of one grain
    assert [len(a[0].rows) for a in answers[1:]] == [1] * 7


def test_a_namespace_that_sent_work_within_the_window_still_competes(registry):
    """A light namespace pausing longer than a second between requests (a loaded machine) still
    competes: the flood's batches stay one grain until the window after its last request."""
    b = Batcher(Runtime(registry), slice_cost=4096, slice_split=4, competing_window_s=10.0)
    try:
        now = time.monotonic()
        b._last_submit.update({"team-a": now, "team-b": now - 5.0})  # team-b's last request 5 s ago
        assert b._budget() == 1024
        b._last_submit["team-b"] = now - 11.0
        assert b._budget() == 4096 and "team-b" not in b._last_submit
    finally:
        b.close()
