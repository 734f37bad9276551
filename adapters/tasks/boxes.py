"""Box helpers for detection: IoU and greedy per-class non-maximum suppression.

Written here because torchvision's compiled ``nms`` is not usable with the CPU torch build
on these machines (docs/architecture.md, Backbones); the loop is over kept boxes only.
"""

from __future__ import annotations

import torch


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a [n, 4]`` against ``b [m, 4]`` (``x0, y0, x1, y1``): ``[n, m]``.

    >>> box_iou(torch.tensor([[0., 0, 2, 2]]), torch.tensor([[1., 1, 3, 3]])).item()
    0.1428571492433548
    """
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou: float,
        limit: int | None = None) -> list[int]:
    """Indices kept by greedy per-class NMS, best score first (at most ``limit``): a box is
    dropped when it overlaps a kept box of the same class by more than ``iou``. The pairwise
    test is one tensor op, read back as plain lists: the greedy loop touches no tensor (400
    candidates that all survive cost about a second per image when it indexed tensors).

    >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]])
    >>> nms(b, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5)
    [0, 2]
    """
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    suppresses = ((box_iou(boxes, boxes) > iou) & (classes[:, None] == classes[None, :])).tolist()
    kept: list[int] = []
    for i in order:
        row = suppresses[i]
        if not any(row[j] for j in kept):
            kept.append(i)
            if limit is not None and len(kept) >= limit:
                break
    return kept
