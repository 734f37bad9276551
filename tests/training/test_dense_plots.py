"""The plots a dense run writes beside its adapter and links from its card: the loss curve, the
detector's precision-recall curve at IoU 0.5 (whose mean is the mAP@.5 the trainer reports), the
segmenter's per-class IoU bars, and the answers drawn on held-out images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from support.dense_factories import squares, with_masks
from training.dense.fit import DenseFitConfig
from training.dense.metrics import coco_map, pr_curve50
from training.dense_run import train_dense

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(task_type, **kw):
    return DenseFitConfig(task_type, [8, 16], input_size=64, width=8, epochs=4, batch_size=8, progress=False,
                          limits={"min_score_threshold": 0.01, "score_threshold": 0.05}, **kw)


@pytest.mark.parametrize("task_type, files", [
    ("detection", ["loss_curve.png", "pr_curve.png", "predictions.png"]),
    ("segmentation", ["loss_curve.png", "iou_per_class.png", "predictions.png"]),
])
def test_a_dense_run_writes_its_plots_and_links_them_from_the_card(tmp_path, vision_backbone, task_type, files):
    data = (lambda n, s: squares(n, s)) if task_type == "detection" else (lambda n, s: with_masks(squares(n, s)))
    res = train_dense("p", vision_backbone, data(16, 0), {"test": data(6, 1)}, _cfg(task_type), tmp_path / "p")
    card = (res.path / "README.md").read_text()
    assert "## Plots" in card
    for f in files:
        img = Image.open(res.path / f)
        img.load()
        assert img.width > 100 and img.height > 100
        assert f"]({f})" in card
    assert json.loads((res.path / "adapter.json").read_text())["task_type"] == task_type


def test_the_pr_curve_is_the_one_whose_mean_is_the_map50():
    """Hand-made answers (each true box, shifted by a seed-drawn few pixels, at falling scores, plus
    false boxes): the curve's mean precision over recall points and labels is COCOeval's mAP@.5."""
    test = squares(8, 1)
    rng = np.random.default_rng(0)
    dets = []
    for b, c in zip(test.boxes, test.classes):
        ds = [{"box": (box + rng.integers(-4, 5, 4)).tolist(), "label": test.label_names[k],
               "score": float(rng.uniform(0.2, 1))} for box, k in zip(b, c.tolist())]
        ds.append({"box": [0.0, 0.0, 9.0, 9.0], "label": "a", "score": float(rng.uniform(0, 1))})
        dets.append(ds)
    recall, precision = pr_curve50(test, dets)
    assert len(recall) == 101 and recall[0] == 0 and recall[-1] == 1
    mean = np.nanmean(np.stack(list(precision.values()), 1))
    map50 = coco_map(test, dets)["map50"]
    assert 0.1 < map50 < 1, "a perfect or empty answer would not test the curve"
    assert mean == pytest.approx(map50, abs=1e-9)
