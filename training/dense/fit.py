"""Fit a dense head on the frozen trunk's spatial maps, computed once per image (and once
per flipped or scale-jittered copy, :mod:`training.dense.augment`) and cached in memory; then
score it with the served decoding. The epoch loop (:func:`fit_epochs`) is shared with the
methods that train maps too (:mod:`training.dense.lora_fit`, :mod:`training.dense.scratch_fit`).

Detection: CenterNet's penalty-reduced focal loss on the heat maps plus L1 on the centre
cells' offsets and log sizes. Segmentation: pixel cross-entropy at the input size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from adapters.backbones.base import Backbone
from adapters.dense_heads import DenseHead
from adapters.format import DenseSpec
from training.dense.data import DenseData
from training.dense.augment import augmented
from training.dense.targets import detection_targets, mask_target
from training.progress import LAST_EPOCH, Progress

LOWEST_THRESHOLD = 0.01
"""A trained detector's ``dense.min_score_threshold``: the mAP is scored on the boxes a request
at this threshold gets (COCO's AP integrates over scores, so low-scoring boxes count), and
``taskswap evaluate`` asks a server for exactly those."""

@dataclass
class DenseFitConfig:
    """How a dense head is fitted."""

    task_type: str
    strides: list[int]
    method: str = "head"  # a key of training.methods.METHODS that fits dense tasks (fits_dense)
    input_size: int = 224
    width: int = 64
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 16
    flip: bool = True
    scale_jitter: tuple[float, float] | None = None  # (low, high): one zoomed copy per image (augment.py)
    seed: int = 0
    trunk_batch: int = 32
    limits: dict = field(default_factory=lambda: {"min_score_threshold": LOWEST_THRESHOLD})
    """score_threshold, min_score_threshold, max_detections... for the manifest's ``dense``."""
    progress: bool = True  # a step bar per epoch on a TTY, one line per epoch elsewhere (training.progress)
    max_seconds: float | None = None
    """A cap on the whole run's training time (maps included): the loop stops at the first step
    past it (the cosine schedule then ends early). None: every epoch runs."""
    lora_r: int = 8
    lora_alpha: int = 16
    trunk_lr: float = 1e-3
    """The learning rate of trained trunk weights (LoRA factors, a from-scratch trunk)."""
    layers: int = 2
    """top_layers: how many blocks, up to the one that makes the deepest map read, are the task's own."""
    blocks_lr: float = 3e-4
    """top_layers: the learning rate of those blocks (pretrained weights: lower than ``trunk_lr``)."""
    warm_start: bool = True
    """lora/top_layers: fit the head on the frozen maps first (as ``head`` does) and start the joint
    training from it, so the run starts where the head ends (:mod:`training.dense.warm`)."""
    warm_epochs: int | None = None
    """Epochs of that head fit (None: ``epochs``); with a cap it gets at most half of ``max_seconds``."""


@dataclass
class DenseFit:
    head: DenseHead
    spec: DenseSpec
    history: list[float]
    seconds: dict
    maps_of: Callable[[list], list[torch.Tensor]]
    """The fitted trunk's maps of images (one ``[n, c, h, w]`` CPU tensor per stride): the frozen
    trunk's for a head, through the LoRA deltas for LoRA, the own trunk's for a from-scratch model."""
    peft_model: object | None = None  # lora: the PEFT model whose save_pretrained writes the files
    trunk_state: dict | None = None  # top_layers: the own blocks' tensors under the backbone's names
    manifest_extra: dict = field(default_factory=dict)  # what the method adds to the manifest (top_layers.blocks)
    notes: dict = field(default_factory=dict)  # what the manifest's training record adds (targets...)


def trunk_maps(backbone: Backbone, images: list, strides: list[int], size: int,
               batch: int = 32) -> list[torch.Tensor]:
    """The frozen maps of ``images`` at ``strides``: one ``[n, c, h, w]`` CPU tensor per stride."""
    parts: list[list[torch.Tensor]] = [[] for _ in strides]
    for i in range(0, len(images), batch):
        f = backbone.forward(backbone.preprocess(images[i:i + batch], size), tuple(strides))
        for k, s in enumerate(strides):
            parts[k].append(f.map(s).cpu())
    return [torch.cat(p) for p in parts]


def fit_dense(backbone: Backbone, data: DenseData, cfg: DenseFitConfig, task) -> DenseFit:
    """A dense head for ``data`` on ``backbone``'s frozen maps; ``task``: the task type's
    training half (:class:`training.tasks.dense.DenseTraining`)."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train = augmented(data, cfg.flip, cfg.scale_jitter, cfg.seed)
    maps = trunk_maps(backbone, train.images, cfg.strides, cfg.input_size, cfg.trunk_batch)
    t_trunk = time.perf_counter() - t0
    head, spec = new_head(cfg, [int(m.shape[1]) for m in maps], len(data.label_names), task)
    history = fit_epochs(head, train, cfg, task, lambda idx: head([m[idx] for m in maps]),
                         [{"params": list(head.parameters()), "lr": cfg.lr}], t0)
    head.eval().requires_grad_(False)
    return DenseFit(head, spec, history, {"trunk": t_trunk, "fit": time.perf_counter() - t0 - t_trunk},
                    lambda images: trunk_maps(backbone, images, cfg.strides, cfg.input_size, cfg.trunk_batch))


def new_head(cfg: DenseFitConfig, channels: list[int], n_cls: int, task) -> tuple[DenseHead, DenseSpec]:
    """A fresh dense head (seeded by the caller) reading maps of ``channels`` at ``cfg.strides``."""
    spec = DenseSpec(strides=list(cfg.strides), in_channels=channels, width=cfg.width,
                     input_size=cfg.input_size, **cfg.limits)
    head = DenseHead(spec, task.n_out(n_cls))
    task.init_head(head, n_cls)
    return head, spec


def fit_epochs(head: DenseHead, train: DenseData, cfg: DenseFitConfig, task,
               outputs: Callable[[torch.Tensor], torch.Tensor], groups: list[dict],
               started: float) -> list[float]:
    """AdamW over ``groups`` (cosine schedule) on ``task``'s loss of ``outputs(idx)`` (the head's
    ``[b, n_out, g, g]`` on the training rows ``idx``); mean loss per epoch. Stops at the first
    step past ``cfg.max_seconds`` after ``started`` (the epoch it cut counts with its steps run)."""
    n_cls = len(train.label_names)
    targets = task.dense_targets(train, cfg, head.stride)
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    n, history = len(train), []
    gen = torch.Generator().manual_seed(cfg.seed)
    # no validation split: the cosine schedule's end (the last epoch) is what is kept
    progress = Progress(f"{cfg.task_type} {cfg.method}", cfg.epochs, None, cfg.progress, epoch_lines=False)
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    head.train()
    out_of_time = False
    for epoch in range(1, cfg.epochs + 1):
        total, seen = 0.0, 0
        with progress.epoch(epoch, steps) as bar:
            for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
                loss = task.dense_loss(outputs(idx), targets, idx, n_cls)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, seen = total + loss.item() * len(idx), seen + len(idx)
                bar.step(loss.item())
                if cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds:
                    out_of_time = True
                    break
        sched.step()
        history.append(total / max(seen, 1))
        progress.epoch_done(epoch, history[-1])
        if out_of_time:
            break
    progress.kept(len(history), len(history), LAST_EPOCH)
    return history


def detection_target_set(data: DenseData, cfg: DenseFitConfig, stride: int):
    """Targets of every (augmented) training image: heat ``[n, C, g, g]``, reg ``[n, 4, g, g]``,
    centre ``[n, g, g]``."""
    t = [detection_targets(b, c, im.size, cfg.input_size, stride, len(data.label_names))
         for b, c, im in zip(data.boxes, data.classes, data.images)]
    return tuple(torch.stack(x) for x in zip(*t))


def mask_target_set(data: DenseData, cfg: DenseFitConfig) -> torch.Tensor:
    """Masks of every (augmented) training image at the input size: ``[n, size, size]``."""
    return torch.stack([mask_target(m, cfg.input_size) for m in data.masks])


def detection_loss(out: torch.Tensor, targets, idx: torch.Tensor, n_cls: int) -> torch.Tensor:
    heat_t, reg_t, centre = (t[idx] for t in targets)
    p = torch.sigmoid(out[:, :n_cls]).clamp(1e-4, 1 - 1e-4)
    pos = heat_t.eq(1).float()
    focal = -(pos * (1 - p) ** 2 * torch.log(p)
              + (1 - pos) * (1 - heat_t) ** 4 * p ** 2 * torch.log(1 - p)).sum()
    n_pos = pos.sum().clamp(min=1)
    m = centre.unsqueeze(1).float()  # [b, 1, g, g]
    reg = torch.cat([torch.sigmoid(out[:, n_cls:n_cls + 2]), out[:, n_cls + 2:n_cls + 4]], 1)
    l1 = (F.l1_loss(reg, reg_t, reduction="none") * m).sum()
    return (focal + 0.5 * l1) / n_pos


def segmentation_loss(out: torch.Tensor, masks: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    target = masks[idx]
    logits = F.interpolate(out, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, target)
