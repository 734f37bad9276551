"""``detection``: boxes, labels and scores per image, from an anchor-free CenterNet-style head.

Why CenterNet: one output grid at the finest stride read (stride 8 on MobileNetV2: a
28x28 grid at 224 px), no anchors to tune per data set, training targets that are a
Gaussian per box centre (exact boxes of small data sets suit it), and decoding that is a
3x3 max-pool peak search, so NMS has little left to do. The head's channels are
``[labels..., offset_x, offset_y, log_w, log_h]``: a sigmoid heat map per class, the
centre's sub-cell offset (sigmoid, in cells) and the box size (``exp``, in cells).

A task may instead carry a converted pretrained SSD (``dense.head: "ssd"``,
:mod:`adapters.ssd_head`: anchors, TF box decoding), e.g. the ``coco-objects`` demo on the
``ssd-mobilenet-v2-coco`` backbone; its rows are decoded by :func:`decode_ssd`. Each head
architecture this type reads has one decoder in ``DECODERS``.

Answers per image: ``boxes``: ``[{"box": [x0, y0, x1, y1], "label", "score"}]`` in the
caller's image pixels, best first, at most ``max_detections`` with a score at least the
threshold (the manifest's ``dense.score_threshold``, or a request's ``threshold`` down to
``dense.min_score_threshold``; a request's ``max_detections`` up to the manifest's).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from adapters.tasks.base import OutputArray, RowResult
from adapters.tasks.boxes import nms
from adapters.tasks.dense import DenseTaskType

MAX_LOG_SIZE = 8.0  # exp(8) cells: far past any input; keeps a wild output finite


class Detection(DenseTaskType):
    name = "detection"
    options = frozenset({"threshold", "max_detections"})

    @property
    def heads(self) -> frozenset[str]:
        return frozenset(DECODERS)

    def n_out(self, m) -> int:
        return len(m.labels) + 4

    def check_options(self, m, options: dict) -> list[str]:
        d, problems = m.dense, []
        t = options.get("threshold")
        if t is not None and not d.min_score_threshold <= t <= 1:
            problems.append(f"threshold {t} is outside task {m.name!r}'s limits: use "
                            f"{d.min_score_threshold} to 1 (dense.min_score_threshold)")
        k = options.get("max_detections")
        if k is not None and not 1 <= k <= d.max_detections:
            problems.append(f"max_detections {k} is outside task {m.name!r}'s limits: use "
                            f"1 to {d.max_detections}")
        return problems

    def answers(self, adapter, out, options: dict) -> list[RowResult]:
        return self.rows(adapter, out, options)

    def rows(self, adapter, out, options: dict | None = None) -> list[RowResult]:
        if isinstance(out, torch.Tensor):  # a probe of the answer's fields: no maps
            return [RowResult(boxes=[]) for _ in range(len(out))]
        m, options = adapter.manifest, options or {}
        threshold = options.get("threshold", m.dense.score_threshold)
        limit = options.get("max_detections", m.dense.max_detections)
        rows = DECODERS[m.dense.head]
        return [RowResult(boxes=rows(raw, out, size, m, threshold, limit))
                for raw, size in zip(out.raw, out.source_sizes)]


    def arrays(self, rows: list[RowResult]) -> list[OutputArray]:
        """Every box of the request, image after image: ``boxes`` float32 ``[n, 4]``
        (``x0, y0, x1, y1`` in the caller's pixels), ``labels`` ``[n]``, ``scores`` float32
        ``[n]`` and ``box_image`` int32 ``[n]`` (the index of the input each box is on)."""
        found = [(i, b) for i, r in enumerate(rows) for b in r.boxes or []]
        return [OutputArray("boxes", np.array([b["box"] for _, b in found], dtype=np.float32).reshape(-1, 4),
                            ["x0", "y0", "x1", "y1"]),
                OutputArray("labels", np.array([b["label"] for _, b in found], dtype=object)),
                OutputArray("scores", np.array([b["score"] for _, b in found], dtype=np.float32)),
                OutputArray("box_image", np.array([i for i, _ in found], dtype=np.int32))]


def decode(raw: torch.Tensor, stride: int, input_size: int, image_size: tuple[int, int],
           labels: list[str], threshold: float, limit: int, iou: float) -> list[dict]:
    """Boxes of one image from its head output ``raw [labels + 4, h, w]``."""
    c = len(labels)
    heat = torch.sigmoid(raw[:c])  # [labels, h, w]
    peaks = heat * (heat == F.max_pool2d(heat[None], 3, 1, 1)[0])
    h, w = heat.shape[-2:]
    k = min(peaks.numel(), 4 * limit)
    scores, idx = peaks.flatten().topk(k)
    keep = scores >= threshold
    scores, idx = scores[keep], idx[keep]
    if not len(idx):
        return []
    cls, pos = idx // (h * w), idx % (h * w)
    y, x = pos // w, pos % w
    off = torch.sigmoid(raw[c:c + 2, y, x])  # [2, n]
    size = torch.exp(raw[c + 2:c + 4, y, x].clamp(max=MAX_LOG_SIZE)) * stride  # [2, n] pixels
    cx, cy = (x + off[0]) * stride, (y + off[1]) * stride
    boxes = torch.stack([cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2], 1)
    boxes = boxes.clamp(0, input_size)  # [n, 4] in the square input's pixels
    sx, sy = image_size[0] / input_size, image_size[1] / input_size
    boxes = boxes * torch.tensor([sx, sy, sx, sy])  # the caller's pixels
    kept = nms(boxes, scores, cls, iou, limit)
    return [{"box": [round(v, 2) for v in boxes[i].tolist()], "label": labels[int(cls[i])],
             "score": float(scores[i])} for i in kept]


def decode_ssd(raw: torch.Tensor, image_size: tuple[int, int], labels: list[str], threshold: float,
               limit: int, iou: float) -> list[dict]:
    """Boxes of one image from an SSD head's output ``raw [anchors, 4 + labels]`` (boxes as
    fractions of the input, then label scores): per-class NMS over the candidates at or
    above ``threshold`` (the best ``MAX_SSD_CANDIDATES``), best first, at most ``limit``."""
    boxes, scores = raw[:, :4], raw[:, 4:]  # [n, 4], [n, labels]
    anchor, cls = torch.nonzero(scores >= threshold, as_tuple=True)
    if not len(anchor):
        return []
    cand = scores[anchor, cls]
    if len(cand) > MAX_SSD_CANDIDATES:
        cand, top = cand.topk(MAX_SSD_CANDIDATES)
        anchor, cls = anchor[top], cls[top]
    w, h = image_size
    picked = boxes[anchor] * torch.tensor([w, h, w, h], dtype=boxes.dtype)  # the caller's pixels
    kept = nms(picked, cand, cls, iou, limit)
    return [{"box": [round(v, 2) for v in picked[i].tolist()], "label": labels[int(cls[i])],
             "score": float(cand[i])} for i in kept]


MAX_SSD_CANDIDATES = 1000
"""The most (anchor, label) pairs NMS looks at per image (TF's postprocessor keeps 100 per class)."""


def _centernet_rows(raw, out, size, m, threshold, limit) -> list[dict]:
    return decode(raw, out.stride, out.input_size, size, m.labels, threshold, limit, m.dense.nms_iou)


def _ssd_rows(raw, out, size, m, threshold, limit) -> list[dict]:
    return decode_ssd(raw, size, m.labels, threshold, limit, m.dense.nms_iou)


DECODERS = {"fpn": _centernet_rows, "ssd": _ssd_rows}
"""``dense.head`` -> how its output of one row becomes boxes."""
