"""Typed answers of dense tasks for :meth:`Client.detect` / :meth:`Client.segment`.

A detection answer is a list of :class:`Detection` per image (box in the image's pixels,
label, score, best first); a segmentation answer is one :class:`Mask` per image, whose
``classes`` is the label index of every pixel (``uint8 [height, width]``, decoded from the
server's PNG) and ``labels`` the task's labels those indices name.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from taskswap_client.models import PredictResponse


@dataclass(frozen=True)
class Detection:
    """One object: ``box`` is ``(x0, y0, x1, y1)`` in the input image's pixels (origin top left)."""

    box: tuple[float, float, float, float]
    label: str
    score: float


@dataclass
class Mask:
    """One image's segmentation: ``classes[y, x]`` indexes ``labels``."""

    classes: np.ndarray
    labels: list[str]
    shares: dict[str, float] = field(default_factory=dict)

    def of(self, label: str) -> np.ndarray:
        """The boolean mask ``[height, width]`` of one label."""
        if label not in self.labels:
            raise KeyError(f"{label!r} is not one of the task's labels {self.labels}")
        return self.classes == self.labels.index(label)


@dataclass
class DenseAnswer:
    """One dense task's answers with the adapter version that gave them."""

    task: str
    version: str
    detections: list[list[Detection]] | None = None  # detection: per image, best first
    masks: list[Mask] | None = None  # segmentation: per image


def dense_answer(response: PredictResponse, labels: list[str] | None = None) -> DenseAnswer:
    """The typed answer of the first task of a ``/predict`` response (a dense task's).

    ``labels``: the task's labels, which a mask's indices name (``Client.show(task).labels``);
    without them, a mask's labels are those it has shares for (the server answers every label's).
    """
    result = response.results[0]
    preds = result.predictions
    if any(p.boxes is not None for p in preds):
        return DenseAnswer(result.task, result.version, detections=[
            [Detection(tuple(b.box), b.label, b.score) for b in p.boxes or []] for p in preds])
    if any(p.mask_png is not None for p in preds):
        return DenseAnswer(result.task, result.version, masks=[
            Mask(_png(p.mask_png), list(labels or p.shares or {}), dict(p.shares or {})) for p in preds])
    raise ValueError(f"task {result.task!r} ({result.task_type}) answers neither boxes nor masks")


def _png(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))), dtype=np.uint8)
