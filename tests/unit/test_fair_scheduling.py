"""Cost-bounded, fair scheduling (issue 30, item 1): the fair queue's order, the cost
estimate, slicing that never changes an answer, and a light request overtaking a heavy one
in the batcher. Orders only: no clock is read by any assertion."""

from __future__ import annotations

import threading

import pytest
import torch

from adapters.batching import Batcher
from adapters.cost import estimate
from adapters.fair_queue import FairQueue
from adapters.runtime import EmbedSpec, Runtime
from adapters.slices import cut, merge, slice_request
from support.factories import head_adapter, peft_lora_dir
from support.token_factories import token_head_adapter

LONG = "the plot of this movie was long and slow and nobody in the room stayed awake " * 12


# ---- the fair queue's order ---------------------------------------------------------------
def drain(q: FairQueue) -> list:
    return [q.pop() for _ in range(len(q))]


def test_a_light_request_overtakes_every_waiting_slice_of_a_heavy_one():
    q = FairQueue()
    for i in range(5):
        q.push("heavy", 10.0, f"h{i}")
    assert q.pop() == "h0"  # in service
    q.push("light", 1.0, "l0")
    assert drain(q) == ["l0", "h1", "h2", "h3", "h4"]


def test_clients_with_work_waiting_share_by_cost_not_by_count():
    q = FairQueue()
    for i in range(4):
        q.push("big", 4.0, f"b{i}")
    for i in range(8):
        q.push("small", 1.0, f"s{i}")
    # start tags: big 0, 4, 8, 12; small 0..7: per unit of cost, small gets as much as big
    assert drain(q) == ["b0", "s0", "s1", "s2", "s3", "b1", "s4", "s5", "s6", "s7", "b2", "b3"]


def test_ties_keep_push_order_and_an_idle_queue_starts_afresh():
    q = FairQueue()
    assert [q.push(c, 1.0, c) for c in "abc"] == [0.0, 0.0, 0.0]
    assert drain(q) == ["a", "b", "c"]
    assert q.push("a", 5.0, "a2") == 0.0  # no debt carried over from before the queue emptied
    with pytest.raises(ValueError):
        q.push("a", -1.0, "bad")


def test_a_client_that_was_idle_starts_at_the_virtual_time_not_with_saved_credit():
    q = FairQueue()
    for i in range(6):
        q.push("busy", 1.0, f"b{i}")
    assert [q.pop() for _ in range(4)] == ["b0", "b1", "b2", "b3"]
    # late starts at 3 (the virtual time), not at 0: no burst of saved credit (tags 0, 2
    # would put both of its items before b4)
    assert [q.push("late", 2.0, f"l{i}") for i in range(2)] == [3.0, 5.0]
    assert drain(q) == ["l0", "b4", "b5", "l1"]


def test_cut_keeps_each_slice_within_the_budget_unless_one_input_alone_exceeds_it():
    assert cut([3.0] * 7, 10.0) == [range(0, 3), range(3, 6), range(6, 7)]
    assert cut([50.0, 1.0, 1.0], 10.0) == [range(0, 1), range(1, 3)]
    assert cut([], 10.0) == []
    with pytest.raises(ValueError):
        cut([1.0], 0)


