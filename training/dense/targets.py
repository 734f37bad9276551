"""Training targets of dense heads on the output grid, and horizontal flips that keep boxes
and masks consistent with their image.

Detection (CenterNet): per class a heat map with a Gaussian bump at each box centre (1 at
the centre cell, spread by the box size), and at each centre cell the sub-cell offset and
the log box size in cells, as :func:`adapters.tasks.detection.decode` reads them back.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps


def flip_image(img: Image.Image) -> Image.Image:
    return ImageOps.mirror(img)


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes ``[n, 4]`` of an image ``width`` pixels wide, mirrored left-right."""
    out = boxes.copy()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def flip_mask(mask: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mask[:, ::-1])


def detection_targets(boxes: np.ndarray, classes: np.ndarray, image_size: tuple[int, int],
                      input_size: int, stride: int, n_classes: int):
    """``heat [C, g, g]``, ``reg [4, g, g]`` (offset x, y in cells; log w, h in cells) and
    ``centre [g, g]`` (bool: cells holding a box centre) for one image's boxes in its pixels."""
    g = input_size // stride
    heat = np.zeros((n_classes, g, g), dtype=np.float32)
    reg = np.zeros((4, g, g), dtype=np.float32)
    centre = np.zeros((g, g), dtype=bool)
    sx, sy = input_size / image_size[0], input_size / image_size[1]
    ys, xs = np.mgrid[0:g, 0:g].astype(np.float32)
    for (x0, y0, x1, y1), c in zip(boxes.tolist(), classes.tolist()):
        bw, bh = (x1 - x0) * sx / stride, (y1 - y0) * sy / stride  # cells
        cx, cy = (x0 + x1) / 2 * sx / stride, (y0 + y1) / 2 * sy / stride
        ix, iy = min(int(cx), g - 1), min(int(cy), g - 1)
        sgx, sgy = max(bw / 6, 0.5), max(bh / 6, 0.5)
        bump = np.exp(-((xs - ix) ** 2 / (2 * sgx ** 2) + (ys - iy) ** 2 / (2 * sgy ** 2)))
        np.maximum(heat[c], bump, out=heat[c])
        heat[c, iy, ix] = 1.0
        reg[:, iy, ix] = (cx - ix, cy - iy, np.log(max(bw, 1e-3)), np.log(max(bh, 1e-3)))
        centre[iy, ix] = True
    return torch.from_numpy(heat), torch.from_numpy(reg), torch.from_numpy(centre)


def mask_target(mask: np.ndarray, input_size: int) -> torch.Tensor:
    """A class mask ``[h, w]`` resized (nearest) to the square input: ``[size, size]`` long."""
    m = Image.fromarray(mask).resize((input_size, input_size), Image.NEAREST)
    return torch.from_numpy(np.asarray(m, dtype=np.int64).copy())
