"""Dense heads on a conv backbone's spatial maps (detection, segmentation).

A head reads the maps at ``spec.strides`` (``[rows, c_i, h_i, w_i]`` each), projects each to
``spec.width`` channels with a 1x1 conv, upsamples them to the finest stride's grid and sums
them (a one-level FPN), then a 3x3 conv + ReLU and a 1x1 conv to ``n_out`` channels:
``[rows, n_out, h, w]`` at the finest stride. The task type says what the channels mean.

Weights live in ``head.safetensors`` as ``proj.{i}.weight`` / ``proj.{i}.bias``,
``fuse.weight`` / ``fuse.bias`` and ``out.weight`` / ``out.bias``.

That is the ``fpn`` head, the one training fits. :data:`DENSE_HEADS` is the table of head
architectures a manifest's ``dense.head`` names; ``ssd`` (:mod:`adapters.ssd_head`) runs a
converted pretrained SSD's predictors. Each entry is an ``nn.Module`` class built as
``cls(spec, n_out)`` with ``expected_shapes(spec, n_out)`` and a ``stride`` property.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from adapters.errors import IncompatibleAdapter, InvalidAdapter
from adapters.format.manifest import DenseSpec
from adapters.ssd_head import SSDHead


class DenseHead(nn.Module):
    """``maps (one per stride) -> [rows, n_out, h, w]`` at the finest stride.

    >>> spec = DenseSpec(strides=[8, 16], in_channels=[4, 6], width=5)
    >>> DenseHead(spec, 3)([torch.zeros(2, 4, 8, 8), torch.zeros(2, 6, 4, 4)]).shape
    torch.Size([2, 3, 8, 8])
    """

    def __init__(self, spec: DenseSpec, n_out: int):
        super().__init__()
        self.spec = spec
        self.proj = nn.ModuleList(nn.Conv2d(c, spec.width, 1) for c in spec.in_channels)
        self.fuse = nn.Conv2d(spec.width, spec.width, 3, padding=1)
        self.out = nn.Conv2d(spec.width, n_out, 1)

    @property
    def stride(self) -> int:
        """The stride of the output grid (the finest map read)."""
        return min(self.spec.strides)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        finest = self.spec.strides.index(self.stride)
        size = maps[finest].shape[-2:]
        x = None
        for proj, m in zip(self.proj, maps):
            y = proj(m)  # [rows, width, h_i, w_i]
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = y if x is None else x + y
        return self.out(F.relu(self.fuse(F.relu(x))))  # [rows, n_out, h, w]

    def state_for_file(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    @staticmethod
    def expected_shapes(spec: DenseSpec, n_out: int) -> dict[str, tuple[int, ...]]:
        return expected_dense_shapes(spec, n_out)


DENSE_HEADS: dict[str, type[nn.Module]] = {"fpn": DenseHead, "ssd": SSDHead}


def dense_head_class(spec: DenseSpec) -> type[nn.Module]:
    """The head class ``spec.head`` names; an unknown name is the adapter's fault."""
    if spec.head not in DENSE_HEADS:
        raise InvalidAdapter(f"dense.head {spec.head!r} is not a known head; use one of {sorted(DENSE_HEADS)}")
    return DENSE_HEADS[spec.head]


def expected_dense_shapes(spec: DenseSpec, n_out: int) -> dict[str, tuple[int, ...]]:
    w = spec.width
    shapes: dict[str, tuple[int, ...]] = {}
    for i, c in enumerate(spec.in_channels):
        shapes[f"proj.{i}.weight"], shapes[f"proj.{i}.bias"] = (w, c, 1, 1), (w,)
    shapes["fuse.weight"], shapes["fuse.bias"] = (w, w, 3, 3), (w,)
    shapes["out.weight"], shapes["out.bias"] = (n_out, w, 1, 1), (n_out,)
    return shapes


def check_dense_header(spec: DenseSpec, n_out: int, header: dict, map_channels: dict[int, int]) -> None:
    """Compare a dense head file's tensor shapes with the manifest and the backbone's maps
    (``map_channels``: stride -> channels), before loading."""
    problems = []
    for s, c in zip(spec.strides, spec.in_channels):
        if s not in map_channels:
            problems.append(f"dense.strides names stride {s}, but the backbone's maps are at "
                            f"strides {sorted(map_channels)}")
        elif map_channels[s] != c:
            problems.append(f"dense.in_channels gives {c} channels at stride {s}, but the "
                            f"backbone's map there has {map_channels[s]}")
    IncompatibleAdapter.collect(problems, "dense head")
    expected = dense_head_class(spec).expected_shapes(spec, n_out)
    got = {k: tuple(v[1]) for k, v in header.items()}
    for k, shape in expected.items():
        if k not in got:
            problems.append(f"head.safetensors lacks tensor {k!r} {shape}")
        elif got[k] != shape:
            problems.append(f"tensor {k!r} has shape {got[k]}, expected {shape}")
    problems += [f"unexpected tensor {k!r} in head.safetensors" for k in sorted(set(got) - set(expected))]
    InvalidAdapter.collect(problems, "dense head")


def build_dense_head(spec: DenseSpec, n_out: int, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The head ``spec.head`` names, in eval mode, holding ``tensors`` (already shape-checked)."""
    cls = dense_head_class(spec)
    head = cls(spec, n_out)
    head.load_state_dict({k: tensors[k] for k in cls.expected_shapes(spec, n_out)})
    return head.eval().requires_grad_(False)
