"""Segmentation masks from a COCO file: each annotation's ``segmentation`` (polygons, or RLE in
the uncompressed ``counts`` list form or the compressed string form) decoded with pycocotools
(``frPyObjects``, ``merge``, ``decode``) and painted into one class-index mask per image.

Labels: ``background`` (index 0, every pixel no annotation covers) then the categories in id
order. Overlaps: annotations are painted largest area first, so a smaller object on a larger one
keeps its pixels. Crowd annotations (``iscrowd: 1``, usually RLE) are that class's pixels too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from adapters.errors import InvalidInput
from training.dense.data import DenseData, coco_image, read_coco

BACKGROUND = "background"


def decode_segmentation(seg, height: int, width: int, where: str) -> np.ndarray:
    """One annotation's ``segmentation`` as a ``[height, width]`` bool mask; an ``InvalidInput``
    naming ``where`` and the problem for anything pycocotools would misread."""
    if isinstance(seg, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
        if not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
                              for p in seg):
            raise InvalidInput(f"{where}: a polygon segmentation is a list of [x0, y0, x1, y1, ...] lists "
                               "of at least 3 points (6 numbers, an even count)")
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg, dict):  # RLE: {"size": [h, w], "counts": [...] or "..."}
        size, counts = seg.get("size"), seg.get("counts")
        if list(size or []) != [height, width]:
            raise InvalidInput(f"{where}: the RLE's size {size} is not the image's [height, width] "
                               f"{[height, width]}")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or \
                    sum(counts) != height * width:
                raise InvalidInput(f"{where}: uncompressed RLE counts must be non-negative integers summing "
                                   f"to height x width ({height * width})")
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(counts, str):
            rle = {"size": [height, width], "counts": counts.encode()}
        else:
            raise InvalidInput(f"{where}: RLE counts must be a list of integers or a compressed string")
    else:
        raise InvalidInput(f"{where}: 'segmentation' must be polygons (a list) or RLE (an object), "
                           f"got {type(seg).__name__}")
    try:
        return mask_utils.decode(rle).astype(bool)
    except Exception as exc:  # pycocotools raises plain ValueError/TypeError on a corrupt string
        raise InvalidInput(f"{where}: the RLE cannot be decoded ({exc})") from exc


def load_coco_masks(path: Path, image_root: Path | None = None) -> DenseData:
    """A COCO file's ``segmentation`` annotations as per-pixel class masks (see the module docstring);
    image ``file_name``\\ s are read under ``image_root`` (default: the JSON file's folder)."""
    path = Path(path)
    doc, cats = read_coco(path)
    cat_index = {c["id"]: i + 1 for i, c in enumerate(cats)}
    root = Path(image_root) if image_root else path.parent
    per_image: dict[int, list] = {im["id"]: [] for im in doc["images"]}
    for a in doc["annotations"]:
        if a.get("image_id") not in per_image or a.get("category_id") not in cat_index:
            raise InvalidInput(f"{path}: annotation {a.get('id')} names an unknown image or category")
        if "segmentation" not in a:
            raise InvalidInput(f"{path}: annotation {a.get('id')} has no 'segmentation' (polygons or RLE); "
                               "a segmentation task trains on masks, not boxes")
        per_image[a["image_id"]].append(a)
    images, masks, ids = [], [], []
    for im in doc["images"]:
        img = coco_image(path, root, im)
        h, w = img.height, img.width
        mask = np.zeros((h, w), dtype=np.uint8)
        painted = [(decode_segmentation(a["segmentation"], h, w, f"{path}: annotation {a.get('id')}"),
                    cat_index[a["category_id"]]) for a in per_image[im["id"]]]
        for m, k in sorted(painted, key=lambda p: -int(p[0].sum())):  # largest first: small ones stay on top
            mask[m] = k
        images.append(img)
        masks.append(mask)
        ids.append(int(im["id"]))
    return DenseData(images, [BACKGROUND] + [c["name"] for c in cats],
                     f"COCO file {path.name} ({len(images)} images, masks)", masks=masks, ids=ids)
