"""A mixed batch gives the same rows as each task alone, and as PEFT's own model.

Covers every batched path of the runtime: heads stacked per shape group (and the
dominant head run on its own), per-row LoRA with stacked factors (full batch, and the
LoRA rows of a batch that also holds head rows), a single LoRA on merged weights,
1x1-conv LoRA on MobileNetV2, chunked forwards, and the fp16 maths.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
from adapters.heads import Head
from adapters.heads_batched import HeadCall, HeadStacks, run_heads
from adapters.lora import batch as lora_batch
from adapters.lora.batch import LoraBatch, merged_lora
from adapters.lora.weights import LoraModule, LoraWeights
from adapters.runtime import Runtime
from support.factories import head_adapter, peft_lora_dir, peft_seq_cls_model

TEXTS = ["good movie", "the plot was awful and boring", "fun fun fun", "a very sad film",
         "the actor is the best", "not great", "terrible story", "happy"]
TOL = 1e-4


def probs(result) -> torch.Tensor:
    return torch.tensor([list(r.scores.values()) for r in result.rows])


def alone(rt: Runtime, task: str, inputs: list, modality: str = "text") -> torch.Tensor:
    return probs(rt.run([rt.prepare([task], inputs, modality)])[0][0])


def head_with(folder, backbone, name, *, labels=("neg", "pos"), hidden=(), pooling="mean",
              normalize=False, task_type="single_label", seed=0):
    """A head adapter of any shape (the factory has no ``normalize``)."""
    torch.manual_seed(seed)
    spec = HeadSpec(pooling=pooling, input_dim=backbone.hidden_size, hidden=list(hidden),
                    normalize=normalize, activation="gelu" if hidden else "relu")
    head = Head(spec, len(labels))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=2.0)
    m = Manifest(name=name, kind="head", task_type=task_type, labels=list(labels),
                 backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                 head=spec, preprocessing=backbone.preprocessing_settings())
    return write_head_adapter(folder, m, head.state_for_file())


# name, shape; tasks with the same shape are stacked into one block
HEADS = {
    "lin-a": {}, "lin-b": {"seed": 1}, "lin-c": {"seed": 2},
    "lin3-cls": {"labels": ("x", "y", "z"), "pooling": "cls"},
    "lin3-cls-b": {"labels": ("x", "y", "z"), "pooling": "cls", "seed": 3},
    "mlp-a": {"hidden": (8,), "seed": 4}, "mlp-b": {"hidden": (8,), "seed": 5},
    "mlp2": {"hidden": (8, 6), "labels": ("p", "q", "r", "s"), "pooling": "pooler", "seed": 6},
    "norm": {"normalize": True, "seed": 7}, "norm-b": {"normalize": True, "seed": 8},
    "multi": {"labels": ("u", "v", "w"), "task_type": "multi_label", "seed": 9},
    "multi-b": {"labels": ("u", "v", "w"), "task_type": "multi_label", "seed": 10},
}


@pytest.fixture
def heads_rt(tmp_path, registry, text_backbone):
    for name, kw in HEADS.items():
        registry.register(head_with(tmp_path / name, text_backbone, name, **kw))
    return Runtime(registry)


def reference(rt: Runtime, task: str, inputs: list) -> torch.Tensor:
    """The head applied by hand to the backbone's own pooled features."""
    a = rt.registry.resolve(task)
    feats = a.backbone.embed(inputs, a.head.spec.pooling)
    with torch.no_grad():
        z = a.head(feats)
    return torch.sigmoid(z) if a.manifest.task_type == "multi_label" else torch.softmax(z, -1)


def test_mixed_heads_equal_each_task_alone(heads_rt):
    rt = heads_rt
    names = list(HEADS)
    # Many single-row requests over every task (stacked blocks), multi-task requests
    # sharing one trunk row, and one task dominating the batch (run on its own).
    reqs = [rt.prepare([n], [TEXTS[i % len(TEXTS)]], "text") for i, n in enumerate(names)]
    reqs.append(rt.prepare(["mlp2", "lin-a", "multi"], TEXTS[:3], "text"))
    reqs.append(rt.prepare(["lin-b"], TEXTS * 3, "text"))
    mixed = rt.run(reqs)
    assert len(mixed) == len(reqs)
    for req, results in zip(reqs, mixed):
        assert [r.task for r in results] == [a.name for a in req.adapters]
        for a, res in zip(req.adapters, results):
            got = probs(res)
            assert torch.allclose(got, alone(rt, a.name, req.inputs), atol=TOL), a.name
            assert torch.allclose(got, reference(rt, a.name, req.inputs), atol=TOL), a.name
            want = [a.labels[i] for i in reference(rt, a.name, req.inputs).argmax(-1).tolist()]
            assert [r.label for r in res.rows] == want


