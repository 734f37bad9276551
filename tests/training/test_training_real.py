"""The training module on the real embedded backbones with small real data subsets.

Thresholds come from measurements with margin (seeds 0-2, see the README's training
section): Fashion-MNIST, 300 training images -> test accuracy 0.73-0.77 (chance 0.10);
Rotten Tomatoes, 400 training snippets -> 0.67-0.72 (chance 0.50).
"""

from __future__ import annotations

import pytest
import torch

from adapters.backbones.base import load_backbone
from adapters.backbones.defaults import default_spec
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from training.config import TrainConfig
from training.data import load_demo, open_image
from training.trainer import train

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_backbones():
    return {name: load_backbone(default_spec(name)) for name in ("text", "vision")}


def _served(registry, task, data):
    rt = Runtime(registry)
    inputs = data.inputs if data.modality == "text" else [open_image(x) for x in data.inputs]
    res = rt.run([rt.prepare([task], inputs, data.modality)])[0][0]
    return torch.tensor([[row.scores[lab] for lab in data.label_names] for row in res.rows])


@pytest.mark.parametrize("dataset,backbone,n_train,threshold", [
    ("fashion-mnist", "vision", 300, 0.65),
    ("rotten-tomatoes", "text", 400, 0.62),
])
def test_head_on_real_backbone_beats_chance_and_is_servable(dataset, backbone, n_train, threshold,
                                                            real_backbones, tmp_path):
    bb = real_backbones[backbone]
    data = load_demo(dataset, "train", limit=n_train, seed=0)
    test = load_demo(dataset, "test", limit=300, seed=0)
    r = train(data, bb, TrainConfig(name="real", progress=False), tmp_path / "out", test=test,
              cache_dir=tmp_path / "cache")
    assert r.metrics["test"].accuracy >= threshold, r.metrics["test"]
    reg = Registry(open_store(str(tmp_path / "store")), {bb.name: bb})
    reg.register(r.path)
    assert torch.allclose(_served(reg, "real", test), r.probs["test"], atol=1e-5)


def test_lora_on_real_mobilenet_is_servable_with_the_reported_scores(real_backbones, tmp_path):
    bb = real_backbones["vision"]
    data = load_demo("fashion-mnist", "train", limit=120, seed=0)
    cfg = TrainConfig(name="real-lora", method="lora", epochs=1, batch_size=32, progress=False)
    r = train(data, bb, cfg, tmp_path / "out", cache_dir=tmp_path / "cache")
    reg = Registry(open_store(str(tmp_path / "store")), {bb.name: bb})
    loaded = reg.register(r.path)
    assert loaded.kind == "lora" and len(loaded.lora.modules) == 34  # every 1x1 stride-1 conv
    val = r.splits["validation"]
    assert torch.allclose(_served(reg, "real-lora", val), r.probs["validation"], atol=1e-5)


def test_top_layers_on_real_minilm_train_and_serve_the_reported_scores(real_backbones, tmp_path):
    """Top-layers fine-tuning and serving on the real MiniLM with the installed (locked)
    transformers: the split path runs through its public masking API."""
    bb = real_backbones["text"]
    data = load_demo("rotten-tomatoes", "train", limit=64, seed=0)
    cfg = TrainConfig(name="real-top", method="top_layers", layers=1, epochs=1, batch_size=16,
                      progress=False)
    r = train(data, bb, cfg, tmp_path / "out", cache_dir=tmp_path / "cache")
    reg = Registry(open_store(str(tmp_path / "store")), {bb.name: bb})
    loaded = reg.register(r.path)
    assert loaded.kind == "top_layers"
    val = r.splits["validation"]
    assert torch.allclose(_served(reg, "real-top", val), r.probs["validation"], atol=1e-5)
