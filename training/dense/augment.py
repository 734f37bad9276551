"""Augmentation of dense training sets that keeps boxes and masks on their objects:
horizontal flips and scale jitter, each a fixed extra copy of every training image (the
frozen trunk's maps are computed once per copy and cached, so copies are drawn once per run,
not per epoch).

Scale jitter by a factor ``s`` shows the image through a window of ``1/s`` of its width and
height at a random place, resized back to the image's size: ``s > 1`` zooms in (a crop; objects
grow, some leave the frame), ``s < 1`` zooms out (the window reaches past the image, filled
with the image's mean colour; objects shrink). A box moves with the window and is clipped to
the frame; one that keeps less than :data:`MIN_VISIBLE` of its area is dropped (its pixels
stay in the image as background, as a crop of a real photo would). A mask takes the same
window with nearest-neighbour sampling, class 0 outside the image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from adapters.errors import InvalidInput
from training.dense.data import DenseData
from training.dense.targets import flip_boxes, flip_image, flip_mask

MIN_VISIBLE = 0.5  # a jittered box keeps at least this share of its area, or it is dropped


def window(size: tuple[int, int], s: float, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A window ``(x0, y0, x1, y1)`` of ``1/s`` of an image of ``size`` (width, height) in its
    pixels, placed at random: inside the image when ``s >= 1``, around it when ``s < 1``."""
    w, h = size
    ww, wh = w / s, h / s
    x0 = rng.uniform(min(0.0, w - ww), max(0.0, w - ww))
    y0 = rng.uniform(min(0.0, h - wh), max(0.0, h - wh))
    return x0, y0, x0 + ww, y0 + wh


def window_image(img: Image.Image, win, resample=Image.BILINEAR, fill=None) -> Image.Image:
    """The pixels of ``img`` seen through ``win``, at ``img``'s size (outside: ``fill``)."""
    if fill is None:
        fill = tuple(int(v) for v in np.asarray(img).reshape(-1, len(img.getbands())).mean(0))
    return img.transform(img.size, Image.EXTENT, data=tuple(win), resample=resample, fillcolor=fill)


def window_boxes(boxes: np.ndarray, classes: np.ndarray, win, size: tuple[int, int]):
    """Boxes ``[n, 4]`` (and their ``classes``) of an image of ``size`` as seen through
    ``win``: moved, scaled, clipped to the frame; those keeping < :data:`MIN_VISIBLE` dropped."""
    w, h = size
    sx, sy = w / (win[2] - win[0]), h / (win[3] - win[1])
    moved = (boxes - np.array([win[0], win[1], win[0], win[1]], dtype=np.float64)) * [sx, sy, sx, sy]
    clipped = np.clip(moved, 0, [w, h, w, h])
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    keep = area(clipped) >= MIN_VISIBLE * np.maximum(area(moved), 1e-9)
    return clipped[keep].astype(np.float32), classes[keep]


def flipped(data: DenseData) -> DenseData:
    """Every image of ``data`` mirrored left-right, with its boxes or mask."""
    boxes = None if data.boxes is None else [flip_boxes(b, im.width) for b, im in zip(data.boxes, data.images)]
    masks = None if data.masks is None else [flip_mask(m) for m in data.masks]
    return DenseData([flip_image(im) for im in data.images], data.label_names, data.source + " (flipped)",
                     boxes, data.classes, masks)


def scale_jittered(data: DenseData, low: float, high: float, seed: int = 0) -> DenseData:
    """Every image of ``data`` zoomed by a factor drawn from ``[low, high]`` (see the module)."""
    if not 0.25 <= low <= high <= 4.0:
        raise InvalidInput(f"scale jitter {low}-{high} must satisfy 0.25 <= low <= high <= 4")
    rng = np.random.default_rng([seed, 7])
    images, boxes, classes, masks = [], [], [], []
    for i, im in enumerate(data.images):
        win = window(im.size, float(rng.uniform(low, high)), rng)
        images.append(window_image(im, win))
        if data.boxes is not None:
            b, c = window_boxes(data.boxes[i], data.classes[i], win, im.size)
            boxes.append(b)
            classes.append(c)
        if data.masks is not None:
            masks.append(np.asarray(window_image(Image.fromarray(data.masks[i]), win, Image.NEAREST, 0)))
    return DenseData(images, data.label_names, data.source + f" (scale jitter {low}-{high})",
                     boxes if data.boxes is not None else None, classes if data.boxes is not None else None,
                     masks if data.masks is not None else None)


def augmented(data: DenseData, flip: bool, jitter: tuple[float, float] | None, seed: int = 0) -> DenseData:
    """``data``, then its mirror images (``flip``), then a scale-jittered copy of both (``jitter``)."""
    parts = [data] + ([flipped(data)] if flip else [])
    if jitter is not None:
        parts += [scale_jittered(p, jitter[0], jitter[1], seed + k) for k, p in enumerate(list(parts))]
    return concat(parts)


def concat(parts: list[DenseData]) -> DenseData:
    first = parts[0]
    join = (lambda attr: None if getattr(first, attr) is None  # noqa: E731
            else [x for p in parts for x in getattr(p, attr)])
    return DenseData(join("images"), first.label_names, first.source, join("boxes"), join("classes"),
                     join("masks"))
