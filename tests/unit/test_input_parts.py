"""One long input cut into parts of whole windows (issue 30, item 1): a long text read by
per-token tasks and a long audio clip run window-run by window-run, between other requests,
and their merged answers equal the unsplit run's to 1e-5 (tiny random backbones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapters.backbones.audio_io import Audio
from adapters.backbones.base import load_backbone
from adapters.backbones.tiny import tiny_backbone_spec
from adapters.batching import Batcher
from adapters.backbones.audio_preprocess import AudioPart
from adapters.backbones.preprocess import TextPart
from adapters.cost import estimate
from adapters.registry import Registry
from adapters.runtime import EmbedSpec, PartFeatures, Runtime
from adapters.store import open_store
from adapters.slices import Parts, cut, merge, settle, slice_with_costs
from support.factories import head_adapter, peft_lora_dir, regression_head
from support.token_factories import peft_token_dir, token_head_adapter

LONG = " ".join(f"word{i % 37} and, the other-thing {i}" for i in range(60))


def token_scores(result) -> list[list[float]]:
    """Every token's label scores of each row, in order: the finest answer there is."""
    return [[s for t in row.tokens for s in t["scores"].values()] for row in result.rows]


def run_sliced(rt: Runtime, req, budget: float, beside=None):
    """``req`` cut as the batcher cuts it, each slice run in a batch of its own (beside
    ``beside``, another client's request, when given), merged as the batcher merges."""
    cost = estimate(req)
    pieces = cut(list(cost.per_input), budget, cost.units)
    slices = slice_with_costs(req, pieces, cost.per_input)
    outs = []
    for s, c in slices:
        assert c <= budget or not s.partial
        batch = [s] if beside is None else [beside, s]
        outs.append(rt.run(batch)[-1])
    return merge(outs, rt.answer), [s for s, _ in slices], pieces


@pytest.fixture
def text_tasks(tmp_path, registry, text_backbone, tiny_dir, one_torch_thread):
    registry.register(token_head_adapter(tmp_path / "t", text_backbone, "t", ["O", "X", "Y"], seed=2))
    registry.register(token_head_adapter(tmp_path / "t2", text_backbone, "t2", ["A", "B"], seed=5, hidden=(8,)))
    registry.register(peft_token_dir(tmp_path / "tl", str(tiny_dir / "text"), num_labels=3, seed=3), name="tl")
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h", seed=1))
    registry.register(peft_lora_dir(tmp_path / "l", str(tiny_dir / "text"), seed=4), name="l")
    return Runtime(registry, max_forward_rows=8, token_budget=256)


def test_a_long_text_tagged_in_parts_equals_the_unsplit_run(text_tasks):
    rt = text_tasks
    texts = ["a short one first", LONG, "x", LONG[:300]]
    req = rt.prepare(["t", "tl", "t2", "h"], texts, "text", embed=EmbedSpec())
    whole = rt.run([req])[0]
    light = rt.prepare(["h"], ["another client's light request"], "text")
    merged, slices, pieces = run_sliced(rt, req, budget=400.0, beside=light)
    parts = [s for s in slices if s.partial]
    assert any(isinstance(p, Parts) for p in pieces)
    assert len({s.inputs[0].lo for s in parts if s.inputs[0] == LONG}) >= 4, "LONG ran in several parts"
    assert all(isinstance(s.inputs[0], TextPart) and s.inputs[0].units < s.inputs[0].total for s in parts)
    assert sum(s.rows for s in slices) == req.rows  # the queue's row count is kept exactly
    assert torch.allclose(merged.embeddings, whole.embeddings, atol=1e-5)
    assert merged.tokens == whole.tokens
    for m, w in zip(merged, whole):
        assert (m.task, m.version) == (w.task, w.version)
        if m.task_type == "token_classification":
            assert [r.words for r in m.rows] == [r.words for r in w.rows] or all(
                [x["label"] for x in a.words] == [x["label"] for x in b.words] for a, b in zip(m.rows, w.rows))
            got, want = token_scores(m), token_scores(w)
            assert [len(x) for x in got] == [len(x) for x in want]
            assert np.allclose(np.concatenate([np.array(x) for x in got]),
                               np.concatenate([np.array(x) for x in want]), atol=1e-5)
            assert [[(t["start"], t["end"]) for t in r.tokens] for r in m.rows] == \
                   [[(t["start"], t["end"]) for t in r.tokens] for r in w.rows]
        else:
            assert [r.label for r in m.rows] == [r.label for r in w.rows]
            assert np.allclose([r.score for r in m.rows], [r.score for r in w.rows], atol=1e-5)


def test_a_text_with_a_pooled_lora_task_is_cut_only_between_inputs(text_tasks):
    """A pooled LoRA row reads window 0 only: a part of the text would run it for nothing,
    so such a request keeps each input whole."""
    rt = text_tasks
    req = rt.prepare(["t", "l"], [LONG, LONG], "text")
    assert estimate(req).units == ()
    merged, slices, _ = run_sliced(rt, req, budget=400.0)
    assert not any(s.partial for s in slices) and len(slices) == 2
    whole = rt.run([req])[0]
    assert np.allclose(np.concatenate([np.array(x) for x in token_scores(merged[0])]),
                       np.concatenate([np.array(x) for x in token_scores(whole[0])]), atol=1e-5)


