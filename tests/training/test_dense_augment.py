"""Scale jitter keeps boxes and masks on their objects: zoomed in (a crop) and out (a frame
around the image), boxes moved, clipped and dropped with the window, masks resampled with it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adapters.errors import InvalidInput
from training.dense.augment import augmented, scale_jittered, window_boxes
from training.dense.data import DenseData
from training.dense.fit import DenseFitConfig
from training.dense_run import train_dense

COLOURS = np.array([(230, 30, 30), (30, 230, 30)], dtype=np.float64)


def two_squares(n: int, seed: int) -> DenseData:
    """80x60 canvases, a red square ('a') in the left half and a green one ('b') in the right
    half, on dark noise; masks: 0 background, 1 'a', 2 'b'."""
    rng = np.random.default_rng(seed)
    images, boxes, classes, masks = [], [], [], []
    for _ in range(n):
        canvas = rng.integers(0, 40, (60, 80, 3)).astype(np.uint8)
        mask = np.zeros((60, 80), dtype=np.uint8)
        bs = []
        for k, (lo, hi) in enumerate(((0, 40), (40, 80))):
            s = int(rng.integers(12, 22))
            x, y = int(rng.integers(lo, hi - s)), int(rng.integers(0, 60 - s))
            canvas[y:y + s, x:x + s] = COLOURS[k]
            mask[y:y + s, x:x + s] = k + 1
            bs.append((x, y, x + s, y + s))
        images.append(Image.fromarray(canvas))
        boxes.append(np.array(bs, dtype=np.float32))
        classes.append(np.array([0, 1]))
        masks.append(mask)
    return DenseData(images, ["a", "b"], "two squares", boxes, classes, masks)


@pytest.mark.parametrize("low,high", [(1.3, 1.8), (0.55, 0.8)], ids=["zoom-in", "zoom-out"])
def test_scale_jitter_keeps_boxes_and_masks_on_their_objects(low, high):
    data = two_squares(12, 0)
    out = scale_jittered(data, low, high, seed=1)
    assert len(out) == len(data) and out.source.endswith(f"(scale jitter {low}-{high})")
    kept = 0
    for img, b, c, mask, before in zip(out.images, out.boxes, out.classes, out.masks, data.boxes):
        assert img.size == (80, 60) and mask.shape == (60, 80)
        px = np.asarray(img, dtype=np.float64)
        for (x0, y0, x1, y1), k in zip(b.tolist(), c.tolist()):
            kept += 1
            assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
            # inside the box (one pixel in from the bilinear edge): the object's colour
            inner = px[int(np.ceil(y0)) + 1:int(y1) - 1, int(np.ceil(x0)) + 1:int(x1) - 1].reshape(-1, 3)
            if len(inner):
                assert np.abs(inner.mean(0) - COLOURS[k]).max() < 25, (k, inner.mean(0))
            # the mask's pixels of that class lie in the box, and fill it
            ys, xs = np.nonzero(mask == k + 1)
            assert xs.min() >= x0 - 1 and xs.max() + 1 <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() + 1 <= y1 + 1
            if 0 < x0 and x1 < 80 and 0 < y0 and y1 < 60:  # not clipped: scaled by the image's factor
                w0, h0 = before[k][2] - before[k][0], before[k][3] - before[k][1]
                assert low - 1e-3 <= (x1 - x0) / w0 <= high + 1e-3 and low - 1e-3 <= (y1 - y0) / h0 <= high + 1e-3
        # the mask agrees with the image: its labelled pixels have their class's colour
        for k in (0, 1):
            sel = px[mask == k + 1]
            if len(sel) > 8:
                assert np.abs(np.median(sel, 0) - COLOURS[k]).max() < 25
    assert kept >= len(data)  # most objects stay in the frame


def test_window_boxes_moves_clips_and_drops():
    boxes = np.array([[10, 10, 30, 30], [70, 40, 90, 60]], dtype=np.float32)  # the second mostly outside
    b, c = window_boxes(boxes, np.array([0, 1]), (0, 0, 80, 50), (160, 100))  # zoom x2 on the top left
    assert c.tolist() == [0] and b.tolist() == [[20, 20, 60, 60]]
    b, c = window_boxes(boxes, np.array([0, 1]), (-80, -50, 240, 150), (160, 100))  # zoom out x0.5
    assert c.tolist() == [0, 1] and np.allclose(b, [[45, 30, 55, 40], [75, 45, 85, 55]])


def test_augmented_sets_and_a_fit_with_scale_jitter(tmp_path, vision_backbone):
    data = two_squares(4, 2)
    aug = augmented(data, flip=True, jitter=(0.8, 1.25), seed=0)
    assert len(aug) == 16 and len(aug.masks) == 16 and len(aug.boxes) == 16
    with pytest.raises(InvalidInput, match="scale jitter"):
        scale_jittered(data, 2.0, 1.0)
    det = DenseData(data.images, data.label_names, "boxes only", data.boxes, data.classes)
    cfg = DenseFitConfig("detection", [8, 16], input_size=64, width=8, epochs=1, trunk_batch=8,
                         scale_jitter=(0.8, 1.25))
    res = train_dense("jit", vision_backbone, det, {"test": det}, cfg, tmp_path / "out")
    assert (res.path / "adapter.json").is_file() and "scale jitter 0.8-1.25" in (res.path / "README.md").read_text()
