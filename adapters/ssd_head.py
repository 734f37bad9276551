"""An SSD head (TensorFlow object detection API): per map a 3x3 box predictor and a 3x3 class
predictor over anchors, the anchors of ``ssd_anchor_generator`` and the box decoding of
``faster_rcnn_box_coder``.

The ``ssd`` entry of :data:`adapters.dense_heads.DENSE_HEADS`: a detection task whose
``dense.head`` is ``"ssd"`` runs it on the maps at ``dense.strides``
(``[rows, c_i, h_i, w_i]`` each). Its output per row is ``[anchors, 4 + labels]``: each
anchor's decoded box ``[x0, y0, x1, y1]`` as fractions of the input (clipped to [0, 1]), then
the sigmoid score of each label's class channel (``dense.ssd.label_channels``); the
detection task type keeps the boxes above its threshold and runs per-class NMS.

Weights in ``head.safetensors``: ``box.{i}.weight`` ``[anchors_i * 4, c_i, 3, 3]`` (TF's
``(ty, tx, th, tw)`` per anchor), ``box.{i}.bias``, ``cls.{i}.weight``
``[anchors_i * num_classes, c_i, 3, 3]`` and ``cls.{i}.bias``.

    >>> from adapters.format.manifest import DenseSpec, SSDSpec
    >>> spec = DenseSpec(head="ssd", strides=[16, 32], in_channels=[4, 6], ssd=SSDSpec(
    ...     num_classes=3, label_channels=[1, 2], anchors_per_cell=[3, 6]))
    >>> SSDHead(spec, 6)([torch.zeros(1, 4, 4, 4), torch.zeros(1, 6, 2, 2)]).shape
    torch.Size([1, 72, 6])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adapters.errors import InvalidAdapter

MAX_LOG_SCALE = math.log(1000.0 / 16)  # torchvision's clamp on exp(th), exp(tw): keeps a wild box finite


def layer_box_specs(spec, layers: int) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) of each anchor of each map, in TensorFlow's order."""
    s = spec.ssd
    scales = [s.min_scale + (s.max_scale - s.min_scale) * i / max(layers - 1, 1) for i in range(layers)] + [1.0]
    out = []
    for i in range(layers):
        if i == 0 and s.reduce_boxes_in_lowest_layer:
            out.append([(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)])
            continue
        boxes = [(scales[i], ar) for ar in s.aspect_ratios]
        if s.interpolated_scale_aspect_ratio > 0:
            boxes.append((math.sqrt(scales[i] * scales[i + 1]), s.interpolated_scale_aspect_ratio))
        out.append(boxes)
    return out


def ssd_anchors(spec, grids: list[tuple[int, int]]) -> torch.Tensor:
    """Anchors ``[n, 4]`` as ``(y centre, x centre, height, width)`` fractions of the input,
    ordered map by map, then row, column and anchor (the predictors' output order).

    >>> from adapters.format.manifest import DenseSpec, SSDSpec
    >>> spec = DenseSpec(head="ssd", strides=[16, 32], in_channels=[1, 1],
    ...                  ssd=SSDSpec(label_channels=[1], anchors_per_cell=[3, 6]))
    >>> ssd_anchors(spec, [(19, 19), (10, 10)]).shape
    torch.Size([1683, 4])
    """
    out = []
    for (h, w), boxes in zip(grids, layer_box_specs(spec, len(grids))):
        scale = torch.tensor([b[0] for b in boxes], dtype=torch.float32)
        ratio = torch.tensor([b[1] for b in boxes], dtype=torch.float32).sqrt()
        heights, widths = scale / ratio, scale * ratio  # [a]
        yc = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xc = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        a = len(boxes)
        grid = torch.stack([yc[:, None, None].expand(h, w, a), xc[None, :, None].expand(h, w, a),
                            heights.expand(h, w, a), widths.expand(h, w, a)], -1)  # [h, w, a, 4]
        out.append(grid.reshape(-1, 4))
    return torch.cat(out)


class SSDHead(nn.Module):
    """``maps -> [rows, anchors, 4 + labels]``: decoded boxes and label scores (module docstring)."""

    def __init__(self, spec, n_out: int):
        super().__init__()
        self.spec = spec
        s = spec.ssd
        self.box = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                 for c, a in zip(spec.in_channels, s.anchors_per_cell))
        self.cls = nn.ModuleList(nn.Conv2d(c, a * s.num_classes, 3, padding=1)
                                 for c, a in zip(spec.in_channels, s.anchors_per_cell))
        self.register_buffer("channels", torch.tensor(s.label_channels), persistent=False)
        self._anchors: dict[tuple, torch.Tensor] = {}

    @property
    def stride(self) -> int:
        return min(self.spec.strides)

    def anchors(self, grids: list[tuple[int, int]], device) -> torch.Tensor:
        key = (tuple(grids), str(device))
        if key not in self._anchors:  # a benign race: two threads compute the same tensor
            self._anchors[key] = ssd_anchors(self.spec, grids).to(device)
        return self._anchors[key]

    def predict(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictors' raw outputs: box codes ``[rows, n, 4]`` and class logits
        ``[rows, n, num_classes]`` (``n`` anchors, in :func:`ssd_anchors`' order)."""
        rows, k = maps[0].shape[0], self.spec.ssd.num_classes
        codes = torch.cat([b(m).permute(0, 2, 3, 1).reshape(rows, -1, 4) for b, m in zip(self.box, maps)], 1)
        logits = torch.cat([c(m).permute(0, 2, 3, 1).reshape(rows, -1, k) for c, m in zip(self.cls, maps)], 1)
        return codes, logits

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        codes, logits = self.predict(maps)
        anchors = self.anchors([tuple(m.shape[-2:]) for m in maps], codes.device)  # [n, 4]
        sy, sx, sh, sw = self.spec.ssd.box_scales
        yc = codes[..., 0] / sy * anchors[:, 2] + anchors[:, 0]
        xc = codes[..., 1] / sx * anchors[:, 3] + anchors[:, 1]
        h = torch.exp((codes[..., 2] / sh).clamp(max=MAX_LOG_SCALE)) * anchors[:, 2]
        w = torch.exp((codes[..., 3] / sw).clamp(max=MAX_LOG_SCALE)) * anchors[:, 3]
        boxes = torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], -1).clamp(0, 1)
        scores = torch.sigmoid(logits[..., self.channels])  # [rows, n, labels]
        return torch.cat([boxes, scores], -1)

    def state_for_file(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    @staticmethod
    def expected_shapes(spec, n_out: int) -> dict[str, tuple[int, ...]]:
        s = spec.ssd
        if s is None:
            raise InvalidAdapter("dense head 'ssd' needs dense.ssd (anchors, box coder, class channels)")
        problems = []
        if len(s.anchors_per_cell) != len(spec.strides):
            problems.append(f"dense.ssd.anchors_per_cell has {len(s.anchors_per_cell)} entries for "
                            f"{len(spec.strides)} maps (dense.strides)")
        if len(s.label_channels) + 4 != n_out:
            problems.append(f"dense.ssd.label_channels has {len(s.label_channels)} entries for "
                            f"{n_out - 4} labels")
        InvalidAdapter.collect(problems, "dense head 'ssd'")
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (c, a) in enumerate(zip(spec.in_channels, s.anchors_per_cell)):
            shapes[f"box.{i}.weight"], shapes[f"box.{i}.bias"] = (a * 4, c, 3, 3), (a * 4,)
            shapes[f"cls.{i}.weight"], shapes[f"cls.{i}.bias"] = (a * s.num_classes, c, 3, 3), (a * s.num_classes,)
        return shapes
