"""The one in-memory shape of a labelled data set, and seeded, stratified ways to cut it.

Every loader (files, demo data sets) returns a :class:`LabelledData`; training code never
cares where examples came from. Image inputs may stay on disk as ``Path`` (opened lazily
with :func:`open_image`) so a folder of thousands of photos costs no memory until used.

Example::

    >>> d = LabelledData("text", ["good", "bad", "fine", "awful"], [1, 0, 1, 0], ["neg", "pos"], "toy")
    >>> a, b = stratified_split(d, 0.5, seed=0)
    >>> len(a), len(b), a.class_counts()
    (2, 2, {'neg': 1, 'pos': 1})
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from adapters.backbones.audio_io import Audio, AudioLimits, load_audio_file
from adapters.errors import InvalidInput


@dataclass
class LabelledData:
    """Examples with integer labels indexing ``label_names``.

    ``inputs`` holds ``str`` for text, ``PIL.Image.Image`` or ``pathlib.Path`` for images, and
    ``pathlib.Path`` or decoded ``Audio`` clips for audio.
    ``source`` is a human description that ends up in model cards.

    >>> d = LabelledData("text", ["a", "b"], [0, 1], ["x", "y"], "toy")
    >>> len(d), d.subset([1]).inputs
    (2, ['b'])
    """

    modality: Literal["text", "image", "audio"]
    inputs: list
    labels: list[int]
    label_names: list[str]
    source: str
    values: list[list[float]] | None = None
    """Regression data: ``[n][outputs]`` real targets; ``label_names`` then names the outputs
    and ``labels`` is empty."""

    def __post_init__(self) -> None:
        # Cheap structural checks, so a bug in a loader fails here, not deep in training.
        if self.modality not in ("text", "image", "audio"):
            raise InvalidInput(f"modality is {self.modality!r}; use 'text', 'image' or 'audio'")
        if self.values is not None:
            self._check_values()
            return
        if len(self.inputs) != len(self.labels):
            raise InvalidInput(f"{len(self.inputs)} inputs but {len(self.labels)} labels")
        if len(set(self.label_names)) != len(self.label_names):
            raise InvalidInput(f"label_names has duplicates: {self.label_names}")
        k = len(self.label_names)
        bad = sorted({y for y in self.labels if not 0 <= y < k})
        if bad:
            raise InvalidInput(f"label indices {bad[:10]} are outside 0..{k - 1} ({k} label names)")

    def _check_values(self) -> None:
        if self.labels:
            raise InvalidInput("regression data has values, not labels")
        if len(self.inputs) != len(self.values):
            raise InvalidInput(f"{len(self.inputs)} inputs but {len(self.values)} target rows")
        k = len(self.label_names)
        if k == 0 or len(set(self.label_names)) != k:
            raise InvalidInput(f"regression outputs must be distinct names, got {self.label_names}")
        bad = [i for i, row in enumerate(self.values)
               if len(row) != k or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in row)]
        if bad:
            raise InvalidInput(f"target rows {bad[:10]} are not {k} finite numbers "
                               f"({', '.join(self.label_names)})")

    @property
    def task_type(self) -> str:
        """``regression`` for data with real-valued targets, else ``single_label``."""
        return "regression" if self.values is not None else "single_label"

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int]) -> "LabelledData":
        """The examples at ``indices`` (in that order), same label set and source."""
        idx = [int(i) for i in indices]
        if self.values is not None:
            return replace(self, inputs=[self.inputs[i] for i in idx], values=[self.values[i] for i in idx])
        return replace(self, inputs=[self.inputs[i] for i in idx], labels=[self.labels[i] for i in idx])

    def class_counts(self) -> dict[str, int]:
        """Examples per label name, in label order, zeros included.

        >>> LabelledData("text", ["a", "b", "c"], [1, 1, 0], ["x", "y", "z"], "toy").class_counts()
        {'x': 1, 'y': 2, 'z': 0}
        """
        if self.values is not None:
            return {}
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.label_names))
        return {name: int(c) for name, c in zip(self.label_names, counts)}


def open_image(x: "Image.Image | Path | str") -> Image.Image:
    """An RGB ``PIL.Image`` from a path or an image (grayscale, RGBA, palette... all converted).

    >>> open_image(Image.new("L", (4, 4))).mode
    'RGB'
    """
    if isinstance(x, Image.Image):
        return x if x.mode == "RGB" else x.convert("RGB")
    if isinstance(x, (str, Path)):
        try:
            with Image.open(x) as im:
                return im.convert("RGB")  # convert() loads the pixels, so the file can close
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InvalidInput(f"cannot read image {x}: {exc}") from exc
    raise InvalidInput(f"expected a PIL image or a path, got {type(x).__name__}")


# Training files may be longer than a request's clip; the decoded-memory bound still holds.
TRAINING_LIMITS = AudioLimits(max_bytes=64 << 20, max_seconds=120.0, max_decoded_bytes=256 << 20)


def open_audio(x: "Audio | Path | str", limits: AudioLimits = TRAINING_LIMITS) -> Audio:
    """A decoded mono 16 kHz clip from a path (or a clip, returned as is)."""
    if isinstance(x, Audio):
        return x
    if isinstance(x, (str, Path)):
        return load_audio_file(x, limits)
    raise InvalidInput(f"expected an audio clip or a path, got {type(x).__name__}")


def open_input(x, modality: str):
    """The model input for one stored example: text as is, images opened, audio decoded."""
    if modality == "text":
        return x
    if modality == "audio":
        return open_audio(x)
    return open_image(x)


def _by_class(labels: Sequence[int]) -> dict[int, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    return {int(c): np.flatnonzero(y == c) for c in np.unique(y)}


def stratified_split(data: LabelledData, fraction: float, seed: int = 0) -> tuple[LabelledData, LabelledData]:
    """Split into ``(a, b)`` with about ``fraction`` of every class in ``a``, the rest in ``b``.

    Deterministic for a given seed. Each class with at least two examples gets at least one
    in each part, so a small class never vanishes from the test side.

    >>> d = LabelledData("text", list("abcdefghij"), [0] * 5 + [1] * 5, ["x", "y"], "toy")
    >>> a, b = stratified_split(d, 0.8, seed=1)
    >>> a.class_counts(), b.class_counts()
    ({'x': 4, 'y': 4}, {'x': 1, 'y': 1})
    """
    if not 0.0 < fraction < 1.0:
        raise InvalidInput(f"fraction is {fraction}; use a number strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    a_idx, b_idx = [], []
    # Regression data has no classes: one stratum, a seeded random split.
    strata = {0: np.arange(len(data))} if data.values is not None else _by_class(data.labels)
    for _, idx in sorted(strata.items()):
        idx = rng.permutation(idx)
        n_a = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n_a = min(max(n_a, 1), len(idx) - 1)
        a_idx.extend(idx[:n_a])
        b_idx.extend(idx[n_a:])
    # Original order inside each part: stable, readable, and independent of class order.
    return data.subset(sorted(a_idx)), data.subset(sorted(b_idx))


def take_per_class(data: LabelledData, n: int, seed: int = 0) -> LabelledData:
    """A label budget: at most ``n`` randomly chosen examples of each class (seeded).

    >>> d = LabelledData("text", list("abcde"), [0, 0, 0, 1, 1], ["x", "y"], "toy")
    >>> take_per_class(d, 2).class_counts()
    {'x': 2, 'y': 2}
    """
    if n < 1:
        raise InvalidInput(f"n is {n}; take at least 1 example per class")
    rng = np.random.default_rng(seed)
    keep = []
    for _, idx in sorted(_by_class(data.labels).items()):
        keep.extend(rng.permutation(idx)[:n])
    return data.subset(sorted(keep))


def stratified_sample_indices(labels: Sequence[int], k: int, seed: int = 0) -> list[int]:
    """Indices of a seeded sample of ``min(k, len(labels))`` examples, classes kept in proportion.

    Quotas use largest remainders, and every class present gets at least one example when
    ``k`` allows, so a 20-example sample of a 10-class set still has all 10 classes.

    >>> stratified_sample_indices([0, 0, 0, 0, 1, 1, 1, 1, 2, 2], 5, seed=0).__len__()
    5
    """
    n = len(labels)
    if k < 1:
        raise InvalidInput(f"limit is {k}; use a positive number of examples")
    if k >= n:
        return list(range(n))
    groups = sorted(_by_class(labels).items())
    sizes = np.array([len(idx) for _, idx in groups], dtype=np.float64)
    exact = k * sizes / n
    quota = np.floor(exact).astype(np.int64)
    # Hand out the remaining slots to the largest fractional parts (ties: lower class first).
    for j in np.argsort(-(exact - quota), kind="stable")[: k - int(quota.sum())]:
        quota[j] += 1
    if k >= len(groups):
        # Give each empty class one slot, taken from the class with the largest quota.
        for j in np.flatnonzero(quota == 0):
            quota[int(np.argmax(quota))] -= 1
            quota[j] = 1
    rng = np.random.default_rng(seed)
    keep = []
    for (_, idx), q in zip(groups, quota):
        keep.extend(rng.permutation(idx)[:q])
    return sorted(int(i) for i in keep)


def stratified_sample(data: LabelledData, k: int, seed: int = 0) -> LabelledData:
    """At most ``k`` examples, classes in proportion (see :func:`stratified_sample_indices`).

    >>> d = LabelledData("text", list("abcdef"), [0, 0, 0, 0, 1, 1], ["x", "y"], "toy")
    >>> stratified_sample(d, 3).class_counts()
    {'x': 2, 'y': 1}
    """
    if data.values is not None:  # regression: no classes to keep in proportion
        keep = np.random.default_rng(seed).permutation(len(data))[:k]
        return data.subset(sorted(int(i) for i in keep))
    return data.subset(stratified_sample_indices(data.labels, k, seed))
