"""LoRA in PEFT format: our per-row runtime gives PEFT's own scores, and bad adapters are refused."""

import json

import pytest
import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from safetensors.torch import load_file, save_file

from adapters.errors import IncompatibleAdapter, InvalidAdapter, InvalidInput
from adapters.lora.peft_targets import why_not_targeted
from adapters.runtime import Runtime
from support.factories import head_adapter, peft_lora_dir, peft_probs, peft_seq_cls_model

TEXTS = ["good movie", "the plot was awful and boring", "fine", "a b c d e f g h i j"]


def scores(result):
    return torch.tensor([list(r.scores.values()) for r in result.rows])


@pytest.mark.parametrize("kw", [
    {},
    {"r": 8, "targets": ("query", "key", "value", "dense")},
    {"r": 4, "use_rslora": True},
    {"r": 4, "rank_pattern": {"query": 2}, "alpha_pattern": {"value": 16}},
    {"r": 4, "layers_to_transform": [1]},  # issue 30 item 6: PEFT's layer selection honoured
    {"r": 4, "layers_to_transform": 0, "layers_pattern": "layer"},
    {"r": 4, "targets": ("query", "dense"), "layers_to_transform": [0], "layers_pattern": "layer"},
])
def test_plain_peft_dir_matches_peft_model(tmp_path, registry, text_backbone, kw):
    src = str(text_backbone.source_path)
    folder = peft_lora_dir(tmp_path / "p", src, num_labels=3, seed=7, **kw)
    loaded = registry.register(folder, name="peft-task", labels=["a", "b", "c"])
    assert loaded.kind == "lora" and loaded.labels == ["a", "b", "c"]
    rt = Runtime(registry)
    ours = rt.run([rt.prepare(["peft-task"], TEXTS, "text")])[0][0]
    ref = peft_probs(peft_seq_cls_model(src, 3, seed=7, **kw), text_backbone, TEXTS)
    assert torch.allclose(scores(ours), ref, atol=1e-5)


def test_mixed_batch_equals_each_adapter_alone(tmp_path, registry, text_backbone):
    src = str(text_backbone.source_path)
    registry.register(peft_lora_dir(tmp_path / "l1", src, seed=1), name="l1")
    registry.register(peft_lora_dir(tmp_path / "l2", src, seed=2, r=8), name="l2")
    registry.register(head_adapter(tmp_path / "h1", text_backbone, "h1", seed=3))
    registry.register(head_adapter(tmp_path / "h2", text_backbone, "h2", seed=4, hidden=(16,)))
    rt = Runtime(registry)
    alone = {t: rt.run([rt.prepare([t], TEXTS, "text")])[0][0] for t in ("l1", "l2", "h1", "h2")}
    mixed = rt.run([rt.prepare(["l1", "h1"], TEXTS[:2], "text"),
                    rt.prepare(["l2", "h2", "l1"], TEXTS, "text"),
                    rt.prepare(["h1"], TEXTS[2:], "text")])
    def check(res, task, sl):
        assert res.task == task
        assert torch.allclose(scores(res), scores(alone[task])[sl], atol=1e-5)
    check(mixed[0][0], "l1", slice(0, 2)); check(mixed[0][1], "h1", slice(0, 2))
    check(mixed[1][0], "l2", slice(None)); check(mixed[1][1], "h2", slice(None))
    check(mixed[1][2], "l1", slice(None)); check(mixed[2][0], "h1", slice(2, None))


def test_conv_lora_on_mobilenet_matches_peft(tmp_path, registry, vision_backbone):
    from PIL import Image
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification

    src = str(vision_backbone.source_path)
    torch.manual_seed(0)
    base = AutoModelForImageClassification.from_pretrained(src, num_labels=3)
    names = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Conv2d)
             and m.kernel_size == (1, 1) and m.groups == 1 and "expand_1x1" in n]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=names,
                                            modules_to_save=["classifier"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n or "classifier" in n:
                p.normal_(0, 0.3)
    model.eval().save_pretrained(tmp_path / "v")
    registry.register(tmp_path / "v", name="vis", labels=["x", "y", "z"], backbone="vision")
    images = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 90, 200), (10, 10, 10)]]
    rt = Runtime(registry)
    ours = rt.run([rt.prepare(["vis"], images, "image")])[0][0]
    pix = vision_backbone.preprocess(images)["pixel_values"]
    with torch.no_grad():
        ref = torch.softmax(model(pixel_values=pix).logits, -1)
    assert torch.allclose(scores(ours), ref, atol=1e-5)


def _rewrite_weights(folder, fn):
    p = folder / "adapter_model.safetensors"
    save_file(fn(load_file(str(p))), str(p))


def test_lora_matching_no_module_is_refused(tmp_path, registry, text_backbone):
    folder = peft_lora_dir(tmp_path / "p", str(text_backbone.source_path))
    _rewrite_weights(folder, lambda t: {k.replace("attention.self", "nowhere"): v for k, v in t.items()})
    with pytest.raises(IncompatibleAdapter, match="no such module"):
        registry.register(folder, name="x")


def test_lora_with_only_classifier_is_refused(tmp_path, registry, text_backbone):
    folder = peft_lora_dir(tmp_path / "p", str(text_backbone.source_path))
    _rewrite_weights(folder, lambda t: {k: v for k, v in t.items() if "lora_" not in k})
    with pytest.raises(IncompatibleAdapter, match="no lora_A/lora_B"):
        registry.register(folder, name="x", backbone="text")