# ---- audio ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audio_backbone(tmp_path_factory):
    return load_backbone(tiny_backbone_spec("audio", tmp_path_factory.mktemp("tiny-audio") / "a"))


def long_clip(seconds: float, rate: int = 22050, seed: int = 0) -> Audio:
    """Noise and a rising tone whose loudness changes, a near-silent stretch in the middle
    (whose frames the front end clamps at 80 dB below the clip-wide peak, not its own) and a
    loud burst late in the clip (so that peak sits in a late part)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.05 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * (200 + 40 * t) * t) * (1 + np.sin(t))
    x[int(0.8 * len(x)):int(0.82 * len(x))] *= 4
    x[int(0.25 * len(x)):int(0.6 * len(x))] *= 1e-5
    x[:rate // 2] *= 1e-4  # a quiet start: trimming cuts into the clip
    return Audio(np.clip(x, -1, 1).astype(np.float32), rate)


def test_a_long_audio_clip_run_in_parts_equals_the_unsplit_run(tmp_path, audio_backbone, one_torch_thread):
    reg = Registry(open_store(str(tmp_path / "store")), {"audio": audio_backbone})
    reg.sync()
    reg.register(head_adapter(tmp_path / "m", audio_backbone, "m", labels=("a", "b", "c"), seed=1, hidden=(8,)))
    reg.register(head_adapter(tmp_path / "c", audio_backbone, "c", seed=2, pooling="cls"))
    regression_head(tmp_path / "r", audio_backbone, "r", ("v",), seed=3)
    reg.register(tmp_path / "r")
    rt = Runtime(reg)
    clips = [long_clip(0.5, seed=9), long_clip(8.0), long_clip(3.0, rate=16000, seed=4)]
    req = rt.prepare(["m", "c", "r"], clips, "audio", embed=EmbedSpec())
    whole = rt.run([req])[0]
    light = rt.prepare(["m"], [long_clip(1.0, seed=7)], "audio")
    merged, slices, pieces = run_sliced(rt, req, budget=2000.0, beside=light)
    parts = [s.inputs[0] for s in slices if s.partial]
    assert len(parts) >= 4 and all(isinstance(p, AudioPart) for p in parts)
    assert all(p.units * 80 <= 2000.0 for p in parts)  # one plain row per window: 80 token-layers each
    assert sum(p.units for p in parts if p.total == parts[0].total) == parts[0].total
    assert torch.allclose(merged.embeddings, whole.embeddings, atol=1e-5)
    assert whole.embeddings[1].abs().max() > 1e-3  # features are not all zero: the test can fail
    for m, w in zip(merged, whole):
        if m.task_type == "regression":
            assert np.allclose([r.values["v"] for r in m.rows], [r.values["v"] for r in w.rows], atol=1e-5)
        else:
            assert [r.label for r in m.rows] == [r.label for r in w.rows]
            assert np.allclose([list(r.scores.values()) for r in m.rows],
                               [list(r.scores.values()) for r in w.rows], atol=1e-5)


def test_a_part_keeps_features_not_activations(tmp_path, audio_backbone, one_torch_thread):
    reg = Registry(open_store(str(tmp_path / "store")), {"audio": audio_backbone})
    reg.sync()
    reg.register(head_adapter(tmp_path / "m", audio_backbone, "m", seed=1))
    rt = Runtime(reg)
    req = rt.prepare(["m"], [long_clip(8.0)], "audio")
    _, slices, _ = run_sliced(rt, req, budget=1000.0)
    out = rt.run([slices[1]])[0]
    assert isinstance(out, PartFeatures)
    kept = [v for v in out.features.pooled.values()]
    assert out.features.tokens is None and [tuple(v.shape) for v in kept] == [(1, audio_backbone.hidden_size)]


def test_a_clip_the_model_cannot_cut_stays_whole(audio_backbone):
    clip = long_clip(0.5)
    assert audio_backbone.preprocessor.parts(audio_backbone.model, clip, per_part=2) is None


def test_the_batcher_answers_each_input_once_its_parts_ran(text_tasks):
    """Through the batcher: every input's parts are answered as soon as its last part ran
    (their features let go then), and the request's answer is the unsplit one."""
    rt = text_tasks
    texts = [LONG, "between the two", LONG[:400]]
    req = rt.prepare(["t", "tl"], texts, "text")
    whole = rt.run([rt.prepare(["t", "tl"], texts, "text")])[0]
    answered = []

    class Counting:
        def run(self, reqs):
            return rt.run(reqs)

        def answer(self, r, feats):
            answered.append(r.inputs[0])
            return rt.answer(r, feats)

    b = Batcher(Counting(), max_wait_ms=0, slice_cost=400.0)
    try:
        got = b.submit(req, "x", estimate(req)).result(timeout=300)
    finally:
        b.close()
    assert answered == [LONG, LONG[:400]]  # once per cut input, as a whole string
    assert b.queued_rows == 0
    for m, w in zip(got, whole):
        assert np.allclose(np.concatenate([np.array(x) for x in token_scores(m)]),
                           np.concatenate([np.array(x) for x in token_scores(w)]), atol=1e-5)
    assert settle([None], 0, None) is None  # nothing to settle where no part ran