def test_multi_label_rows_list_labels_over_threshold(heads_rt):
    res = heads_rt.run([heads_rt.prepare(["multi", "multi-b"], TEXTS, "text")])[0]
    for task in res:
        for row in task.rows:
            assert row.labels == [k for k, v in row.scores.items() if v >= 0.5]


def test_run_heads_stacks_same_shape_heads(text_backbone):
    """Direct check of the grouping: same-shape heads share one block, results in call order."""
    spec = HeadSpec(pooling="mean", input_dim=text_backbone.hidden_size, hidden=[5])
    heads = []
    for seed in range(4):
        torch.manual_seed(seed)
        heads.append(Head(spec, 3).eval())
    other = Head(HeadSpec(pooling="mean", input_dim=text_backbone.hidden_size), 2).eval()
    feats = {"mean": torch.randn(10, text_backbone.hidden_size)}
    calls = [HeadCall(heads[0], False, [0, 1]), HeadCall(other, True, [2]),
             HeadCall(heads[1], False, [3]), HeadCall(heads[2], False, [4, 5, 6]),
             HeadCall(heads[0], False, [7]), HeadCall(heads[3], False, [8, 9])]
    cache = HeadStacks()
    out = run_heads(calls, feats, cache)
    assert len(cache) == 1  # the four same-shape heads: one stacked block
    for c, p in zip(calls, out):
        with torch.no_grad():
            z = c.head(feats["mean"][c.rows])
        want = torch.sigmoid(z) if c.multi_label else torch.softmax(z, -1)
        assert p.shape == want.shape and torch.allclose(p, want, atol=1e-6)


# ---- LoRA ------------------------------------------------------------------------------
@pytest.fixture
def lora_rt(tmp_path, registry, text_backbone):
    src = str(text_backbone.source_path)
    # ranks differ (zero-padded in one stack); one adapts key/value, not query
    kinds = {"l2": dict(r=2), "l4": dict(r=4), "l8": dict(r=8),
             "lkv": dict(r=4, targets=("key", "value"))}
    for i, (name, kw) in enumerate(kinds.items()):
        registry.register(peft_lora_dir(tmp_path / name, src, seed=10 + i, **kw), name=name,
                          labels=["neg", "pos"])
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h"))
    registry.register(head_adapter(tmp_path / "h3", text_backbone, "h3", labels=("a", "b", "c"),
                                   hidden=(8,), seed=2))
    return Runtime(registry), kinds


def peft_reference(text_backbone, seed, inputs, **kw) -> torch.Tensor:
    model = peft_seq_cls_model(str(text_backbone.source_path), seed=seed, **kw)
    with torch.no_grad():
        return torch.softmax(model(**text_backbone.preprocess(inputs)).logits, -1)


def check_mixed(rt, reqs, refs):
    mixed = rt.run(reqs)
    for req, results in zip(reqs, mixed):
        for a, res in zip(req.adapters, results):
            got = probs(res)
            assert torch.allclose(got, alone(rt, a.name, req.inputs), atol=TOL), a.name
            if a.name in refs:
                assert torch.allclose(got, refs[a.name](req.inputs), atol=TOL), a.name


def test_mixed_lora_batch_equals_alone_and_peft(lora_rt, text_backbone):
    rt, kinds = lora_rt
    refs = {name: (lambda inputs, s=10 + i, kw=kw: peft_reference(text_backbone, s, inputs, **kw))
            for i, (name, kw) in enumerate(kinds.items())}
    # every row a LoRA row, four adapters interleaved (the full-batch stacked path)
    reqs = [rt.prepare([list(kinds)[i % 4]], [t], "text") for i, t in enumerate(TEXTS)]
    check_mixed(rt, reqs, refs)
    # LoRA rows next to head rows in one pass (the subset path), several tasks per request
    reqs = [rt.prepare(["h", "l2", "l8"], TEXTS[:3], "text"), rt.prepare(["lkv", "h3"], TEXTS[3:], "text"),
            rt.prepare(["l4"], TEXTS[:1], "text"), rt.prepare(["h"], TEXTS[5:], "text")]
    check_mixed(rt, reqs, refs)