def test_lora_shape_mismatch_is_refused(tmp_path, registry, text_backbone):
    folder = peft_lora_dir(tmp_path / "p", str(text_backbone.source_path))
    _rewrite_weights(folder, lambda t: {k: (v[:, :16].contiguous() if "lora_A" in k else v)
                                        for k, v in t.items()})
    with pytest.raises(IncompatibleAdapter, match="do not fit"):
        registry.register(folder, name="x", backbone="text")


def test_lora_on_strided_3x3_conv_matches_peft(tmp_path, registry, vision_backbone):
    """A k x k, stride-2 conv (PEFT: lora_A is the same 3x3 conv, lora_B 1x1): per-row im2col
    deltas, mixed with another adapter in one batch, give PEFT's own scores."""
    from PIL import Image
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification

    src = str(vision_backbone.source_path)
    images = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 90, 200), (10, 10, 10)]]
    pix = vision_backbone.preprocess(images)["pixel_values"]
    refs = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        base = AutoModelForImageClassification.from_pretrained(src, num_labels=2)
        model = get_peft_model(base, LoraConfig(r=2, target_modules=["conv_stem.first_conv.convolution"],
                                                modules_to_save=["classifier"]))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n or "classifier" in n:
                    p.normal_(0, 0.5)
            refs[seed] = torch.softmax(model.eval()(pixel_values=pix).logits, -1)
        model.save_pretrained(tmp_path / f"v{seed}")
        registry.register(tmp_path / f"v{seed}", name=f"v{seed}", labels=["x", "y"], backbone="vision")
    assert not torch.allclose(refs[0], refs[1], atol=1e-3)
    rt = Runtime(registry)
    mixed = rt.run([rt.prepare(["v0"], images[:2], "image"), rt.prepare(["v1", "v0"], images, "image")])
    assert torch.allclose(scores(mixed[0][0]), refs[0][:2], atol=1e-5)
    assert torch.allclose(scores(mixed[1][0]), refs[1], atol=1e-5)
    assert torch.allclose(scores(mixed[1][1]), refs[0], atol=1e-5)
    alone = rt.run([rt.prepare(["v1"], images, "image")])[0][0]  # one adapter: merged weights
    assert torch.allclose(scores(alone), refs[1], atol=1e-5)


def test_lora_on_depthwise_conv_is_refused(tmp_path, registry, vision_backbone):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification
    base = AutoModelForImageClassification.from_pretrained(str(vision_backbone.source_path), num_labels=2)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["conv_stem.conv_3x3.convolution"],
                                            modules_to_save=["classifier"]))
    model.save_pretrained(tmp_path / "v")
    with pytest.raises(IncompatibleAdapter, match="groups"):
        registry.register(tmp_path / "v", name="v", backbone="vision")


@pytest.mark.parametrize("flag", [{"use_dora": True}, {"peft_type": "IA3"}])
def test_unsupported_peft_variants_are_refused(tmp_path, registry, text_backbone, flag):
    folder = peft_lora_dir(tmp_path / "p", str(text_backbone.source_path))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, **flag}))
    with pytest.raises(InvalidAdapter):
        registry.register(folder, name="x", backbone="text")


def test_plain_peft_needs_name_and_matching_labels(tmp_path, registry, text_backbone):
    folder = peft_lora_dir(tmp_path / "p", str(text_backbone.source_path), num_labels=2)
    with pytest.raises(InvalidInput, match="name="):
        registry.register(folder)
    with pytest.raises(InvalidInput, match="2 outputs"):
        registry.register(folder, name="x", labels=["a", "b", "c"])


# ---- issue 30 item 6: target_modules / layers_to_transform / layers_pattern as PEFT reads them --
@pytest.mark.parametrize("edit, field", [
    ({"layers_to_transform": [0]}, "layers_to_transform"),  # the file adapts layer 1 too
    ({"target_modules": ["query"]}, "target_modules"),  # the file has value weights too
    ({"layers_to_transform": [0, 1], "layers_pattern": "blocks"}, "layers_pattern"),
    ({"exclude_modules": ["value"]}, "exclude_modules"),
])
def test_weights_peft_would_ignore_are_refused_naming_the_field(tmp_path, registry, text_backbone,
                                                                 edit, field):
    folder = peft_lora_dir(tmp_path / "p", str(text_backbone.source_path))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(InvalidAdapter, match=field):
        registry.register(folder, name="x", labels=["a", "b"])


CONFIGS = [
    {"target_modules": ["query", "value"]},
    {"target_modules": ["query"], "layers_to_transform": [1]},
    {"target_modules": ["dense"], "layers_to_transform": 0, "layers_pattern": "layer"},
    {"target_modules": ["dense"], "layers_to_transform": [0], "layers_pattern": ["blocks", "layer"]},
    {"target_modules": ["bert.encoder.layer.0.attention.self.query"], "layers_to_transform": [1]},
    {"target_modules": r".*\.layer\.1\..*\.(query|value)"},
    {"target_modules": ["query", "key"], "exclude_modules": ["key"]},
    {"target_modules": ["dense"], "exclude_modules": r".*output\.dense"},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_module_rule_agrees_with_peft_on_every_module(text_backbone, config):
    names = [f"bert.{n}" for n, _ in text_backbone.model.named_modules() if n]
    peft_cfg = LoraConfig(**config)
    for name in names:
        peft_says = bool(check_target_module_exists(peft_cfg, name)) and \
            type(check_target_module_exists(peft_cfg, name)).__name__ != "_ExcludedModule"
        assert (why_not_targeted(config, name) is None) == peft_says, (config, name)
