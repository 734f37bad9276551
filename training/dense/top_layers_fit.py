"""``top_layers`` for dense task types: the trunk's last ``cfg.layers`` blocks up to the one that
makes the deepest map the head reads are the task's own copy, fine-tuned jointly with a dense head.

Which blocks: on MobileNetV2 a detector reading the stride 8/16 maps ends at ``layer.11`` (the
stride-16 map), so ``layers=2`` copies ``layer.10``-``layer.11``; a segmenter reading 8/16/32 ends at
the last block (``layer.15``, which carries the final ``conv_1x1``: copied, never trained, since no
map read comes after it). The server runs the frozen trunk below the split once for every row of
the size group and these rows through their own blocks (:mod:`adapters.kinds.piecewise`).

The frozen part runs once: each training image's (and augmented copy's) hidden state at the split
and its maps below the split are cached; every step runs only the copied blocks (BatchNorm
statistics frozen: eval mode, as the server runs them; their affine weights train) and the head.
The head is warm-started on the frozen maps (:mod:`training.dense.warm`). The blocks train at
``blocks_lr``, the head at ``lr``, AdamW with the cosine schedule of every dense method.
"""

from __future__ import annotations

import time

import torch

from adapters.backbones.base import Backbone
from adapters.backbones.feature_names import map_feature
from adapters.errors import InvalidInput
from adapters.kinds.layouts import layout_of
from adapters.kinds.top_layers import blocks_state_of
from training.dense.augment import augmented
from training.dense.data import DenseData
from training.dense.fit import DenseFit, DenseFitConfig, fit_epochs
from training.dense.warm import start_head
from training.trunk_copy import trainable_copy


def dense_blocks(backbone: Backbone, strides: list[int], layers: int) -> list[int]:
    """The blocks a dense top-layers task on ``strides`` owns: the last ``layers`` up to the block
    that makes the deepest of those maps."""
    lay = layout_of(backbone)
    end = lay.last_block_read(backbone.model, backbone, {map_feature(s) for s in strides}) + 1
    if not 1 <= layers <= end:
        raise InvalidInput(f"--layers must be 1..{end} for maps at strides {strides} (the deepest is "
                           f"made by block {end - 1}), got {layers}")
    return list(range(end - layers, end))


def fit_dense_top_layers(backbone: Backbone, data: DenseData, cfg: DenseFitConfig, task) -> DenseFit:
    """The last ``cfg.layers`` blocks below the deepest map read (a copy) plus a dense head, on ``data``."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train = augmented(data, cfg.flip, cfg.scale_jitter, cfg.seed)
    blocks = dense_blocks(backbone, cfg.strides, cfg.layers)
    split, end = blocks[0], blocks[-1] + 1
    model = trainable_copy(backbone).requires_grad_(False)  # eval mode: BatchNorm statistics frozen
    lay = layout_of(backbone)
    mods = [[model.get_submodule(n) for n in names] for names in lay.block_modules(model)]
    stride_at = {lay.block_of_hidden(backbone.feature_maps[s]): s for s in cfg.strides}

    def run(h: torch.Tensor, first: int, last: int, maps: dict) -> torch.Tensor:
        for b in range(first, last):
            s = stride_at.get(b)
            h = lay.run_block(mods[b], h, None, model,
                              tap=None if s is None else (lambda t, s=s: maps.__setitem__(s, t)))
        return h

    def frozen(images: list) -> tuple[torch.Tensor, dict]:
        """The hidden states at the split and the maps below it, in trunk batches."""
        hs, below = [], {}
        with torch.no_grad():
            for i in range(0, len(images), cfg.trunk_batch):
                px = backbone.preprocess(images[i:i + cfg.trunk_batch], cfg.input_size)["pixel_values"]
                maps: dict = {}
                hs.append(run(lay.stem(model, {"pixel_values": px.to(backbone.device)}), 0, split, maps))
                for s, t in maps.items():
                    below.setdefault(s, []).append(t)
        return torch.cat(hs), {s: torch.cat(t) for s, t in below.items()}

    def maps_from(h: torch.Tensor, below: dict) -> list[torch.Tensor]:
        maps = dict(below)
        run(h, split, end, maps)
        return [maps[s] for s in cfg.strides]

    h_split, below = frozen(train.images)
    t_trunk = time.perf_counter() - t0
    with torch.no_grad():
        channels = [int(m.shape[1]) for m in maps_from(h_split[:1], {s: t[:1] for s, t in below.items()})]
    head, spec, warm = start_head(backbone, data, cfg, task, channels)
    own = [p for b in blocks for m in mods[b] for p in m.parameters()]
    for p in own:
        p.requires_grad_(True)
    groups = [{"params": own, "lr": cfg.blocks_lr}, {"params": list(head.parameters()), "lr": cfg.lr}]
    history = fit_epochs(head, train, cfg, task,
                         lambda idx: head(maps_from(h_split[idx], {s: t[idx] for s, t in below.items()})),
                         groups, t0)
    head.eval().requires_grad_(False)
    model.requires_grad_(False)

    def maps_of(images: list) -> list[torch.Tensor]:
        h, low = frozen(images)
        with torch.no_grad():
            return [m.cpu() for m in maps_from(h, low)]

    state = blocks_state_of(model, backbone.model_type, blocks)
    return DenseFit(head, spec, history, {"trunk": t_trunk, "fit": time.perf_counter() - t0 - t_trunk}, maps_of,
                    trunk_state=state, manifest_extra={"top_layers": {"blocks": blocks}},
                    notes={**warm, "layers": len(blocks), "blocks": blocks, "blocks_lr": cfg.blocks_lr,
                           "trained_parameters": sum(p.numel() for p in own)})
