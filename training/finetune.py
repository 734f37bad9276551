"""The end-to-end training loop shared by ``lora``, ``top_layers`` and ``scratch``: trunk + head, minibatches.

Inputs are preprocessed per minibatch by the backbone's own preprocessor (the server's
transform), pooled with the runtime's own :class:`~adapters.backbones.base.Features`, so
a trained trunk + head scores rows the way the server will.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from adapters.backbones.base import Backbone, Features
from adapters.format import HeadSpec
from adapters.heads import Head
from training.config import TrainConfig
from training.data import LabelledData, open_input
from training.features import extract_features
from training.head_fit import EarlyStopping, History, _features_for_head, fold_standardisation
from training.progress import LAST_EPOCH, Progress, highest
from training.tasks import training_task


def encode(model: nn.Module, backbone: Backbone, inputs: list, pooling: str) -> torch.Tensor:
    """``[len(inputs), hidden]`` pooled features of ``model`` (gradients flow when enabled)."""
    inputs = [open_input(x, backbone.modality) for x in inputs]
    batch = {k: v.to(backbone.device) for k, v in backbone.preprocess(inputs).items()}
    out = model(**batch)
    return Features(out, batch.get("attention_mask")).get(pooling)


def predict_probs(model: nn.Module, head: Head, backbone: Backbone, inputs: list, pooling: str,
                  batch_size: int, task=None, scaling: dict | None = None) -> torch.Tensor:
    """``[n, n_outputs]`` served outputs (softmax probabilities by default; the task type's
    ``outputs`` otherwise), ``batch_size`` rows per forward, no gradients."""
    task = task or training_task("single_label")
    parts = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            feats = encode(model, backbone, inputs[start:start + batch_size], pooling)
            parts.append(task.outputs(head(feats), scaling).cpu())
    return torch.cat(parts) if parts else torch.zeros(0, head.linear_layers()[-1].out_features)


class StandardisedHead(nn.Module):
    """A fresh head that reads centred, rescaled features while it trains with the trunk.

    Pooled features differ in scale between backbones (MiniLM's mean-pooled dimensions have
    a std of ~0.17, MobileNetV2's pooler ~0.66 over 3x the dimensions), so one head learning
    rate cannot suit raw features of both. The head sees ``(x - mean) / scale``: ``mean``
    per dimension and ``scale`` one number (the mean per-dimension std), both from the
    *frozen* trunk's features of the training rows and fixed while the trunk moves.
    One number, not the ``head`` method's per-dimension std: dividing each dimension by its
    own frozen std amplifies the near-constant ones, exactly those fine-tuning moves most
    (measured on Rotten Tomatoes: 3-5 accuracy points lower, docs/top-layers.md).
    :meth:`folded` returns the plain :class:`Head` with the transform folded into its first
    layer, so the saved head takes raw features exactly as the server computes them.
    With mean 0 and std 1 it is a plain head on raw features (``fresh_head(init="normal")``).
    """

    def __init__(self, spec: HeadSpec, n_outputs: int, mean: torch.Tensor, std: torch.Tensor,
                 dropout: float = 0.0):
        super().__init__()
        self.spec, self.n_outputs = spec, n_outputs
        self.dropout = nn.Dropout(dropout)  # on the head's input while training; identity in eval
        self.net = Head(spec.model_copy(update={"normalize": False}), n_outputs)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.dropout((_features_for_head(self.spec, x) - self.mean) / self.std))

    def linear_layers(self):
        return self.net.linear_layers()

    def folded(self) -> Head:
        """The equivalent head on raw features (eval mode, no gradients)."""
        final = Head(self.spec, self.n_outputs).to(self.mean.device)
        final.load_state_dict(self.net.state_dict())
        fold_standardisation(final, self.mean, self.std)
        return final.eval().requires_grad_(False)


def fresh_head(backbone: Backbone, spec: HeadSpec, n_outputs: int, train: LabelledData,
               batch_size: int, cache_dir=None, progress: bool = False,
               dropout: float = 0.0, init: str = "standardised") -> StandardisedHead:
    """The head fine-tuning starts from. ``init="standardised"``: a :class:`StandardisedHead`
    with statistics of the frozen features of ``train`` (one frozen pass) at the default
    init; ``"normal"``: the same class on raw features (mean 0, scale 1, no frozen pass), its
    weights drawn at std 0.02 and biases zero, as BERT initialises its classifier."""
    if init == "normal":
        zero = torch.zeros(spec.input_dim)
        head = StandardisedHead(spec, n_outputs, zero, torch.ones_like(zero), dropout)
        for layer in head.linear_layers():
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        return head.to(backbone.device)
    x = _features_for_head(spec, extract_features(backbone, train.inputs, spec.pooling, cache_dir,
                                                  batch_size, progress, "features (head scale)"))
    mean = x.mean(0)
    scale = float(x.std(0, unbiased=False).mean()) if len(x) > 1 else 1.0
    return StandardisedHead(spec, n_outputs, mean, torch.full_like(mean, scale if scale > 1e-6 else 1.0),
                            dropout).to(backbone.device)


class BestHeadline:
    """Keeps the state with the highest validation headline (accuracy, R²...), ties going to
    the lower validation loss; ``step`` returns True after ``patience`` epochs without a
    better one (the interface of :class:`training.head_fit.EarlyStopping`)."""

    def __init__(self, patience: int, headline_name: str = "accuracy"):
        self.patience, self.best_epoch, self.state, self._bad = patience, 0, None, 0
        self.best: tuple[float, float] | None = None  # (headline, loss)
        self.rule = highest(headline_name)  # what chose the kept epoch, in words

    def step(self, epoch: int, val_loss: float, state: dict, headline: float = 0.0) -> bool:
        b = self.best
        if b is None or headline > b[0] + 1e-9 or (headline >= b[0] - 1e-9 and val_loss < b[1] - 1e-6):
            self.best, self.best_epoch, self._bad = (headline, val_loss), epoch, 0
            self.state = copy.deepcopy(state)
            return False
        self._bad += 1
        return self._bad >= self.patience


class KeepLast:
    """Keeps the newest state and never stops early (``select == "last"``): with a schedule
    that decays to 0, the end of the schedule is the state to keep, and on a small validation
    set the best-scoring epoch is partly chance."""

    rule = LAST_EPOCH

    def __init__(self):
        self.best_epoch, self.state = 0, None

    def step(self, epoch: int, val_loss: float, state: dict, headline: float = 0.0) -> bool:
        self.best_epoch, self.state = epoch, copy.deepcopy(state)
        return False


@dataclass
class Loop:
    """What the loop trains: ``model`` + ``head``; ``set_train(flag)`` sets module modes;
    ``state()`` / ``load(state)`` snapshot and restore what early stopping keeps."""

    model: nn.Module
    head: Head
    params: list[nn.Parameter]
    set_train: Callable[[bool], None]
    state: Callable[[], dict]
    load: Callable[[dict], None]
    groups: list[dict] | None = None
    """AdamW parameter groups (own ``lr`` / ``weight_decay``); None: ``params`` at ``cfg.lr``."""
    warmup_fraction: float | None = None
    """Set: the lr rises linearly over this share of all steps, then falls linearly to 0."""


def _val_loss(loop: Loop, backbone: Backbone, val: LabelledData, pooling: str, batch: int,
              task, scaling) -> tuple[float, float]:
    """(loss, headline) on ``val`` on the training scale (raw head outputs vs scaled targets)."""
    raw = predict_probs(loop.model, loop.head, backbone, val.inputs, pooling, batch,
                        _Raw(), None)  # [n, k] head outputs
    y = task.targets(val, scaling)
    return float(task.loss(raw, y)), task.headline(raw, y)


class _Raw:
    """A stand-in task type whose outputs are the raw head outputs."""

    @staticmethod
    def outputs(logits, scaling=None):
        return logits


class _Schedule:
    """Linear warm-up over ``fraction`` of the steps, then linear decay to 0 at ``total``.

    With a wall-clock budget, ``total`` is the planned steps or, if fewer fit, the steps that
    fit: re-estimated after every step from the time per step so far (validation passes
    included), so a run cut by its budget still ends its schedule at lr 0 instead of being
    stopped at a high lr part-way down.
    """

    def __init__(self, planned: int, fraction: float, deadline: float | None):
        self.planned = self.total = max(1, planned)
        self.fraction, self.deadline = fraction, deadline
        self.done, self.start = 0, time.monotonic()

    def begin(self) -> None:
        self.start = time.monotonic()

    def factor(self, t: int) -> float:
        warm = max(1, int(self.fraction * self.total))
        return (t + 1) / warm if t < warm else max(0.0, (self.total - t) / max(1, self.total - warm))

    def stepped(self) -> None:
        self.done += 1
        if self.deadline is not None and self.done >= 3:
            per_step = (time.monotonic() - self.start) / self.done
            fit = self.done + int(max(0.0, self.deadline - time.monotonic()) / per_step)
            self.total = max(self.done, min(self.planned, fit))

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def run_loop(loop: Loop, backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig,
             pooling: str, desc: str, scaling: dict | None = None) -> History:
    """AdamW + the task type's loss (``cfg.task_type``) with gradient clipping; keeps the
    state with the lowest val loss (``cfg.select == "loss"``) or the highest val headline
    (``"headline"``; ties: the lower loss). ``scaling``: the task type's target scaling, if any.

    Epoch 0 is the starting point (scored before any step), so a run that never beats it
    returns the starting weights and ``best_epoch == 0``.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(loop.groups or loop.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    deadline = time.monotonic() + 60 * cfg.max_train_minutes if cfg.max_train_minutes else None
    sched = plan = None
    if loop.warmup_fraction is not None and cfg.schedule == "linear":
        plan = _Schedule(steps * cfg.epochs, loop.warmup_fraction, deadline)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, plan.factor)
    task = training_task(cfg.task_type)
    stop = (BestHeadline(cfg.patience, task.headline_name) if cfg.select == "headline"
            else KeepLast() if cfg.select == "last" else EarlyStopping(cfg.patience))
    progress = Progress(desc, cfg.epochs, task.headline_name, cfg.progress)
    hist = History()
    loop.set_train(False)
    loss0, head0 = _val_loss(loop, backbone, val, pooling, cfg.feature_batch_size, task, scaling)
    stop.step(0, loss0, loop.state(), head0)
    y_all = task.targets(train, scaling)
    if plan is not None:
        plan.begin()
    for epoch in range(1, cfg.epochs + 1):
        loop.set_train(True)
        order = torch.randperm(len(train), generator=gen).tolist()
        total = 0.0
        with progress.epoch(epoch, steps) as bar:
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                feats = encode(loop.model, backbone, [train.inputs[i] for i in idx], pooling)
                loss = task.loss(loop.head(feats), y_all[idx].to(feats.device))
                opt.zero_grad()
                loss.backward()
                if cfg.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(loop.params, cfg.clip_norm)
                opt.step()
                if sched is not None:
                    plan.stepped()
                    sched.step()
                total += float(loss.detach()) * len(idx)
                bar.step(float(loss.detach()))
                if deadline is not None and time.monotonic() > deadline:
                    break  # an epoch of a full trunk can outlast the budget: stop mid-epoch
                if plan is not None and plan.finished:
                    break  # the schedule, shrunk to the budget, reached lr 0
        loop.set_train(False)
        val_loss, val_acc = _val_loss(loop, backbone, val, pooling, cfg.feature_batch_size, task, scaling)
        seen = min(len(order), start + cfg.batch_size)  # rows this (maybe cut) epoch trained on
        hist.train_loss.append(total / seen)
        hist.rows_seen += seen
        hist.val_loss.append(val_loss)
        hist.val_accuracy.append(val_acc)
        progress.epoch_done(epoch, total / seen, val_loss, val_acc)
        if stop.step(epoch, val_loss, loop.state(), val_acc):
            hist.stopped_early = True
            break
        if (deadline is not None and time.monotonic() > deadline) or (plan is not None and plan.finished):
            hist.stopped_early = hist.time_capped = epoch < cfg.epochs or seen < len(order)
            break
    loop.load(stop.state)
    loop.set_train(False)
    hist.best_epoch, hist.kept_by = stop.best_epoch, stop.rule
    progress.kept(hist.best_epoch, len(hist.train_loss), hist.kept_by)
    return hist
