"""Preemption between trunk blocks: a batch parked after a block, while another batch runs
on the same shared model, then resumed, answers exactly what it answers unpreempted (1e-5),
for every kind that rides in a batch (heads, per-row LoRA rows, one LoRA on its merged
weights, top layers, a shared adaptation with its riders, embeddings, token tasks) on the
text and the image backbone; and the batch run while it was parked answers what it answers
alone. The batcher parks a batch only for another namespace's owed slice, at most
``max_parked`` deep, and never with one namespace alone."""

from __future__ import annotations

import threading

import pytest
import torch

from adapters.batching import Batcher
from adapters.kinds.layouts import LAYOUTS
from adapters.runtime import EmbedSpec, Runtime
from support.factories import head_adapter, peft_lora_dir
from support.multitask_factories import multitask_task_dir, shared_lora_dir
from support.token_factories import token_head_adapter
from support.top_layers_helpers import top_layers_adapter

TEXTS = ["good movie", "the plot was awful and boring", "fun fun fun", "a very sad film",
         "the actor is the best", "not great"]
TOL = 1e-5


def flat(results) -> list[torch.Tensor]:
    """Every number of a list of Results: per task its rows' scores / values / token scores,
    plus the embeddings."""
    out = []
    for res in results:
        for tr in res:
            for row in tr.rows:
                for key in ("scores", "values"):
                    if row[key] if key in row.keys() else None:
                        out.append(torch.tensor(list(row[key].values()), dtype=torch.float64))
                for tok in (row["tokens"] if "tokens" in row.keys() else None) or []:
                    out.append(torch.tensor(list(tok["scores"].values()), dtype=torch.float64))
        if res.embeddings is not None:
            out.append(res.embeddings.double())
    return out


def assert_same(a, b) -> None:
    fa, fb = flat(a), flat(b)
    assert len(fa) == len(fb) and fa
    for x, y in zip(fa, fb):
        torch.testing.assert_close(x, y, atol=TOL, rtol=0)


class InterloperPause:
    """Always due: each time, another real batch runs on the same runtime (its kinds change
    the shared model), as the batcher's preemption does."""

    def __init__(self, rt: Runtime, make):
        self.rt, self.make, self.runs, self.answers = rt, make, 0, []

    def due(self) -> bool:
        return True

    def run(self) -> None:
        self.runs += 1
        self.answers.append(self.rt.run(self.make()))


@pytest.fixture
def text_rt(tmp_path, registry, text_backbone, one_torch_thread):
    bb, reg = text_backbone, registry
    reg.register(head_adapter(tmp_path / "head", bb, "head", seed=1))
    for i in (1, 2):
        reg.register(peft_lora_dir(tmp_path / f"lora{i}", str(bb.source_path), seed=i + 1),
                     name=f"lora{i}", labels=["neg", "pos"])
    reg.register(top_layers_adapter(tmp_path / "top1", bb, "top1", 1, 11))
    base = reg.register(shared_lora_dir(tmp_path / "base", bb, "base", seed=3))
    reg.register(multitask_task_dir(tmp_path / "rider", bb, "rider", "base", base.version,
                                    ("obj", "subj"), seed=20))
    reg.register(token_head_adapter(tmp_path / "tok", bb, "tok", ["O", "B-X", "I-X"], seed=5))
    return Runtime(reg)


TEXT_CASES = {
    "heads, LoRA rows, a shared adaptation, embeddings": lambda rt: [
        rt.prepare(["head", "lora1", "lora2", "rider"], TEXTS, "text", embed=EmbedSpec()),
        rt.prepare(["lora2"], TEXTS[:3], "text")],
    "one LoRA on every row (merged weights)": lambda rt: [rt.prepare(["lora1"], TEXTS, "text")],
    "top layers beside a head and LoRA (piecewise)": lambda rt: [
        rt.prepare(["top1", "head", "lora1"], TEXTS, "text")],
    "token task beside a pooled head": lambda rt: [rt.prepare(["tok", "head"], TEXTS, "text")],
}
# what runs while the batch is parked: LoRA on per-row deltas, another on merged weights
INTERLOPERS = {"per-row LoRA and top layers": lambda rt: [rt.prepare(["lora2", "top1"], TEXTS[::-1], "text")],
               "one merged LoRA": lambda rt: [rt.prepare(["lora1"], TEXTS[1:], "text")]}