def test_single_lora_pass_uses_merged_weights_and_restores_them(lora_rt, text_backbone):
    rt, _ = lora_rt
    model = text_backbone.model
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    ref = peft_reference(text_backbone, 12, TEXTS, r=8)  # "l8" is the third adapter: seed 12
    lora_batch.MERGED.clear()
    got = alone(rt, "l8", TEXTS)  # every row the same adapter: the merged path
    assert len(lora_batch.MERGED) == 1
    assert torch.allclose(got, ref, atol=TOL)
    for n, p in model.named_parameters():  # the very same parameters, bit for bit
        assert p is before[n][0] and torch.equal(p, before[n][1]), n
    # an exception inside the pass still puts the weights back
    lora = rt.registry.resolve("l8").lora
    with pytest.raises(RuntimeError, match="boom"):
        with text_backbone.lock, merged_lora(model, lora):
            assert any(p is not before[n][0] for n, p in model.named_parameters())
            raise RuntimeError("boom")
    for n, p in model.named_parameters():
        assert p is before[n][0] and torch.equal(p, before[n][1]), n


def test_stacks_are_reused_and_chunking_changes_nothing(lora_rt):
    rt, kinds = lora_rt
    reqs = lambda: [rt.prepare([list(kinds)[i % 3]], [t], "text") for i, t in enumerate(TEXTS)]  # noqa: E731
    lora_batch.LORA_STACKS.clear()
    first = [probs(r[0]) for r in rt.run(reqs())]
    hits = lora_batch.LORA_STACKS.hits
    second = [probs(r[0]) for r in rt.run(reqs())]
    assert lora_batch.LORA_STACKS.hits > hits  # same adapter set: the stacks were not rebuilt
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    small = Runtime(rt.registry, max_forward_rows=3)  # several trunk passes per batch
    chunked = [probs(r[0]) for r in small.run(reqs())]
    assert all(torch.allclose(a, b, atol=TOL) for a, b in zip(first, chunked))


@pytest.fixture(scope="module")
def lively_vision(tmp_path_factory):
    """The tiny MobileNetV2 with its batch-norm statistics calibrated on random images.

    Freshly initialised, the shared tiny vision backbone shrinks activations ~10x per
    stage, so its pooled output is the same (~1e-26) for every image and could not tell
    one row from another; calibrated statistics keep every layer at unit scale.
    """
    from transformers import MobileNetV2ImageProcessor

    from adapters.backbones.base import BackboneSpec, load_backbone
    from adapters.backbones.tiny import tiny_vision_model

    folder = tmp_path_factory.mktemp("lively-vision")
    model = tiny_vision_model(seed=1).train()
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32))
    model.eval().save_pretrained(folder)
    MobileNetV2ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                              ).save_pretrained(folder)
    return load_backbone(BackboneSpec("vision", str(folder), image_size=32))


def noise_images(n: int, seed: int = 0) -> list:
    import numpy as np
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_mixed_conv_lora_on_mobilenet_equals_alone_and_peft(tmp_path, lively_vision):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification

    from adapters.registry import Registry
    from adapters.store import open_store

    registry = Registry(open_store(str(tmp_path / "store")), {"vision": lively_vision})
    src = str(lively_vision.source_path)
    models = {}
    for i, (name, part) in enumerate([("va", "expand_1x1"), ("vb", "reduce_1x1"), ("vc", "expand_1x1")]):
        torch.manual_seed(20 + i)
        base = AutoModelForImageClassification.from_pretrained(src, num_labels=3)
        targets = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Conv2d)
                   and m.kernel_size == (1, 1) and m.groups == 1 and part in n]
        model = get_peft_model(base, LoraConfig(r=2 + 2 * i, lora_alpha=8, target_modules=targets,
                                                modules_to_save=["classifier"]))
        with torch.no_grad():  # scales that keep the softmax unsaturated on unit-scale features
            for n, p in model.named_parameters():
                if "lora_" in n:
                    p.normal_(0, 0.1)
                elif "classifier" in n:
                    p.normal_(0, 0.05)
        model.eval().save_pretrained(tmp_path / name)
        registry.register(tmp_path / name, name=name, labels=["x", "y", "z"])
        models[name] = model
    registry.register(head_adapter(tmp_path / "vh", lively_vision, "vh"))
    rt = Runtime(registry)
    images = noise_images(5)

    def peft_ref(name, inputs):
        with torch.no_grad():
            pix = lively_vision.preprocess(inputs)["pixel_values"]
            return torch.softmax(models[name](pixel_values=pix).logits, -1)

    for name in models:  # rows and adapters really differ, so a mix-up would show
        ref = peft_ref(name, images)
        assert (ref - ref[0]).abs().max() > 1e-2 and ref.max() < 0.999, (name, ref)
    assert (peft_ref("va", images) - peft_ref("vb", images)).abs().max() > 1e-2
    lora_rows = [rt.prepare([["va", "vb", "vc"][i % 3]], [im], "image") for i, im in enumerate(images)]
    with_heads = lora_rows + [rt.prepare(["vh", "vb"], images[:2], "image")]
    for reqs in (lora_rows, with_heads):  # every row a LoRA row; LoRA rows beside head rows
        for req, results in zip(reqs, rt.run(reqs)):
            for a, res in zip(req.adapters, results):
                got = probs(res)
                assert torch.allclose(got, alone(rt, a.name, req.inputs, "image"), atol=TOL), a.name
                if a.name in models:
                    assert torch.allclose(got, peft_ref(a.name, req.inputs), atol=TOL), a.name


