"""``scratch`` for dense task types: a small conv net from random weights with the same dense
head, trained end to end (a baseline for the transfer report, not an adapter).

The net gives maps at the strides the head reads with the channels the backbone's maps have
there, so the head is the very same module a ``head`` or ``lora`` run trains: a 3x3 stride-2
stem, then per stride-2 stage a stride-2 3x3 conv and a 3x3 conv, each with BatchNorm and
ReLU (channels 16, 24, then the backbone's own at strides 8, 16, 32).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from adapters.backbones.base import Backbone
from training.dense.augment import augmented
from training.dense.data import DenseData
from training.dense.fit import DenseFit, DenseFitConfig, fit_epochs, new_head

_LOW_CHANNELS = {2: 16, 4: 24}  # below the first map the head may read


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ScratchTrunk(nn.Module):
    """Stride-2 stages up to the deepest stride read; ``forward`` gives the maps at ``strides``.

    >>> net = ScratchTrunk([8, 16], {8: 32, 16: 96, 32: 320})
    >>> [tuple(m.shape) for m in net(torch.zeros(1, 3, 64, 64))]
    [(1, 32, 8, 8), (1, 96, 4, 4)]
    """

    def __init__(self, strides: list[int], map_channels: dict[int, int]):
        super().__init__()
        self.strides = list(strides)
        stages, c, s = [], 3, 1
        while s < max(strides):
            s *= 2
            out = map_channels.get(s, _LOW_CHANNELS.get(s, c))
            stages.append(_block(c, out))
            c = out
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, s = {}, 1
        for stage in self.stages:
            x, s = stage(x), s * 2
            out[s] = x
        return [out[s] for s in self.strides]  # [b, c_s, S/s, S/s] per stride


def fit_dense_scratch(backbone: Backbone, data: DenseData, cfg: DenseFitConfig, task) -> DenseFit:
    """A :class:`ScratchTrunk` and a dense head trained together on ``data`` from random weights
    (``backbone`` only preprocesses the images and names the maps' channels)."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train = augmented(data, cfg.flip, cfg.scale_jitter, cfg.seed)
    pixels = backbone.preprocess(train.images, cfg.input_size)["pixel_values"].float()
    trunk = ScratchTrunk(cfg.strides, backbone.map_channels)
    head, spec = new_head(cfg, [backbone.map_channels[s] for s in cfg.strides], len(data.label_names), task)
    trunk.train()
    groups = [{"params": list(trunk.parameters()), "lr": cfg.trunk_lr},
              {"params": list(head.parameters()), "lr": cfg.lr}]
    history = fit_epochs(head, train, cfg, task, lambda idx: head(trunk(pixels[idx])), groups, t0)
    trunk.eval().requires_grad_(False)
    head.eval().requires_grad_(False)

    def maps_of(images: list) -> list[torch.Tensor]:
        parts = []
        with torch.no_grad():
            for i in range(0, len(images), cfg.trunk_batch):
                parts.append(trunk(backbone.preprocess(images[i:i + cfg.trunk_batch],
                                                       cfg.input_size)["pixel_values"].float()))
        return [torch.cat(p) for p in zip(*parts)]

    n_params = sum(p.numel() for p in trunk.parameters())
    return DenseFit(head, spec, history, {"trunk": 0.0, "fit": time.perf_counter() - t0}, maps_of,
                    notes={"scratch_trunk_parameters": n_params, "trunk_lr": cfg.trunk_lr})
