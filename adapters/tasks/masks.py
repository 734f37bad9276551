"""Mask encodings for segmentation answers: COCO run-length encoding and PNG.

COCO RLE (uncompressed form, as ``pycocotools.mask.frPyObjects`` reads it): the binary mask
is read in column-major (Fortran) order and ``counts`` alternates runs of 0 and 1, starting
with 0 (a mask starting with 1 has a first count of 0); ``size`` is ``[height, width]``.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def rle_encode(mask: np.ndarray) -> dict:
    """COCO RLE of a binary ``mask [h, w]``.

    >>> rle_encode(np.array([[0, 1], [0, 1]], dtype=bool))
    {'size': [2, 2], 'counts': [2, 2]}
    """
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def rle_decode(rle: dict) -> np.ndarray:
    """The binary mask ``[h, w]`` of :func:`rle_encode`'s output."""
    h, w = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    return np.repeat(values, rle["counts"]).reshape((h, w), order="F")


def png_base64(label_map: np.ndarray) -> str:
    """A class-index map ``[h, w]`` (< 256 classes) as a base64 8-bit grey PNG."""
    buf = io.BytesIO()
    Image.fromarray(label_map.astype(np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def png_decode(data: str) -> np.ndarray:
    """The class-index map ``[h, w]`` (uint8) of :func:`png_base64`'s output.

    >>> png_decode(png_base64(np.array([[0, 1], [2, 3]]))).tolist()
    [[0, 1], [2, 3]]
    """
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))), dtype=np.uint8)
