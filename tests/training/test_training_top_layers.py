"""``--method top_layers``: the trained blocks + head register and serve exactly the scores
the trainer reported; the recipe's pieces (layer-wise lr, warm-up, the split) do what they say."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adapters.backbones.tiny import tiny_backbone_spec
from adapters.errors import InvalidInput
from adapters.kinds.top_layers import WEIGHTS_FILE
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from training.config import TrainConfig
from training.data import open_image
from training.sources import DataSource
from training.trainer import train
from support.training_helpers import sentiment_rows, write_image_folder, write_text_csv


def _cfg(name, **kw):
    return TrainConfig(name=name, method="top_layers", **{"progress": False, "epochs": 3, "lr": 5e-3,
                                                          "head_lr": 1e-2, "batch_size": 16, **kw})


def served_probs(registry, task, data):
    rt = Runtime(registry)
    inputs = data.inputs if data.modality == "text" else [open_image(x) for x in data.inputs]
    res = rt.run([rt.prepare([task], inputs, data.modality)])[0][0]
    return torch.tensor([[row.scores[lab] for lab in data.label_names] for row in res.rows])


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    from adapters.backbones.base import load_backbone
    root = tmp_path_factory.mktemp("tl-train")
    return {"text": load_backbone(tiny_backbone_spec("text", root / "text")),
            "vision": load_backbone(tiny_backbone_spec("vision", root / "vision"))}


@pytest.mark.parametrize("modality,layers,warm", [("text", 1, True), ("text", 2, False), ("vision", 2, False)])
def test_trained_top_layers_register_and_serve_the_reported_scores(modality, layers, warm, tmp_path,
                                                                   backbones, one_torch_thread):
    bb = backbones[modality]
    if modality == "text":
        data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(48))).load()
    else:
        data = DataSource(path=write_image_folder(tmp_path / "imgs", per_class=10)).load()
    # MobileNet's pooled features are large: smaller steps, or a random head diverges on 24 images.
    kw = {} if modality == "text" else {"lr": 1e-3, "head_lr": 1e-3, "epochs": 4, "patience": 4}
    r = train(data, bb, _cfg("toy-top", layers=layers, warm_start=warm, **kw), tmp_path / "out",
              cache_dir=None)
    m = json.loads((r.path / "adapter.json").read_text())
    n = m["training"]["top_layers_of"]
    assert m["kind"] == "top_layers" and m["top_layers"]["blocks"] == list(range(n - layers, n))
    assert m["training"]["hyperparameters"]["layers"] == layers
    assert r.history.best_epoch >= 1, "never improved on its start: the test would be vacuous"
    # The blocks really moved away from the frozen backbone's.
    saved = load_file(str(r.path / WEIGHTS_FILE))
    frozen = bb.model.state_dict()
    assert max(float((v - frozen[k]).abs().max()) for k, v in saved.items()) > 1e-4

    reg = Registry(open_store(str(tmp_path / "store")), backbones)
    loaded = reg.register(r.path)
    assert loaded.kind == "top_layers"
    val = r.splits["validation"]
    served = served_probs(reg, "toy-top", val)
    torch.testing.assert_close(served, r.probs["validation"], atol=1e-5, rtol=0)


def test_layers_beyond_the_backbone_are_refused(tmp_path, backbones):
    data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(16))).load()
    with pytest.raises(InvalidInput, match="has 2 blocks"):
        train(data, backbones["text"], _cfg("too-deep", layers=3), tmp_path / "o", cache_dir=None)


def test_layer_wise_groups_and_warmup_schedule(backbones):
    from adapters.heads import Head
    from adapters.format import HeadSpec
    from training.top_layers import SplitModel, param_groups
    from training.lora import trainable_copy
    bb = backbones["text"]
    model = trainable_copy(bb)
    net = SplitModel(model, "bert", 0)
    head = Head(HeadSpec(pooling="mean", input_dim=bb.hidden_size), 2)
    cfg = _cfg("g", lr=1e-3, layer_decay=0.5, head_lr=7e-3, weight_decay=0.1)
    groups = param_groups(model, net.blocks, head, cfg)
    lrs = sorted({g["lr"] for g in groups})
    assert lrs == [5e-4, 1e-3, 7e-3]  # lower block, top block, head
    assert all(g["weight_decay"] == (0.1 if all(p.dim() > 1 for p in g["params"]) else 0.0) for g in groups)
    # the split model with split 0 is the whole model
    batch = bb.preprocess(["good movie", "bad"])
    with torch.no_grad():
        torch.testing.assert_close(net(**batch).last_hidden_state, model(**batch).last_hidden_state,
                                   atol=1e-6, rtol=0)
