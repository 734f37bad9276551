"""``digits-on-photos``: a held-out COCO-format detection data set built offline from
scikit-learn's own files, new to the project beside the ``shapes-detect`` demo (which
pastes Fashion-MNIST on synthetic noise).

Objects are scikit-learn's handwritten digits (``load_digits``: 1,797 8x8 scans of 43
writers, UCI), scaled up to 14-36 % of the canvas and inked in a random colour (the class
is the digit's shape, never its colour); the background is a random crop of a real photo
(``load_sample_image``: ``china.jpg`` for the train split, ``flower.jpg`` for the test
split, so the test canvases also sit on a background the model never saw). Train objects
come from the first 1,347 digits, test objects from the last 450: no scan is in both. Each
box is the exact extent of the digit's inked pixels (alpha > 0.25). Written as a COCO folder
(``images/*.png`` + ``annotations.json``) by :func:`write_digits_coco`::

    taskswap data digits-coco --out data/digits --canvas 128 --train 300 --test 100
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_image

from adapters.errors import InvalidInput
from training.dense.data import DenseData, write_coco

TRAIN_DIGITS = 1347  # load_digits' first 1,347 scans train, the last 450 test
PHOTOS = {"train": "china.jpg", "test": "flower.jpg"}
INK = 0.25  # alpha above which a pixel belongs to the digit (its box)


def digits_on_photos(split: str, n: int, canvas: int = 128, digits: tuple[int, ...] = tuple(range(10)),
                     seed: int = 0) -> DenseData:
    """``n`` canvases of ``canvas`` px of the ``split`` ("train" or "test"), each with one to
    three of ``digits`` (labels ``"0"``... in that order) and their exact boxes."""
    if split not in PHOTOS:
        raise InvalidInput(f"split {split!r} is not 'train' or 'test'")
    if not digits or len(set(digits)) != len(digits) or not set(digits) <= set(range(10)):
        raise InvalidInput(f"digits must be distinct digits 0-9, got {list(digits)}")
    if not 48 <= canvas <= 1024:
        raise InvalidInput(f"canvas {canvas} px is outside 48 to 1024")
    scans = load_digits()
    pick = slice(0, TRAIN_DIGITS) if split == "train" else slice(TRAIN_DIGITS, None)
    images8, targets = scans.images[pick], scans.target[pick]
    keep = np.isin(targets, digits)
    images8, targets = images8[keep], targets[keep]
    photo = load_sample_image(PHOTOS[split])  # [h, w, 3] uint8
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images, boxes, classes = [], [], []
    for _ in range(n):
        side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2])))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        bg = Image.fromarray(photo[y:y + side, x:x + side]).resize((canvas, canvas), Image.BILINEAR)
        img = np.asarray(bg, dtype=np.float64).copy()
        bs, cs = [], []
        for _ in range(rng.integers(1, 4)):
            i = int(rng.integers(len(targets)))
            size = int(rng.integers(int(canvas * 0.14), int(canvas * 0.36) + 1))
            alpha = np.asarray(Image.fromarray((images8[i] * 255 / 16).astype(np.uint8)).resize(
                (size, size), Image.BILINEAR), dtype=np.float64) / 255  # [size, size] in [0, 1]
            ys, xs = np.nonzero(alpha > INK)
            x0, y0 = rng.integers(0, canvas - size + 1, 2).tolist()
            box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
            if any(_iou(box, b) > 0.2 for b in bs):
                continue
            ink = rng.integers(0, 256, 3).astype(np.float64)
            region = img[y0:y0 + size, x0:x0 + size]
            region[:] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
            bs.append(box)
            cs.append(digits.index(int(targets[i])))
        images.append(Image.fromarray(img.clip(0, 255).astype(np.uint8)))
        boxes.append(np.array(bs, dtype=np.float32).reshape(-1, 4))
        classes.append(np.array(cs, dtype=np.int64))
    return DenseData(images, [str(d) for d in digits],
                     f"digits-on-photos {split}: {n} canvases of {canvas} px with 1-3 scikit-learn digits "
                     f"on {PHOTOS[split]}", boxes, classes)


def write_digits_coco(folder: Path, train: int, test: int, canvas: int = 128,
                      digits: tuple[int, ...] = tuple(range(10)), seed: int = 0) -> dict[str, Path]:
    """Both splits as COCO folders ``folder/train`` and ``folder/test``: split -> annotations.json."""
    return {split: write_coco(digits_on_photos(split, n, canvas, digits, seed), Path(folder) / split)
            for split, n in (("train", train), ("test", test)) if n > 0}


def _iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
