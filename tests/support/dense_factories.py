"""Builders for dense (detection, segmentation) adapter directories on tiny vision backbones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adapters.backbones.base import Backbone
from adapters.dense_heads import DenseHead
from adapters.format import BackboneRef, DenseSpec, Manifest, write_head_adapter
from adapters.tasks import TASK_TYPES
from training.dense.data import DenseData


def dense_adapter(folder: Path, backbone: Backbone, name: str, task_type: str = "detection",
                  labels=("shirt", "shoe"), strides=(8, 16), width: int = 8, seed: int = 0,
                  input_size: int | None = None, **limits) -> Path:
    """A randomly initialised (seeded) dense head adapter directory for ``backbone``."""
    torch.manual_seed(seed)
    spec = DenseSpec(strides=list(strides), in_channels=[backbone.map_channels[s] for s in strides],
                     width=width, input_size=input_size, **limits)
    m = Manifest(name=name, kind="head", task_type=task_type, labels=list(labels),
                 backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                 dense=spec)
    head = DenseHead(spec, TASK_TYPES[task_type].n_out(m))
    for p in head.parameters():  # big enough weights that answers differ between seeds
        torch.nn.init.normal_(p, std=0.3)
    return write_head_adapter(folder, m, head.state_for_file(), card=f"# {name}\n")


def squares(n: int, seed: int) -> DenseData:
    """Canvases of 64 px with one to three bright squares (red: 'a', green: 'b'), exact boxes."""
    rng = np.random.default_rng(seed)
    images, boxes, classes = [], [], []
    for _ in range(n):
        canvas = rng.integers(0, 40, (64, 64, 3)).astype(np.uint8)
        bs, cs = [], []
        for _ in range(rng.integers(1, 4)):
            s = int(rng.integers(10, 24))
            x, y = rng.integers(0, 64 - s, 2).tolist()
            c = int(rng.integers(2))
            canvas[y:y + s, x:x + s] = (230, 30, 30) if c == 0 else (30, 230, 30)
            bs.append((x, y, x + s, y + s))
            cs.append(c)
        images.append(Image.fromarray(canvas))
        boxes.append(np.array(bs, dtype=np.float32))
        classes.append(np.array(cs))
    return DenseData(images, ["a", "b"], "squares", boxes, classes)


def mask_folders(data: DenseData, folder: Path) -> tuple[Path, Path]:
    """``data`` (with boxes) as an image folder and a PNG mask folder (a box's pixels = its
    class + 1, background 0): ``(images, masks)``."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, (img, b, c) in enumerate(zip(data.images, data.boxes, data.classes)):
        mask = np.zeros((img.height, img.width), dtype=np.uint8)
        for (x0, y0, x1, y1), k in zip(b.astype(int).tolist(), c.tolist()):
            mask[y0:y1, x0:x1] = k + 1
        img.save(folder / "images" / f"{i}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i}.png")
    return folder / "images", folder / "masks"


def with_masks(data: DenseData) -> DenseData:
    """The squares as a segmentation set: a box's pixels are its class + 1, background 0."""
    masks = []
    for im, b, c in zip(data.images, data.boxes, data.classes):
        m = np.zeros((im.height, im.width), dtype=np.uint8)
        for (x0, y0, x1, y1), k in zip(b.astype(int).tolist(), c.tolist()):
            m[y0:y1, x0:x1] = k + 1
        masks.append(m)
    return DenseData(data.images, ["background", "a", "b"], data.source, masks=masks)
