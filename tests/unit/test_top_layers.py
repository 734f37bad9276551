"""``top_layers`` adapters: every row equals the task's own fine-tuned model run alone, in
mixed batches with heads, LoRA and other k; registration refuses what does not fit, from
headers; resident copies live in the LRU (eviction, pinning, reload)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from adapters.errors import IncompatibleAdapter, InvalidAdapter
from adapters.kinds.top_layers import WEIGHTS_FILE
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.factories import head_adapter, peft_lora_dir, peft_seq_cls_model
from support.top_layers_helpers import reference_probs, top_layers_adapter

TEXTS = ["good movie", "the plot was awful and boring", "fun fun fun", "a very sad film",
         "the actor is the best", "not great"]
TOL = 1e-5


def probs(result) -> torch.Tensor:
    return torch.tensor([list(r.scores.values()) for r in result.rows])


@pytest.fixture
def text_rt(tmp_path, registry, text_backbone, one_torch_thread):
    bb = text_backbone
    tops = {"top1": (1, 11), "top1b": (1, 12), "top2": (2, 13)}  # tiny BERT: 2 blocks, k=2 is all
    for name, (k, seed) in tops.items():
        registry.register(top_layers_adapter(tmp_path / name, bb, name, k, seed))
    registry.register(head_adapter(tmp_path / "head", bb, "head", seed=1))
    registry.register(peft_lora_dir(tmp_path / "lora", str(bb.source_path), seed=2),
                      name="lora", labels=["neg", "pos"])
    return Runtime(registry), tops


def test_mixed_text_batch_equals_each_fine_tuned_model_alone(tmp_path, text_rt, text_backbone):
    rt, tops = text_rt
    refs = {n: reference_probs(text_backbone, k, s, tmp_path / n, TEXTS) for n, (k, s) in tops.items()}
    refs["head"] = probs(rt.run([rt.prepare(["head"], TEXTS, "text")])[0][0])
    peft = peft_seq_cls_model(str(text_backbone.source_path), seed=2)
    with torch.no_grad():
        refs["lora"] = torch.softmax(peft(**text_backbone.preprocess(TEXTS)).logits, -1)
    reqs = [(["top1", "head", "top2", "lora", "top1b"], TEXTS),
            (["top2"], TEXTS[:2]), (["lora", "top1"], TEXTS[3:]), (["head"], TEXTS[1:4]),
            (["top1b", "top1"], TEXTS[::-1])]
    outs = rt.run([rt.prepare(t, x, "text") for t, x in reqs])
    for (tasks, inputs), res in zip(reqs, outs):
        idx = [TEXTS.index(t) for t in inputs]
        for task, r in zip(tasks, res):
            got = probs(r)
            torch.testing.assert_close(got, refs[task][idx], atol=TOL, rtol=0, msg=task)
    for a, b in [("top1", "top1b"), ("top1", "top2"), ("top1", "head")]:  # the tasks really differ
        assert (refs[a] - refs[b]).abs().max() > 1e-2


def test_chunking_changes_nothing(text_rt):
    rt, _ = text_rt
    tasks = ["top1", "head", "top2", "lora"]
    whole = rt.run([rt.prepare(tasks, TEXTS, "text")])[0]
    rt.max_forward_rows = 5  # rows of one input land in different chunks
    chunked = rt.run([rt.prepare(tasks, TEXTS, "text")])[0]
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(probs(a), probs(b), atol=TOL, rtol=0)
    rt.max_forward_rows, rt.token_budget = 256, 16  # length-sorted sub-batches, padding trimmed
    by_length = rt.run([rt.prepare(tasks, TEXTS, "text")])[0]
    for a, b in zip(whole, by_length):
        torch.testing.assert_close(probs(a), probs(b), atol=TOL, rtol=0)


def test_top_layers_rows_leave_the_backbone_as_found(text_rt, text_backbone):
    rt, _ = text_rt
    before = {k: v.clone() for k, v in text_backbone.model.state_dict().items()}
    rt.run([rt.prepare(["top1", "top2"], TEXTS, "text")])
    after = text_backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.__class__ is torch.nn.Parameter for p in text_backbone.model.parameters())


def noise_images(n: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def test_mixed_vision_batch_equals_each_fine_tuned_model_alone(tmp_path, registry, vision_backbone,
                                                               one_torch_thread):
    bb = vision_backbone
    n_blocks = len(bb.model.layer)
    tops = {"v1": (1, 21), "v2": (2, 22), "vall": (n_blocks, 23)}  # k = every block too
    for name, (k, seed) in tops.items():
        registry.register(top_layers_adapter(tmp_path / name, bb, name, k, seed, pooling="mean"))
    registry.register(head_adapter(tmp_path / "vh", bb, "vh", seed=3))
    rt = Runtime(registry)
    imgs = noise_images(4)
    refs = {n: reference_probs(bb, k, s, tmp_path / n, imgs) for n, (k, s) in tops.items()}
    refs["vh"] = probs(rt.run([rt.prepare(["vh"], imgs, "image")])[0][0])
    res = rt.run([rt.prepare(["v1", "vh", "v2", "vall"], imgs, "image"),
                  rt.prepare(["v2"], imgs[1:3], "image")])
    for task, r in zip(["v1", "vh", "v2", "vall"], res[0]):
        torch.testing.assert_close(probs(r), refs[task], atol=TOL, rtol=0, msg=task)
    torch.testing.assert_close(probs(res[1][0]), refs["v2"][1:3], atol=TOL, rtol=0)
    assert (refs["v1"] - refs["v2"]).abs().max() > 1e-2


# ---- registration: refused from headers, naming the problem ------------------------------
def _edit_manifest(folder, **changes):
    m = json.loads((folder / "adapter.json").read_text())
    m.update(changes)
    (folder / "adapter.json").write_text(json.dumps(m))


def test_registration_refuses_what_does_not_fit(tmp_path, registry, text_backbone, vision_backbone):
    from safetensors.torch import load_file, save_file
    d = top_layers_adapter(tmp_path / "t", text_backbone, "t", 1)
    _edit_manifest(d, top_layers={"blocks": [0]})
    with pytest.raises(IncompatibleAdapter, match=r"must be the last 1 .*\[1\]"):
        registry.register(d)
    _edit_manifest(d, top_layers={"blocks": "last"})
    with pytest.raises(InvalidAdapter, match="top_layers.blocks"):
        registry.register(d)

    d = top_layers_adapter(tmp_path / "s", text_backbone, "s", 1)
    t = load_file(str(d / WEIGHTS_FILE))
    t["encoder.layer.1.output.dense.weight"] = t["encoder.layer.1.output.dense.weight"][:, :5].contiguous()
    del t["encoder.layer.1.attention.self.query.bias"]
    t["encoder.layer.0.output.dense.bias"] = torch.zeros(32)
    save_file(t, str(d / WEIGHTS_FILE))
    with pytest.raises(IncompatibleAdapter) as e:
        registry.register(d)
    msg = str(e.value)
    assert "encoder.layer.1.output.dense.weight has shape (32, 5)" in msg
    assert "lacks encoder.layer.1.attention.self.query.bias" in msg
    assert "outside blocks [1]" in msg

    d = top_layers_adapter(tmp_path / "f", text_backbone, "f", 1, fingerprint=None)
    with pytest.raises(InvalidAdapter, match="fingerprint"):
        registry.register(d)
    d = top_layers_adapter(tmp_path / "g", text_backbone, "g", 1, fingerprint="sha256:" + "0" * 64)
    with pytest.raises(IncompatibleAdapter):
        registry.register(d)
    (tmp_path / "g" / WEIGHTS_FILE).unlink()
    with pytest.raises(InvalidAdapter, match=f"{WEIGHTS_FILE} is missing"):
        registry.register(d)
    # a text adapter's blocks on the vision backbone
    d = top_layers_adapter(tmp_path / "x", text_backbone, "x", 1)
    with pytest.raises(IncompatibleAdapter):
        registry.register(d, backbone="vision")
    assert registry.list() == []


# ---- residency: the LoRA LRU ---------------------------------------------------------------
def test_top_layers_live_in_the_lru_with_pinning_and_reload(tmp_path, backbones, text_backbone,
                                                           one_torch_thread):
    reg = Registry(open_store(str(tmp_path / "store")), backbones)
    rt = Runtime(reg)

    def scores(task):
        return probs(rt.run([rt.prepare([task], TEXTS, "text")])[0][0])

    a = reg.register(top_layers_adapter(tmp_path / "a", text_backbone, "a", 1, 1))
    layer_bytes = sum(t.numel() * 4 for t in text_backbone.model.encoder.layer[1].state_dict().values())
    assert a.nbytes >= layer_bytes  # the block copy is counted
    reg.adapter_budget_bytes = a.nbytes + a.nbytes // 2  # room for one
    first = {"a": scores("a")}
    reg.register(top_layers_adapter(tmp_path / "b", text_backbone, "b", 1, 2))
    first["b"] = scores("b")
    assert [k[0] for k in reg._loras] == ["b"] and reg.show("a")["state"] == "evicted"
    torch.testing.assert_close(scores("a"), first["a"], atol=0, rtol=0)  # reload on miss
    assert [k[0] for k in reg._loras] == ["a"]
    reg.pin("a", True)
    torch.testing.assert_close(scores("b"), first["b"], atol=0, rtol=0)
    assert sorted(k[0] for k in reg._loras) == ["a", "b"]  # pinned a stays
    reg.pin("a", False)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_piecewise_trunk_equals_the_model_s_own_forward(text_backbone, attn):
    """The split path's pieces (stem, each block with the mask it builds, finish) give the
    installed transformers' own forward on padded rows, for each attention implementation:
    the mask is built through public API, and this pins it to what BertModel builds."""
    from transformers import AutoModel
    from adapters.kinds.top_layers import BertLayout
    model = AutoModel.from_pretrained(text_backbone.source_path, attn_implementation=attn).eval()
    batch = text_backbone.preprocess(TEXTS)
    assert (batch["attention_mask"] == 0).any()  # padded rows, so the mask matters
    lay = BertLayout()
    mods = dict(model.named_modules())
    with torch.no_grad():
        h = lay.stem(model, batch)
        for names in lay.block_modules(model):
            h = lay.run_block([mods[n] for n in names], h, batch["attention_mask"], model)
        ours = lay.finish(model, h)
        ref = model(**batch)
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.last_hidden_state[keep], ref.last_hidden_state[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)
