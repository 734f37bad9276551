"""The dense demos, built offline from Debian packages.

- ``shapes-detect``: 224-px canvases with 1-4 Fashion-MNIST objects pasted at random
  scales (34-84 px) and places on a noisy, cluttered background; each box is the exact
  extent of the object's non-zero pixels. Four grouped classes (tops, trousers/dresses,
  footwear, bags). Train canvases use the official train images, test canvases the
  official test images: no object is seen in both. (Debian ``dataset-fashion-mnist``)
- ``brain-regions``: axial slices of the Colin27 T1 MRI (``ch2.nii.gz``) with the AAL atlas
  on the same 1-mm grid (``aal.nii.gz``), its 116 regions grouped into lobes; train on one
  range of slices, test on another; ``ch2bet.nii.gz`` (the same head, skull-stripped) gives
  the same slices under a domain shift. (Debian ``mricron-data``, read with nibabel)
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from adapters.errors import InvalidInput
from training.data.demo import FASHION_MNIST_DIR, _read_idx
from training.dense.data import DenseData

CANVAS = 224
SHAPE_GROUPS = {"top": (0, 2, 4, 6), "trousers-dress": (1, 3), "footwear": (5, 7, 9), "bag": (8,)}
MRICRON = Path("/usr/share/mricron/templates")
REGION_WORDS = {  # AAL name fragments -> region (first match wins); the rest is "deep-other"
    "cerebellum": ("Cerebelum", "Vermis"),
    "frontal": ("Frontal", "Precentral", "Rolandic", "Supp_Motor", "Olfactory", "Rectus", "Paracentral"),
    "parietal": ("Parietal", "Postcentral", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Temporal", "Heschl", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "occipital": ("Occipital", "Calcarine", "Cuneus", "Lingual", "Fusiform"),
}
REGIONS = ["background", *REGION_WORDS, "deep-other"]
TRAIN_SLICES = (range(20, 62), range(82, 140))  # axial z (1 mm): test is 66..77, 4-mm gaps
TEST_SLICES = range(66, 78)


def shapes_detect(split: str, n: int, seed: int = 0) -> DenseData:
    """``n`` canvases of the ``split`` ("train" or "test") with exact boxes."""
    prefix = "train" if split == "train" else "t10k"
    files = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not all(f.is_file() for f in files):
        raise InvalidInput(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; install the Debian "
                           "package: apt-get install -y dataset-fashion-mnist")
    labels = _read_idx(files[1], 8, 2049)
    objects = _read_idx(files[0], 16, 2051).reshape(len(labels), 28, 28)
    group = np.zeros(10, dtype=np.int64)
    for g, members in enumerate(SHAPE_GROUPS.values()):
        group[list(members)] = g
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images, boxes, classes = [], [], []
    for _ in range(n):
        canvas = rng.normal(40, 12, (CANVAS, CANVAS)).clip(0, 255)
        for _ in range(rng.integers(2, 6)):  # clutter: faint rectangles no box names
            x, y, w, h = rng.integers(0, CANVAS - 20, 2).tolist() + rng.integers(8, 40, 2).tolist()
            canvas[y:y + h, x:x + w] += rng.uniform(10, 35)
        bs, cs = [], []
        for _ in range(rng.integers(1, 5)):
            i = int(rng.integers(len(labels)))
            size = int(rng.integers(34, 85))
            obj = np.asarray(Image.fromarray(objects[i]).resize((size, size), Image.BILINEAR), dtype=np.float64)
            ys, xs = np.nonzero(obj > 0)
            if not len(xs):
                continue
            x0, y0 = rng.integers(0, CANVAS - size, 2).tolist()
            if any(_overlap((x0, y0, x0 + size, y0 + size), b) > 0.3 for b in bs):
                continue
            region = canvas[y0:y0 + size, x0:x0 + size]
            np.maximum(region, obj, out=region)
            bs.append((x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1))
            cs.append(int(group[labels[i]]))
        images.append(Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).convert("RGB"))
        boxes.append(np.array(bs, dtype=np.float32).reshape(-1, 4))
        classes.append(np.array(cs, dtype=np.int64))
    return DenseData(images, list(SHAPE_GROUPS), f"shapes-detect {split}: {n} canvases of {CANVAS} px with "
                     "1-4 Fashion-MNIST objects (Debian dataset-fashion-mnist)", boxes, classes)


def _overlap(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def brain_regions(split: str, volume: str = "ch2") -> DenseData:
    """Axial slices of ``volume`` (``ch2`` or ``ch2bet``) with grouped AAL regions as masks:
    the train slices or the held-out test slices (:data:`TRAIN_SLICES`, :data:`TEST_SLICES`)."""
    files = MRICRON / f"{volume}.nii.gz", MRICRON / "aal.nii.gz", MRICRON / "aal.nii.txt"
    if not all(f.is_file() for f in files):
        raise InvalidInput(f"{volume}.nii.gz / aal.nii.gz not found in {MRICRON}; install the Debian "
                           "package: apt-get install -y mricron-data")
    t1 = np.asanyarray(nib.load(files[0]).dataobj).astype(np.float32)  # [x, y, z]
    atlas = np.asanyarray(nib.load(files[1]).dataobj)
    if t1.shape != atlas.shape:
        raise InvalidInput(f"{volume} {t1.shape} and the atlas {atlas.shape} are not on one grid")
    lut = np.full(int(atlas.max()) + 1, REGIONS.index("deep-other"), dtype=np.uint8)
    lut[0] = 0
    for line in files[2].read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            lut[int(parts[0])] = _region(parts[1])
    zs = [z for r in TRAIN_SLICES for z in r] if split == "train" else list(TEST_SLICES)
    scale = 255.0 / max(float(np.percentile(t1, 99.5)), 1.0)
    images, masks = [], []
    for z in zs:  # rows = anterior at the top: y flipped, x left-right as stored
        img = np.flipud((t1[:, :, z] * scale).clip(0, 255).T).astype(np.uint8)
        images.append(Image.fromarray(img).convert("RGB"))
        masks.append(np.flipud(lut[atlas[:, :, z]].T).copy())
    return DenseData(images, list(REGIONS), f"brain-regions {split}: {len(zs)} axial slices of Colin27 "
                     f"{volume}.nii.gz with grouped AAL regions (Debian mricron-data)", masks=masks)


def _region(name: str) -> int:
    for region, words in REGION_WORDS.items():
        if any(w in name for w in words):
            return REGIONS.index(region)
    return REGIONS.index("deep-other")


DEMOS = {"shapes-detect": "detection", "brain-regions": "segmentation"}
"""Dense demo name -> its task type."""