@pytest.mark.parametrize("case", list(TEXT_CASES))
@pytest.mark.parametrize("interloper", list(INTERLOPERS))
def test_a_parked_and_resumed_text_batch_answers_as_unpreempted(text_rt, text_backbone, case, interloper):
    rt, make, other = text_rt, TEXT_CASES[case], INTERLOPERS[interloper]
    before = {k: v.clone() for k, v in text_backbone.model.state_dict().items()}
    whole = rt.run(make(rt))
    alone = rt.run(other(rt))
    pause = InterloperPause(rt, lambda: other(rt))
    parked = rt.run(make(rt), pause=pause)
    assert pause.runs >= 1  # it really was parked (the tiny BERT has 2 blocks)
    assert_same(parked, whole)
    for ans in pause.answers:
        assert_same(ans, alone)
    after = text_backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # merged weights undone


def test_chunks_pause_between_blocks_and_between_chunks(text_rt):
    rt = text_rt
    make = TEXT_CASES["heads, LoRA rows, a shared adaptation, embeddings"]
    whole = rt.run(make(rt))
    rt.max_forward_rows = 4  # several chunks
    pause = InterloperPause(rt, lambda: INTERLOPERS["one merged LoRA"](rt))
    assert_same(rt.run(make(rt), pause=pause), whole)
    blocks = len(text_rt.lookup.backbones["text"].model.encoder.layer)
    chunks = -(-sum(r.rows for r in make(rt)) // 4)
    assert pause.runs >= chunks * (blocks - 1) + (chunks - 1)


def noise_images(n: int, seed: int = 0) -> list:
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def test_a_parked_and_resumed_image_batch_answers_as_unpreempted(tmp_path, registry, vision_backbone,
                                                                 one_torch_thread):
    bb = vision_backbone
    assert bb.model_type in LAYOUTS
    registry.register(head_adapter(tmp_path / "vh", bb, "vh", seed=3))
    registry.register(top_layers_adapter(tmp_path / "v1", bb, "v1", 1, 21, pooling="mean"))
    rt, imgs = Runtime(registry), noise_images(4)
    for tasks in (["vh"], ["v1", "vh"]):
        make = (lambda t=tasks: [rt.prepare(t, imgs, "image", embed=EmbedSpec())])
        other = (lambda: [rt.prepare(["v1"], imgs[::-1], "image")])
        whole, alone = rt.run(make()), rt.run(other())
        pause = InterloperPause(rt, other)
        parked = rt.run(make(), pause=pause)
        assert pause.runs >= len(bb.model.layer) - 1
        assert_same(parked, whole)
        for ans in pause.answers:
            assert_same(ans, alone)


# ---- the batcher: when a running batch parks ---------------------------------------------
class GatedRuntime:
    """A real runtime whose first batch waits at its first pause until the test has queued
    more work, so what happens there is decided by the queue alone (no clocks)."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.at_pause = threading.Event()
        self.go = threading.Event()
        self.log: list[tuple[str, tuple]] = []  # ("start" | "end", tasks of the batch's requests)
        self.pauses = 0

    def answer(self, req, features):
        return self.rt.answer(req, features)

    def run(self, reqs, pause=None):
        names = tuple(a.name for r in reqs for a in r.adapters)
        self.log.append(("start", names))
        gate = self

        class Gate:
            def due(self):
                if not gate.at_pause.is_set():
                    gate.at_pause.set()
                    assert gate.go.wait(30)
                gate.pauses += 1
                return pause is not None and pause.due()

            def run(self):
                pause.run()

        out = self.rt.run(reqs, pause=Gate())
        self.log.append(("end", names))
        return out


@pytest.fixture
def ns_rt(tmp_path, registry, text_backbone, one_torch_thread):
    registry.register(head_adapter(tmp_path / "a", text_backbone, "team-a/x", seed=1))
    registry.register(head_adapter(tmp_path / "b", text_backbone, "team-b/y", seed=2))
    return Runtime(registry)


def test_another_namespace_s_slice_runs_inside_the_parked_batch(ns_rt):
    rt = ns_rt
    gated = GatedRuntime(rt)
    b = Batcher(gated, max_wait_ms=0, preempt=True)
    try:
        a1 = b.submit(rt.prepare(["team-a/x"], TEXTS, "text"), "a", namespace="team-a")
        assert gated.at_pause.wait(30)
        a2 = b.submit(rt.prepare(["team-a/x"], TEXTS[:2], "text"), "a", namespace="team-a")
        b1 = b.submit(rt.prepare(["team-b/y"], TEXTS[:1], "text"), "b", namespace="team-b")
        gated.go.set()
        want_a = rt.run([rt.prepare(["team-a/x"], TEXTS, "text")])[0]
        want_b = rt.run([rt.prepare(["team-b/y"], TEXTS[:1], "text")])[0]
        assert_same([a1.result(30)], [want_a])
        assert_same([b1.result(30)], [want_b])
        a2.result(30)
    finally:
        b.close()
    # B's batch started and ended inside A's first batch; A's second came after
    assert gated.log[:4] == [("start", ("team-a/x",)), ("start", ("team-b/y",)), ("end", ("team-b/y",)),
                             ("end", ("team-a/x",))]
    assert gated.log[4:] == [("start", ("team-a/x",)), ("end", ("team-a/x",))]
    assert b.preemptions == 1


@pytest.mark.parametrize("preempt", [True, False])
def test_one_namespace_alone_or_preemption_off_never_parks(ns_rt, preempt):
    rt = ns_rt
    gated = GatedRuntime(rt)
    b = Batcher(gated, max_wait_ms=0, preempt=preempt)
    try:
        first = b.submit(rt.prepare(["team-a/x"], TEXTS, "text"), "a", namespace="team-a")
        assert gated.at_pause.wait(30)
        more = [b.submit(rt.prepare(["team-a/x"], TEXTS[:2], "text"), f"a{i}", namespace="team-a")
                for i in range(3)]
        if not preempt:
            more.append(b.submit(rt.prepare(["team-b/y"], TEXTS[:1], "text"), "b", namespace="team-b"))
        gated.go.set()
        for f in [first, *more]:
            f.result(30)
    finally:
        b.close()
    assert b.preemptions == 0
    starts = [e for e in gated.log if e[0] == "start"]
    ends = [e for e in gated.log if e[0] == "end"]
    assert gated.log == [x for pair in zip(starts, ends) for x in pair]  # one batch after another


def test_at_most_max_parked_batches_wait(ns_rt, tmp_path, registry, text_backbone):
    """Three namespaces: A's batch parks for B's; B's batch, run while A's is parked, is not
    preemptible (max_parked 1), so C's slice waits for it and for A's to end."""
    rt = ns_rt
    registry.register(head_adapter(tmp_path / "c", text_backbone, "team-c/z", seed=4))
    gated = GatedRuntime(rt)
    b = Batcher(gated, max_wait_ms=0, preempt=True, max_parked=1)
    try:
        a1 = b.submit(rt.prepare(["team-a/x"], TEXTS, "text"), "a", namespace="team-a")
        assert gated.at_pause.wait(30)
        b1 = b.submit(rt.prepare(["team-b/y"], TEXTS[:1], "text"), "b", namespace="team-b")
        c1 = b.submit(rt.prepare(["team-c/z"], TEXTS[:1], "text"), "c", namespace="team-c")
        gated.go.set()
        for f in (a1, b1, c1):
            f.result(30)
    finally:
        b.close()
    depth, deepest = 0, 0
    for ev, _ in gated.log:
        depth += 1 if ev == "start" else -1
        deepest = max(deepest, depth)
    assert deepest == 2  # A parked, one batch inside it, never two
    assert b.preemptions >= 1
