"""A request whose input breaks the shared forward fails alone: the batcher bisects a failed
batch, so the other requests batched with it get their own, correct answers."""

from __future__ import annotations

import pytest
import torch

from adapters.batching import Batcher
from adapters.runtime import Runtime
from support.factories import head_adapter

POISON = "poison pill"


@pytest.fixture
def runtime(tmp_path, registry, text_backbone, one_torch_thread):
    registry.register(head_adapter(tmp_path / "a", text_backbone, "a", seed=1))
    registry.register(head_adapter(tmp_path / "b", text_backbone, "b", seed=2, labels=("x", "y", "z")))
    return Runtime(registry)


def scores(task_result) -> torch.Tensor:
    return torch.tensor([list(r.scores.values()) for r in task_result.rows])


def test_one_poisoned_request_fails_alone_and_the_others_get_the_right_answers(
        runtime, text_backbone, monkeypatch):
    honest = [(["a"], ["good"]), (["b"], ["a great movie", "fine"]), (["a", "b"], ["boring plot"]),
              (["b"], ["x y z"]), (["a"], ["the end"])]
    alone = [runtime.run([runtime.prepare(t, x, "text")])[0] for t, x in honest]

    # Past validation: the tokenizer itself raises on this input, as it did on a lone surrogate.
    real = text_backbone.preprocess
    batches = []

    def preprocess(inputs):
        batches.append(len(inputs))
        if POISON in inputs:
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return real(inputs)

    monkeypatch.setattr(text_backbone, "preprocess", preprocess)
    batcher = Batcher(runtime, max_batch_rows=64, max_wait_ms=300)
    try:
        reqs = [runtime.prepare(t, x, "text") for t, x in honest]
        reqs.insert(2, runtime.prepare(["a"], ["fine", POISON], "text"))
        futures = [batcher.submit(r) for r in reqs]  # all queued within max_wait: one batch
        with pytest.raises(TypeError, match="TextEncodeInput"):
            futures[2].result(timeout=60)
        got = [f.result(timeout=60) for i, f in enumerate(futures) if i != 2]
    finally:
        batcher.close()
    assert batches[0] == sum(len(r.inputs) for r in reqs), "the first attempt was one shared batch"
    for mine, ref in zip(got, alone):
        assert [r.task for r in mine] == [r.task for r in ref]
        for m, r in zip(mine, ref):
            assert [x.label for x in m.rows] == [x.label for x in r.rows]
            assert torch.allclose(scores(m), scores(r), atol=1e-5)


def test_a_batch_that_fails_for_everyone_fails_each_request_and_the_worker_lives(
        runtime, text_backbone, monkeypatch):
    monkeypatch.setattr(text_backbone, "preprocess", lambda inputs: 1 / 0)
    batcher = Batcher(runtime, max_wait_ms=100)
    try:
        futures = [batcher.submit(runtime.prepare(["a"], ["t"], "text")) for _ in range(3)]
        for f in futures:
            with pytest.raises(ZeroDivisionError):
                f.result(timeout=60)
        monkeypatch.undo()
        assert batcher.submit(runtime.prepare(["a"], ["t"], "text")).result(timeout=60)[0].rows
        assert batcher.queued_rows == 0
    finally:
        batcher.close()


def test_an_item_with_only_rows_is_batched():
    """The batcher needs ``rows`` of an item and nothing else (the raw-backbone bench service
    queues such items); a ``timings`` dict is stamped only where an item has one."""

    class Item:
        def __init__(self, rows: int):
            self.rows = rows

    class Echo:
        def run(self, items):
            return [it.rows for it in items]

    b = Batcher(Echo())
    try:
        assert [b.submit(Item(n)).result(timeout=10) for n in (1, 3)] == [1, 3]
    finally:
        b.close()


def test_requests_queued_behind_a_running_batch_run_next_without_the_wait():
    """``max_wait_ms`` is for an idle worker only: a backlog that gathered while a batch ran
    is taken at once, together (with a one-minute wait, waiting would time the results out)."""
    import threading

    release, batches = threading.Event(), []

    class Blocking:
        def run(self, items):
            batches.append([it.rows for it in items])
            if len(batches) == 1:
                release.wait(30)
            return [it.rows for it in items]

    class Item:
        def __init__(self, rows: int):
            self.rows = rows

    b = Batcher(Blocking(), max_batch_rows=64, max_wait_ms=60_000)
    try:
        first = b.submit(Item(64))  # a full batch: runs at once, then blocks in run()
        while not batches:
            threading.Event().wait(0.01)
        backlog = [b.submit(Item(n)) for n in (1, 2, 3)]
        release.set()
        assert first.result(timeout=30) == 64
        assert [f.result(timeout=30) for f in backlog] == [1, 2, 3]
    finally:
        b.close()
    assert batches == [[64], [1, 2, 3]]
