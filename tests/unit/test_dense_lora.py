"""Dense tasks with LoRA on the trunk: trained by the real trainer (PEFT on a tiny MobileNetV2),
registered from their PEFT files, served per row in mixed batches beside frozen-trunk rows."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from peft import PeftModel
from transformers import AutoModel

from adapters.dense_heads import build_dense_head
from adapters.errors import InvalidAdapter
from adapters.format import DenseSpec
from adapters.format.safetensors_io import load_tensors
from adapters.runtime import EmbedSpec, Runtime
from support.dense_compare import same_rows
from support.dense_factories import dense_adapter, squares
from support.factories import head_adapter
from training.dense.fit import DenseFitConfig
from training.dense.lora_fit import dense_lora_targets
from training.dense.metrics import detections
from training.dense_run import train_dense
from training.tasks import training_task

TOL = 1e-5
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(task_type, **kw):
    # a large trunk lr so that two epochs move the LoRA factors far from B = 0
    return DenseFitConfig(task_type, [8, 16], input_size=64, width=8, epochs=2, batch_size=8, trunk_lr=0.05,
                          method="lora", progress=False, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vision_backbone):
    bb = vision_backbone
    root = tmp_path_factory.mktemp("dense-lora")
    det = train_dense("det_lora", bb, squares(16, 0), {"test": squares(6, 1)}, _cfg("detection"), root / "det")
    seg_cfg = _cfg("segmentation")
    seg = train_dense("seg_lora", bb, _with_masks(squares(16, 2)), {"test": _with_masks(squares(6, 3))},
                      seg_cfg, root / "seg")
    return det, seg


def _with_masks(data):
    """The squares as a segmentation set: a box's pixels are its class + 1, background 0."""
    masks = []
    for im, b, c in zip(data.images, data.boxes, data.classes):
        m = np.zeros((im.height, im.width), dtype=np.uint8)
        for (x0, y0, x1, y1), k in zip(b.astype(int).tolist(), c.tolist()):
            m[y0:y1, x0:x1] = k + 1
        masks.append(m)
    return type(data)(data.images, ["background", "a", "b"], data.source, masks=masks)


@pytest.fixture
def runtime(trained, tmp_path, registry, vision_backbone):
    det, seg = trained
    registry.register(det.path)
    registry.register(seg.path)
    registry.register(dense_adapter(tmp_path / "det_head", vision_backbone, "det_head", input_size=64,
                                    labels=("a", "b"), min_score_threshold=0.01))
    registry.register(head_adapter(tmp_path / "cls", vision_backbone, "cls"))
    return Runtime(registry)


def test_the_files_are_peft_s_with_a_dense_manifest(trained):
    det, _ = trained
    cfg = json.loads((det.path / "adapter_config.json").read_text())
    m = json.loads((det.path / "adapter.json").read_text())
    assert m["kind"] == "lora" and m["task_type"] == "detection" and m["dense"]["input_size"] == 64
    # pointwise convs only, none deeper than the stride-16 map the head reads
    assert cfg["target_modules"] and all("1x1" in t for t in cfg["target_modules"])
    assert m["training"]["lora_modules"] == len(cfg["target_modules"])


def test_targets_are_pointwise_convs_before_the_deepest_map(vision_backbone):
    model = copy.deepcopy(vision_backbone.model)
    px = torch.zeros(1, 3, 64, 64)
    maps = vision_backbone.feature_maps
    up_to_8, up_to_32 = dense_lora_targets(model, px, maps[8]), dense_lora_targets(model, px, maps[32])
    assert set(up_to_8) < set(up_to_32)
    mods = dict(model.named_modules())
    for name in up_to_32:
        conv = mods[name]
        assert conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
    assert not any("conv_3x3" in n or "first_conv" in n for n in up_to_32)
    # the last 1x1 conv runs after the stride-32 map: no factors there
    assert "conv_1x1.convolution" in mods and "conv_1x1.convolution" not in up_to_32