def _random_lora(names, r, d_in, d_out, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return LoraWeights({n: LoraModule(torch.randn(r, d_in, generator=g).to(dtype),
                                      torch.randn(d_out, r, generator=g).to(dtype)) for n in names}, {})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_per_row_delta_matches_each_adapter(dtype):
    """The gathered maths, row by row, equals ``x @ A.T @ B.T`` of that row's adapter (fp16 too)."""
    a, b = _random_lora(["m"], 2, 6, 5, 0, dtype), _random_lora(["m"], 4, 6, 5, 1, dtype)
    slots = torch.tensor([1, 0, 2, 2, 1])  # slot 0: no LoRA on that row
    x = torch.randn(5, 3, 6).to(dtype)  # [rows, tokens, in]
    lb = LoraBatch([a, b], slots, cache=lora_batch.LoraStacks())
    out = torch.randn(5, 3, 5).to(dtype)
    got = lb.apply("m", x, out.clone()).float()
    for i, s in enumerate(slots.tolist()):
        want = out[i].float()
        if s:
            m = [a, b][s - 1].modules["m"]
            want = want + (x[i].float() @ m.A.float().T) @ m.B.float().T
        assert torch.allclose(got[i], want, atol=2e-2 if dtype == torch.float16 else 1e-5)
    assert lb.delta("other", x) is None  # a module no adapter touches adds nothing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("slots", [[1, 2, 2, 1], [1, 0, 2, 0]], ids=["every-row", "with-plain-rows"])
def test_per_row_conv_delta_matches_each_adapter(dtype, slots):
    """1x1 conv: each row's delta is ``B @ A`` over its channels at every pixel (fp16 too),
    both in place (every row adapted) and scattered (rows without LoRA in between)."""
    a, b = _random_lora(["c"], 2, 6, 5, 2, dtype), _random_lora(["c"], 3, 6, 5, 3, dtype)
    slots = torch.tensor(slots)
    x = torch.randn(4, 6, 3, 2).to(dtype)  # [rows, in channels, h, w]
    out = torch.randn(4, 5, 3, 2).to(dtype)  # [rows, out channels, h, w]
    lb = LoraBatch([a, b], slots, cache=lora_batch.LoraStacks())
    got = lb.apply("c", x, out.clone(), conv=True).float()
    for i, s in enumerate(slots.tolist()):
        want = out[i].float()
        if s:
            m = [a, b][s - 1].modules["c"]
            want = want + torch.einsum("or,ri,ihw->ohw", m.B.float(), m.A.float(), x[i].float())
        assert torch.allclose(got[i], want, atol=2e-2 if dtype == torch.float16 else 1e-5), (i, s)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_on_cuda_matches_fp32(tmp_path, text_backbone):
    from adapters.backbones.base import BackboneSpec, load_backbone
    from adapters.registry import Registry
    from adapters.store import open_store

    spec = text_backbone.spec
    outs = {}
    for half in (False, True):
        bb = load_backbone(BackboneSpec(spec.name, spec.source, spec.max_length, device="cuda", half=half))
        reg = Registry(open_store(str(tmp_path / f"store-{half}")), {bb.name: bb})
        reg.register(head_adapter(tmp_path / "h", bb, "h"))
        for i in range(2):
            reg.register(peft_lora_dir(tmp_path / f"l{i}", spec.source, seed=i), name=f"l{i}",
                         labels=["neg", "pos"])
        rt = Runtime(reg)
        res = rt.run([rt.prepare(["h", "l0"], TEXTS[:4], "text"), rt.prepare(["l1"], TEXTS[4:], "text")])
        outs[half] = [probs(t) for r in res for t in r]
    for a, b in zip(outs[False], outs[True]):
        assert torch.allclose(a, b, atol=2e-2)