def same(a, b) -> bool:
    """Two answers equal up to float rounding (a slice is padded differently from the whole)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, abs=1e-4)
    if isinstance(a, dict) or hasattr(a, "fields"):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a.keys())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ---- the cost estimate ------------------------------------------------------------------
@pytest.fixture
def tasks(tmp_path, registry, text_backbone, tiny_dir, one_torch_thread):
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h", seed=1))
    registry.register(token_head_adapter(tmp_path / "t", text_backbone, "t", ["O", "X", "Y"], seed=2))
    registry.register(peft_lora_dir(tmp_path / "l4", str(tiny_dir / "text"), seed=3, r=4), name="l4")
    registry.register(peft_lora_dir(tmp_path / "l32", str(tiny_dir / "text"), seed=4, r=32), name="l32")
    return Runtime(registry, max_forward_rows=8, token_budget=256)


def test_cost_grows_with_length_windows_lora_rank_and_tasks(tasks):
    rt = tasks
    short = estimate(rt.prepare(["h"], ["fine"], "text"))
    long_pooled = estimate(rt.prepare(["h"], [LONG], "text"))
    long_tagged = estimate(rt.prepare(["t"], [LONG], "text"))
    assert short.total < long_pooled.total < long_tagged.total  # pooled rows are truncated; tags read every window
    assert short.windows == long_pooled.windows == 0 and long_tagged.windows > 1
    lo = estimate(rt.prepare(["l4"], ["fine"] * 3, "text"))
    hi = estimate(rt.prepare(["l32"], ["fine"] * 3, "text"))
    both = estimate(rt.prepare(["h", "l4", "l32"], ["fine"] * 3, "text"))
    assert short.per_input[0] < lo.per_input[0] < hi.per_input[0]
    assert both.total == pytest.approx(3 * short.total + lo.total + hi.total)
    assert len(both.per_input) == 3 and both.audio_seconds == 0.0


# ---- slicing never changes an answer --------------------------------------------------------
def test_sliced_answers_equal_the_whole_request_answers(tasks):
    rt = tasks
    texts = [LONG, "short one", "another fairly short text", LONG[:150], "x"]
    req = rt.prepare(["h", "t", "l4"], texts, "text", embed=EmbedSpec(normalize=True))
    whole = rt.run([req])[0]
    parts = slice_request(req, [range(0, 1), range(1, 3), range(3, 5)])
    assert sum(p.rows for p in parts) == req.rows  # the queue's row count is kept exactly
    merged = merge([rt.run([p])[0] for p in parts])
    assert torch.allclose(merged.embeddings, whole.embeddings, atol=1e-5)
    assert merged.tokens == whole.tokens
    for m, w in zip(merged, whole):
        assert (m.task, m.version, len(m.rows)) == (w.task, w.version, len(w.rows))
        assert same(m.rows, w.rows), (m.task, m.rows, w.rows)


# ---- the batcher interleaves ----------------------------------------------------------------
class Recording:
    """A runtime that records which slices ran in each batch, and holds the first batch
    until released (so everything submitted meanwhile is queued together)."""

    def __init__(self, runtime: Runtime):
        self.runtime, self.batches, self.release, self.started = runtime, [], threading.Event(), threading.Event()

    def answer(self, req, features):
        return self.runtime.answer(req, features)

    def run(self, reqs):
        self.batches.append([(r.inputs[0], len(r.inputs)) for r in reqs])
        if len(self.batches) == 1:
            self.started.set()
            self.release.wait(60)
        return self.runtime.run(reqs)


def test_a_light_request_finishes_after_one_heavy_slice_not_after_the_heavy_request(tasks):
    rt = tasks
    rec = Recording(rt)
    b = Batcher(rec, max_batch_rows=64, max_wait_ms=0, slice_cost=2000.0)
    heavy_texts = [f"{i} {LONG}" for i in range(12)]
    heavy = rt.prepare(["t"], heavy_texts, "text")
    light = rt.prepare(["h"], ["a light request"], "text")
    alone = rt.run([rt.prepare(["t"], heavy_texts, "text")])[0]
    try:
        gate = b.submit(rt.prepare(["h"], ["gate"], "text"), "gate", estimate(rt.prepare(["h"], ["gate"], "text")))
        rec.started.wait(60)
        done = []
        f_heavy = b.submit(heavy, "heavy", estimate(heavy))
        f_light = b.submit(light, "light", estimate(light))
        f_heavy.add_done_callback(lambda _: done.append("heavy"))
        f_light.add_done_callback(lambda _: done.append("light"))
        rec.release.set()
        got = f_heavy.result(timeout=120)
        f_light.result(timeout=120)
        gate.result(timeout=120)
    finally:
        b.close()
    assert done == ["light", "heavy"]
    first_light = next(i for i, batch in enumerate(rec.batches) if ("a light request", 1) in batch)
    heavy_batches = [i for i, batch in enumerate(rec.batches) if any(x.endswith(LONG) for x, _ in batch)]
    assert len(heavy_batches) > 2, "the heavy request ran in several slices"
    assert first_light <= heavy_batches[0] + 1 < heavy_batches[-1], rec.batches
    assert same(got[0].rows, alone[0].rows)  # the heavy answer is the unsliced one
    assert b.queued_rows == 0


def test_a_failed_slice_fails_its_request_once_and_drops_the_rest(tasks, text_backbone, monkeypatch):
    rt = tasks
    calls = []
    real = text_backbone.preprocess

    def preprocess(inputs):
        calls.append(list(inputs))
        if any("poison" in x for x in inputs):
            raise TypeError("broken input")
        return real(inputs)

    monkeypatch.setattr(text_backbone, "preprocess", preprocess)
    b = Batcher(rt, max_wait_ms=0, slice_cost=1.0)  # every input a slice of its own
    try:
        req = rt.prepare(["h"], ["poison", "b", "c", "d"], "text")
        with pytest.raises(TypeError):
            b.submit(req, "x", estimate(req)).result(timeout=60)
        ok = rt.prepare(["h"], ["fine"], "text")
        assert b.submit(ok, "y", estimate(ok)).result(timeout=60)[0].rows
    finally:
        b.close()
    assert b.queued_rows == 0
