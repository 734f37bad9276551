"""The dense seam on the embedded ImageNet MobileNetV2: its maps, and a detection and a
segmentation head at their own input sizes beside a classifier on a real photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adapters.backbones.base import load_backbone
from adapters.backbones.defaults import default_spec
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.dense_factories import dense_adapter
from support.factories import head_adapter

pytestmark = pytest.mark.real


def test_mobilenet_maps_serve_dense_tasks_in_the_photo_s_pixels(tmp_path):
    from sklearn.datasets import load_sample_image
    bb = load_backbone(default_spec("vision"))
    assert bb.map_channels == {8: 32, 16: 96, 32: 320}
    reg = Registry(open_store(str(tmp_path / "store")), {"vision": bb})
    reg.sync()
    reg.register(dense_adapter(tmp_path / "d", bb, "det", input_size=224, min_score_threshold=0.0))
    reg.register(dense_adapter(tmp_path / "s", bb, "seg", task_type="segmentation",
                               labels=("bg", "fg"), input_size=160))
    reg.register(head_adapter(tmp_path / "c", bb, "cls"))
    photo = Image.fromarray(load_sample_image("china.jpg"))  # 640 x 427
    rt = Runtime(reg)
    det, seg, cls = rt.run([rt.prepare(["det", "seg", "cls"], [photo], "image",
                                       options={"threshold": 0.0, "max_detections": 5})])[0]
    assert 1 <= len(det.rows[0].boxes) <= 5
    for b in det.rows[0].boxes:
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 <= x1 <= 640 and 0 <= y0 <= y1 <= 427
    assert sum(seg.rows[0].shares.values()) == pytest.approx(1.0)
    assert all(s["rle"]["size"] == [427, 640] for s in seg.rows[0].segments)
    assert cls.rows[0].label in ("neg", "pos") and np.isfinite(cls.rows[0].score)