def test_served_boxes_are_the_peft_model_s(runtime, trained, vision_backbone):
    """PEFT loads the exported folder onto the backbone's weights; the server's per-row deltas on
    the shared frozen trunk give the boxes that PEFT model and the saved head give."""
    det, _ = trained
    m = json.loads((det.path / "adapter.json").read_text())
    spec = DenseSpec(**m["dense"])
    head = build_dense_head(spec, len(m["labels"]) + 4, load_tensors(det.path / "head.safetensors"))
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(vision_backbone.source_path), str(det.path)).eval()
    data = squares(4, 7)
    with torch.no_grad():
        hidden = peft(**vision_backbone.preprocess(data.images, 64), output_hidden_states=True).hidden_states
    ref = detections(head, [hidden[vision_backbone.feature_maps[s]] for s in spec.strides], data, 64, spec)
    got = runtime.run([runtime.prepare(["det_lora"], data.images, "image",
                                       options={"threshold": spec.min_score_threshold})])[0][0]
    assert any(ref), "the reference answers no box: the comparison would be empty"
    for g, r in zip(got.rows, ref):
        assert [b["label"] for b in g.boxes] == [b["label"] for b in r]
        assert np.allclose([b["score"] for b in g.boxes], [b["score"] for b in r], atol=1e-4)


def test_lora_changes_the_answers(runtime, trained, tmp_path, registry, vision_backbone):
    """The same dense head on the frozen trunk answers differently: the LoRA rows are adapted."""
    det, _ = trained
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    m = json.loads((det.path / "adapter.json").read_text())
    m.update(name="det_frozen", kind="head")
    (frozen / "adapter.json").write_text(json.dumps(m))
    (frozen / "head.safetensors").write_bytes((det.path / "head.safetensors").read_bytes())
    registry.register(frozen)
    imgs = squares(3, 9).images
    a = runtime.run([runtime.prepare(["det_lora"], imgs, "image", options={"threshold": 0.01})])[0][0]
    b = runtime.run([runtime.prepare(["det_frozen"], imgs, "image", options={"threshold": 0.01})])[0][0]
    assert [[x["score"] for x in r.boxes] for r in a.rows] != [[x["score"] for x in r.boxes] for r in b.rows]


def test_mixed_batch_rows_equal_each_row_alone(runtime):
    """LoRA detection + LoRA segmentation + a frozen-trunk detector + a classifier, two requests,
    one batch: every row equals the same input sent alone with that task alone."""
    imgs = squares(3, 11).images
    opts = {"threshold": 0.01}
    mixed = runtime.run([runtime.prepare(["det_lora", "det_head", "seg_lora", "cls"], imgs, "image",
                                         embed=EmbedSpec(), options=opts),
                         runtime.prepare(["seg_lora", "det_lora"], imgs[:1], "image", options=opts)])
    got = {r.task: r for r in mixed[0]}
    for i, img in enumerate(imgs):
        for t in ("det_lora", "det_head", "seg_lora", "cls"):
            o = opts if t.startswith("det") else None
            single = runtime.run([runtime.prepare([t], [img], "image", options=o)])[0][0]
            same_rows(type(single)(single.task, single.version, single.kind, single.task_type,
                                   [got[t].rows[i]]), single)
    for r in mixed[1]:
        o = opts if r.task.startswith("det") else None
        same_rows(r, runtime.run([runtime.prepare([r.task], imgs[:1], "image", options=o)])[0][0])


def test_the_trainer_s_map_comes_back_from_the_runtime(runtime, trained):
    det, _ = trained
    test = squares(6, 1)
    got = runtime.run([runtime.prepare(["det_lora"], test.images, "image", options={"threshold": 0.01})])[0][0]
    served = training_task("detection").served_scores(test, got.rows)
    assert served["map"] == pytest.approx(det.metrics["test"]["map"], abs=1e-6)


def test_a_dense_lora_without_its_head_is_refused(trained, tmp_path, registry):
    det, _ = trained
    broken = tmp_path / "nohead"
    broken.mkdir()
    for f in ("adapter.json", "adapter_config.json", "adapter_model.safetensors"):
        (broken / f).write_bytes((det.path / f).read_bytes())
    with pytest.raises(InvalidAdapter, match="head"):
        registry.register(broken)
