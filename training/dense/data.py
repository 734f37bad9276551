"""Dense data sets: images with boxes (COCO-format JSON) or with per-pixel class masks
(an image folder beside a folder of PNG masks).

A :class:`DenseData` holds PIL images and, per image, either ``boxes`` (``[n, 4]`` float
``x0, y0, x1, y1`` in the image's pixels, with ``classes [n]``) or a ``mask``
(``[h, w]`` uint8 class indices into ``label_names``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from adapters.errors import InvalidInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class DenseData:
    """Images with their boxes or masks; ``label_names`` index ``classes`` / mask values."""

    images: list[Image.Image]
    label_names: list[str]
    source: str
    boxes: list[np.ndarray] | None = None  # per image [n, 4] x0, y0, x1, y1
    classes: list[np.ndarray] | None = None  # per image [n] int
    masks: list[np.ndarray] | None = None  # per image [h, w] uint8
    ids: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.ids:
            self.ids = list(range(1, len(self.images) + 1))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def inputs(self) -> list[Image.Image]:
        """The inputs a model answers (what :class:`training.data.LabelledData` calls them)."""
        return self.images

    @property
    def modality(self) -> str:
        return "image"

    @property
    def kind(self) -> str:
        return "detection" if self.boxes is not None else "segmentation"

    def subset(self, idx: list[int]) -> "DenseData":
        pick = (lambda xs: None if xs is None else [xs[i] for i in idx])  # noqa: E731
        return DenseData([self.images[i] for i in idx], self.label_names, self.source,
                         pick(self.boxes), pick(self.classes), pick(self.masks), [self.ids[i] for i in idx])


def load_coco(path: Path, image_root: Path | None = None) -> DenseData:
    """A COCO-format detection file (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]``
    and ``category_id``, ``categories``); image ``file_name``\\ s are read under
    ``image_root`` (default: the JSON file's folder). Crowd annotations are skipped."""
    path = Path(path)
    doc, cats = read_coco(path)
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    root = Path(image_root) if image_root else path.parent
    per_image: dict[int, list] = {im["id"]: [] for im in doc["images"]}
    for a in doc["annotations"]:
        if a.get("iscrowd"):
            continue
        if a.get("image_id") not in per_image or a.get("category_id") not in cat_index:
            raise InvalidInput(f"{path}: annotation {a.get('id')} names an unknown image or category")
        x, y, w, h = a["bbox"]
        if w <= 0 or h <= 0:
            raise InvalidInput(f"{path}: annotation {a.get('id')} has an empty bbox {a['bbox']}")
        per_image[a["image_id"]].append((x, y, x + w, y + h, cat_index[a["category_id"]]))
    images, boxes, classes, ids = [], [], [], []
    for im in doc["images"]:
        images.append(coco_image(path, root, im))
        rows = np.array(per_image[im["id"]], dtype=np.float32).reshape(-1, 5)
        boxes.append(rows[:, :4])
        classes.append(rows[:, 4].astype(np.int64))
        ids.append(int(im["id"]))
    return DenseData(images, [c["name"] for c in cats], f"COCO file {path.name} ({len(images)} images)",
                     boxes, classes, None, ids)


def read_coco(path: Path) -> tuple[dict, list[dict]]:
    """``(document, categories in id order)`` of a COCO JSON file, checked for its three lists."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not a readable COCO JSON file ({exc})") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a COCO file is a JSON object with images, annotations, categories")
    missing = [k for k in ("images", "annotations", "categories") if k not in doc]
    if missing:
        raise InvalidInput(f"{path}: a COCO file needs {missing}")
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    if not cats:
        raise InvalidInput(f"{path}: 'categories' is empty")
    return doc, cats


def coco_image(path: Path, root: Path, im: dict) -> Image.Image:
    """The RGB image of a COCO ``images`` entry, read under ``root``."""
    try:
        return Image.open(root / im["file_name"]).convert("RGB")
    except OSError as exc:
        raise InvalidInput(f"{path}: image {im['file_name']!r} cannot be read under {root} ({exc})") from exc


def write_coco(data: DenseData, folder: Path) -> Path:
    """``data`` (with boxes) as a COCO folder: ``images/*.png`` and ``annotations.json``."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    doc = {"images": [], "annotations": [],
           "categories": [{"id": i + 1, "name": n} for i, n in enumerate(data.label_names)]}
    for img, b, c, i in zip(data.images, data.boxes, data.classes, data.ids):
        name = f"images/{i:06d}.png"
        img.save(folder / name)
        doc["images"].append({"id": i, "file_name": name, "width": img.width, "height": img.height})
        for (x0, y0, x1, y1), k in zip(b.tolist(), c.tolist()):
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i, "category_id": k + 1,
                                       "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                       "iscrowd": 0})
    out = folder / "annotations.json"
    out.write_text(json.dumps(doc))
    return out


def load_mask_folders(images_dir: Path, masks_dir: Path, label_names: list[str]) -> DenseData:
    """Images and their masks: ``masks_dir/<stem>.png`` (8-bit, value = class index into
    ``label_names``) for each image of ``images_dir``."""
    images, masks = [], []
    files = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInput(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for f in files:
        m = Path(masks_dir) / f"{f.stem}.png"
        if not m.is_file():
            raise InvalidInput(f"image {f.name} has no mask {m}")
        img, mask = Image.open(f).convert("RGB"), np.asarray(Image.open(m))
        if mask.ndim != 2 or mask.shape != (img.height, img.width):
            raise InvalidInput(f"mask {m.name} is {mask.shape}, expected one channel of {(img.height, img.width)}")
        if int(mask.max()) >= len(label_names):
            raise InvalidInput(f"mask {m.name} holds class {int(mask.max())}, but there are "
                               f"{len(label_names)} labels")
        images.append(img)
        masks.append(mask.astype(np.uint8))
    return DenseData(images, list(label_names), f"mask folders {Path(images_dir).name}", masks=masks)
