"""``segmentation``: a class per pixel, from a small decoder over two or three strides.

The head (:class:`adapters.dense_heads.DenseHead`) gives one logit map per class at the
finest stride read; the logits are resized (bilinear) straight to the caller's image size
and the argmax is the class of each pixel, so the mask is in the caller's pixels.

Answers per image: ``shares`` (each label's fraction of the pixels), ``segments``
(``[{"label", "rle", "share"}]`` for every label present, the mask as COCO RLE in its
uncompressed form: ``pycocotools.mask.frPyObjects`` reads it) and ``mask_png`` (the class
index map as a base64 8-bit PNG: pixel value = index into ``labels``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from adapters.tasks.base import OutputArray, RowResult
from adapters.tasks.dense import DenseTaskType
from adapters.tasks.masks import png_base64, png_decode, rle_encode

MAX_CLASSES = 255  # the PNG mask is 8-bit
OUTSIDE = 255  # a typed mask's value past an image's own size (no class: labels stop at 254)


class Segmentation(DenseTaskType):
    name = "segmentation"

    def n_out(self, m) -> int:
        return len(m.labels)

    def check_manifest(self, m) -> list[str]:
        problems = super().check_manifest(m)
        if len(m.labels) < 2 or len(m.labels) > MAX_CLASSES:
            problems.append(f"a segmentation task needs 2 to {MAX_CLASSES} labels (background "
                            f"included), got {len(m.labels)}")
        return problems

    def rows(self, adapter, out) -> list[RowResult]:
        labels = adapter.manifest.labels
        if isinstance(out, torch.Tensor):  # a probe of the answer's fields: no maps
            return [RowResult(shares=dict.fromkeys(labels, 0.0), segments=[], mask_png="")
                    for _ in range(len(out))]
        return [answer(label_map(raw, size, sent), labels)
                for raw, size, sent in zip(out.raw, out.image_sizes, out.source_sizes)]


    def arrays(self, rows: list[RowResult]) -> list[OutputArray]:
        """``mask`` uint8 ``[n, H, W]`` (each input's class index map; a request of images of
        different sizes pads each to the largest with 255, which names no class),
        ``mask_size`` int32 ``[n, 2]`` (each image's height and width) and ``shares`` float32
        ``[n, labels]``."""
        maps = [png_decode(r.mask_png) if r.mask_png else np.zeros((0, 0), np.uint8) for r in rows]
        h = max((m.shape[0] for m in maps), default=0)
        w = max((m.shape[1] for m in maps), default=0)
        mask = np.full((len(maps), h, w), OUTSIDE, dtype=np.uint8)
        for i, m in enumerate(maps):
            mask[i, :m.shape[0], :m.shape[1]] = m
        labels = list(rows[0].shares) if rows else []
        return [OutputArray("mask", mask),
                OutputArray("mask_size", np.array([m.shape for m in maps], dtype=np.int32).reshape(-1, 2),
                            ["height", "width"]),
                OutputArray("shares", np.array([[r.shares[k] for k in labels] for r in rows],
                                               dtype=np.float32).reshape(len(rows), len(labels)), labels)]


def label_map(raw: torch.Tensor, image_size: tuple[int, int],
              sent_size: tuple[int, int] | None = None) -> np.ndarray:
    """The class index of every pixel ``[height, width]`` of the caller's image: chosen at the
    decoded ``image_size`` (logits resized bilinearly), then, when the caller sent a larger
    image (``sent_size``), scaled up nearest-neighbour: one byte per sent pixel, never one
    float per class and pixel."""
    w, h = image_size
    logits = F.interpolate(raw[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    classes = logits.argmax(0).numpy().astype(np.uint8)
    if sent_size is None or tuple(sent_size) == (w, h):
        return classes
    return np.asarray(Image.fromarray(classes).resize(tuple(sent_size), Image.NEAREST))


def answer(classes: np.ndarray, labels: list[str]) -> RowResult:
    counts = np.bincount(classes.ravel(), minlength=len(labels))
    total = max(int(classes.size), 1)
    shares = {lab: float(n) / total for lab, n in zip(labels, counts.tolist())}
    segments = [{"label": labels[i], "rle": rle_encode(classes == i), "share": shares[labels[i]]}
                for i in np.flatnonzero(counts).tolist()]
    return RowResult(shares=shares, segments=segments, mask_png=png_base64(classes))
